"""bench/upstream_sdpa_train.py (upstream's train.py with SDPA for FA3) is the reference's model.

With the same weights, the GPU check's baseline and the reference ``train.py`` give the same logits
on CPU in float32, for every window pattern: the two files differ in attention kernels and code
layout, not in the function they compute.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

torch = pytest.importorskip("torch")
ROOT = Path(__file__).resolve().parents[2]


def _load(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("pattern", ["L", "SSSL", "SL"])
def test_same_weights_same_logits_as_the_reference(pattern: str) -> None:
    up = _load(ROOT / "bench" / "upstream_sdpa_train.py", "upstream_sdpa_train")
    rt = _load(ROOT / "trainer" / "reference_train.py", "reference_train_for_upstream_test")
    T, V = 64, 300
    torch.manual_seed(0)
    theirs = up.GPT(up.GPTConfig(sequence_len=T, vocab_size=V, n_layer=4, n_head=2, n_kv_head=2, n_embd=64, window_pattern=pattern))
    theirs.init_weights()  # as upstream: bf16 embeddings and rotary tables …
    theirs.float()  # … back to float32 for an exact CPU comparison
    with torch.no_grad():
        for p in theirs.parameters():
            p.add_(0.05 * torch.randn_like(p))  # leave the init: zero projections would hide the attention
    ours = rt.GPT(rt.GPTConfig(sequence_len=T, vocab_size=V, n_layer=4, n_head=2, n_embd=64, window_pattern=pattern))
    state = {k.replace("transformer.h.", "blocks.").replace("transformer.wte.", "wte."): v for k, v in theirs.state_dict().items()}
    ours.load_state_dict(state, strict=True)
    theirs.cos, theirs.sin = ours.cos[None, :, None, :], ours.sin[None, :, None, :]  # float32 tables, upstream's layout
    assert [w for w, _ in theirs.window_sizes] == ours.windows
    assert theirs.estimate_flops() == ours.estimate_flops()
    idx = torch.randint(0, V, (3, T))
    with torch.no_grad():
        torch.testing.assert_close(ours(idx), theirs(idx), atol=2e-5, rtol=1e-5)
    sys.modules.pop("upstream_sdpa_train", None)
