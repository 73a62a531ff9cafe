"""Direction extraction on a table of real-looking diffs of an upstream-style ``train.py``."""

from __future__ import annotations

import pytest

from autoresearch.protocol.errors import SchemaError
from autoresearch.protocol.source import (
    changed_constants,
    extract_directions,
    is_seed_only,
    near_duplicate_constants,
    possible_directions,
)

PARENT = '''"""Pretrain a small GPT. The one file the agent edits."""
import math
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

# ---------------------------------------------------------------------------
# Hyperparameters
DEPTH = 4                   # number of transformer blocks
ASPECT_RATIO = 64           # model_dim = depth * aspect ratio
HEAD_DIM = 64
TOTAL_BATCH_SIZE = 2**15    # tokens per optimizer step
MATRIX_LR = 0.04            # Muon learning rate
EMBEDDING_LR = 0.6
WEIGHT_DECAY = 0.0
ADAM_BETAS = (0.8, 0.95)
WARMDOWN_RATIO = 0.5
WINDOW_PATTERN = "SSSL"
SEED = 42
MODEL_DIM = DEPTH * ASPECT_RATIO


class MLP(nn.Module):
    """ReLU squared MLP."""

    def __init__(self, dim):
        super().__init__()
        self.c_fc = nn.Linear(dim, 4 * dim, bias=False)
        self.c_proj = nn.Linear(4 * dim, dim, bias=False)

    def forward(self, x):
        x = self.c_fc(x)
        x = F.relu(x).square()
        return self.c_proj(x)


def get_lr_multiplier(progress):
    """Trapezoidal schedule."""
    if progress < 1.0 - WARMDOWN_RATIO:
        return 1.0
    return (1.0 - progress) / WARMDOWN_RATIO


torch.manual_seed(SEED)
model = MLP(MODEL_DIM)
t_start = time.time()
step = 0
while True:
    lrm = get_lr_multiplier(min(step / 100, 1.0))
    step += 1
    if step >= 100:
        break
'''


def edit(old: str, new: str, source: str = PARENT) -> str:
    assert old in source, old
    return source.replace(old, new, 1)


CASES = [
    ("constant up", edit("MATRIX_LR = 0.04 ", "MATRIX_LR = 0.05 "), ["MATRIX_LR ↑"]),
    ("constant down", edit("EMBEDDING_LR = 0.6", "EMBEDDING_LR = 0.3"), ["EMBEDDING_LR ↓"]),
    ("power expression up", edit("2**15", "2**16"), ["TOTAL_BATCH_SIZE ↑"]),
    ("same value rewritten", edit("2**15", "32768"), []),
    ("negative sign", edit("WEIGHT_DECAY = 0.0", "WEIGHT_DECAY = -0.01"), ["WEIGHT_DECAY ↓"]),
    (
        "two constants",
        edit("DEPTH = 4 ", "DEPTH = 6 ", edit("HEAD_DIM = 64", "HEAD_DIM = 32")),
        ["DEPTH ↑", "HEAD_DIM ↓"],
    ),
    ("tuple constant", edit("(0.8, 0.95)", "(0.9, 0.95)"), ["ADAM_BETAS"]),
    ("string constant", edit('"SSSL"', '"SSLL"'), ["WINDOW_PATTERN"]),
    (
        "derived constant formula",
        edit("MODEL_DIM = DEPTH * ASPECT_RATIO", "MODEL_DIM = DEPTH * ASPECT_RATIO * 2"),
        ["MODEL_DIM ↑"],
    ),
    ("method body", edit("F.relu(x).square()", "F.gelu(x)"), ["MLP.forward"]),
    (
        "function body",
        edit(
            "return (1.0 - progress) / WARMDOWN_RATIO",
            "return 0.1 + 0.9 * (1.0 - progress) / WARMDOWN_RATIO",
        ),
        ["get_lr_multiplier"],
    ),
    (
        "new class",
        edit(
            "\n\ndef get_lr_multiplier",
            "\n\nclass RMSNorm(nn.Module):\n    def forward(self, x):\n        return F.rms_norm(x, (x.size(-1),))\n\n\ndef get_lr_multiplier",
        ),
        ["RMSNorm"],
    ),
    (
        "new method",
        edit(
            "    def forward(self, x):\n        x = self.c_fc",
            "    def extra_repr(self):\n        return 'mlp'\n\n    def forward(self, x):\n        x = self.c_fc",
        ),
        ["MLP.extra_repr"],
    ),
    ("new import", edit("import math\n", "import math\nimport random\n"), ["random"]),
    ("training loop", edit("if step >= 100:", "if step >= 200:"), ["<module>"]),
    ("comment only", edit("# Hyperparameters", "# Hyperparameters (tuned)"), []),
    (
        "formatting only",
        edit("MATRIX_LR = 0.04            # Muon learning rate", "MATRIX_LR=0.040"),
        [],
    ),
    ("docstring only", edit('"""ReLU squared MLP."""', '"""An MLP with a squared ReLU."""'), []),
    ("seed constant only", edit("SEED = 42", "SEED = 7"), ["seed"]),
    ("seed call only", edit("torch.manual_seed(SEED)", "torch.manual_seed(123)"), ["seed"]),
    (
        "seed and constant",
        edit("SEED = 42", "SEED = 7", edit("MATRIX_LR = 0.04 ", "MATRIX_LR = 0.03 ")),
        ["MATRIX_LR ↓", "seed"],
    ),
    ("identical", PARENT, []),
]


