"""Three-way combine of two kept experiments: clean merges parse and pass policy; overlaps refuse."""

from __future__ import annotations

import ast

import pytest

from autoresearch.hub.combine import CombineRefused, combine_sources
from autoresearch.protocol.source import MergeConflict, extract_directions, merge_three_way
from autoresearch.trainer.policy import check_source

try:  # tests/hub is a package in some layouts and a rootdir on sys.path in others
    from .test_directions import PARENT, edit
except ImportError:
    from test_directions import PARENT, edit  # type: ignore[no-redef]


def test_adjacent_constants_merge() -> None:
    left = edit("MATRIX_LR = 0.04 ", "MATRIX_LR = 0.05 ")
    right = edit("EMBEDDING_LR = 0.6", "EMBEDDING_LR = 0.4")  # the very next line
    combined = combine_sources(PARENT, left, right)
    assert combined.directions == ["EMBEDDING_LR ↓", "MATRIX_LR ↑"]
    assert "MATRIX_LR = 0.05 " in combined.train_py and "EMBEDDING_LR = 0.4" in combined.train_py
    ast.parse(combined.train_py)
    assert check_source(combined.train_py) == []


def test_method_and_function_merge() -> None:
    left = edit("F.relu(x).square()", "F.gelu(x)")
    right = edit(
        "return (1.0 - progress) / WARMDOWN_RATIO",
        "return max(0.05, (1.0 - progress) / WARMDOWN_RATIO)",
    )
    combined = combine_sources(PARENT, left, right)
    assert combined.directions == ["MLP.forward", "get_lr_multiplier"]
    assert extract_directions(left, combined.train_py) == ["get_lr_multiplier"]
    assert extract_directions(right, combined.train_py) == ["MLP.forward"]


def test_new_constant_next_to_changed_one_merges() -> None:
    left = edit("WEIGHT_DECAY = 0.0\n", "WEIGHT_DECAY = 0.1\n")
    right = edit("WEIGHT_DECAY = 0.0\n", "WEIGHT_DECAY = 0.0\nLABEL_SMOOTHING = 0.1\n")
    combined = combine_sources(PARENT, left, right)
    assert combined.directions == ["LABEL_SMOOTHING", "WEIGHT_DECAY ↑"]
    assert "WEIGHT_DECAY = 0.1\nLABEL_SMOOTHING = 0.1\n" in combined.train_py


@pytest.mark.parametrize(
    ("left", "right", "reason"),
    [
        (
            edit("MATRIX_LR = 0.04 ", "MATRIX_LR = 0.05 "),
            edit("MATRIX_LR = 0.04 ", "MATRIX_LR = 0.03 "),
            "overlap",
        ),
        (
            edit("F.relu(x).square()", "F.gelu(x)"),
            edit("class MLP(nn.Module):", "class MLP(nn.Module):\n    expansion = 4"),
            "overlap",
        ),
        (edit("if step >= 100:", "if step >= 200:"), edit("step += 1", "step += 2"), "overlap"),
        (edit("SEED = 42", "SEED = 1"), edit("DEPTH = 4 ", "DEPTH = 5 "), "seed_only"),
        (edit("# Hyperparameters", "# Hparams"), edit("DEPTH = 4 ", "DEPTH = 5 "), "no_change"),
        (
            edit("DEPTH = 4 ", "DEPTH = 5 ", edit("import math\n", "import math\nimport socket\n")),
            edit("HEAD_DIM = 64", "HEAD_DIM = 32"),
            "policy",
        ),
    ],
    ids=[
        "same-constant",
        "class-and-its-method",
        "training-loop-twice",
        "seed",
        "comment-only",
        "policy",
    ],
)
def test_refused(left: str, right: str, reason: str) -> None:
    with pytest.raises(CombineRefused) as info:
        combine_sources(PARENT, left, right)
    assert info.value.reason == reason


def test_same_point_insertions_conflict() -> None:
    left = edit("SEED = 42\n", "SEED = 42\nA_NEW = 1\n")
    right = edit("SEED = 42\n", "SEED = 42\nB_NEW = 2\n")
    with pytest.raises(MergeConflict) as info:
        merge_three_way(PARENT, left, right)
    assert info.value.reason == "conflict"


def test_identical_edits_merge_once() -> None:
    both = edit("DEPTH = 4 ", "DEPTH = 8 ")
    assert merge_three_way(PARENT, both, both) == both