@pytest.mark.parametrize(("name", "child", "expected"), CASES, ids=[c[0] for c in CASES])
def test_extract_directions(name: str, child: str, expected: list[str]) -> None:
    assert extract_directions(PARENT, child) == expected


def test_seed_only_is_flagged() -> None:
    assert is_seed_only(extract_directions(PARENT, edit("SEED = 42", "SEED = 0")))
    assert not is_seed_only(
        extract_directions(PARENT, edit("SEED = 42", "SEED = 0", edit("DEPTH = 4 ", "DEPTH = 5 ")))
    )


def test_unparsable_source_raises_schema_error() -> None:
    with pytest.raises(SchemaError, match="child train.py does not parse: line 1") as info:
        extract_directions(PARENT, "def (:\n")
    assert info.value.reason == "unparsable_source"


def test_changed_constants_values() -> None:
    child = edit(
        "MATRIX_LR = 0.04 ", "MATRIX_LR = 0.05 ", edit('"SSSL"', '"SSLL"', edit("2**15", "32768"))
    )
    assert changed_constants(PARENT, child) == {
        "MATRIX_LR": (0.04, 0.05),
        "WINDOW_PATTERN": ("SSSL", "SSLL"),
    }
    added = changed_constants(PARENT, edit("SEED = 42\n", "SEED = 42\nLABEL_SMOOTHING = 0.1\n"))
    assert added == {"LABEL_SMOOTHING": (None, 0.1)}


def test_near_duplicate_constants() -> None:
    a = changed_constants(PARENT, edit("MATRIX_LR = 0.04 ", "MATRIX_LR = 0.05 "))
    b = changed_constants(PARENT, edit("MATRIX_LR = 0.04 ", "MATRIX_LR = 0.0501 "))
    c = changed_constants(PARENT, edit("MATRIX_LR = 0.04 ", "MATRIX_LR = 0.06 "))
    d = changed_constants(PARENT, edit("EMBEDDING_LR = 0.6", "EMBEDDING_LR = 0.601"))
    assert near_duplicate_constants(a, b)
    assert not near_duplicate_constants(a, c)
    assert not near_duplicate_constants(a, d)
    assert not near_duplicate_constants({}, {})


def test_possible_directions_of_a_reference() -> None:
    keys = possible_directions(PARENT)
    assert keys[:4] == ["DEPTH ↑", "DEPTH ↓", "ASPECT_RATIO ↑", "ASPECT_RATIO ↓"]
    assert {
        "ADAM_BETAS",
        "WINDOW_PATTERN",
        "MLP.__init__",
        "MLP.forward",
        "get_lr_multiplier",
        "<module>",
    } <= set(keys)
    assert not {"torch", "math", "SEED ↑", "seed", "MLP", "model", "t_start", "step"} & set(keys)
