"""bench/gpu_check.py: the skip path and the table on CPU; the whole check where CUDA exists."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
torch = pytest.importorskip("torch")


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, ROOT / "bench" / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def gpu_check() -> ModuleType:
    return _load("gpu_check")


@pytest.mark.skipif(torch.cuda.is_available(), reason="the skip path is for machines without CUDA")
def test_without_cuda_the_script_skips_cleanly(tmp_path: Path) -> None:
    proc = subprocess.run([str(ROOT / "scripts" / "gpu-check"), str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines() == ["gpu-check: skipped: no CUDA GPU (torch.cuda.is_available() is False)"]
    assert json.loads((tmp_path / "out" / "gpu_check.json").read_text()) == {"skipped": "no CUDA GPU (torch.cuda.is_available() is False)"}
    assert not (tmp_path / "out" / "home").exists()  # nothing built, nothing run


def test_table_has_the_issues_columns_and_marks_estimates(gpu_check: ModuleType) -> None:
    rows = [
        gpu_check.Row(stage="climbmix", model="reference", steps=120, tokens_per_second=1.5e6, mfu_percent=41.25, peak_vram_mib=40123.4,
                      compile_seconds=35.2, val_bpb=1.23456, isolation="sandbox", wall_seconds=99.0),
        gpu_check.Row(stage="climbmix", model="upstream-sdpa", outcome="oom", mfu_percent=20.0, mfu_estimated=True, note="CUDA OOM"),
    ]  # fmt: skip
    text = gpu_check.table(rows)
    header, _, first, second = text.splitlines()[:4]
    for column in ("steps", "tokens/s", "MFU %", "peak VRAM MiB", "compile s", "val_bpb", "outcome"):
        assert column in header
    assert "| 120 | 1500000 | 41.2 | 40123 | 35.2 | 1.2346 | sandbox |" in first
    assert "| oom |" in second and "20.0* |" in second and "- climbmix (upstream-sdpa): CUDA OOM" in text
    assert gpu_check._comparison(rows) == {}  # the baseline failed: nothing to compare with
    ok = gpu_check.Row(stage="climbmix", model="upstream-sdpa", tokens_per_second=1.0e6, val_bpb=1.25)
    cmp = gpu_check._comparison([rows[0], ok])
    assert cmp["tokens_per_second_ratio"] == pytest.approx(1.5) and cmp["val_bpb_delta"] == pytest.approx(-0.01544)


def test_compile_seconds_run_from_the_train_phase_to_the_first_step(gpu_check: ModuleType) -> None:
    assert gpu_check.compile_seconds({"train": 10.0}, 42.5) == 32.5
    assert gpu_check.compile_seconds({}, 42.5) is None and gpu_check.compile_seconds({"train": 1.0}, None) is None


@pytest.mark.gpu
@pytest.mark.slow
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_the_whole_check_passes_on_this_gpu(tmp_path: Path) -> None:
    proc = subprocess.run([str(ROOT / "scripts" / "gpu-check"), str(tmp_path / "out"), "--budget", "15", "--eval-rows", "8"],
                          capture_output=True, text=True, timeout=900)  # fmt: skip
    summary = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    failed = [(r["stage"], r["model"], r["outcome"], r["note"]) for r in summary["rows"] if r["outcome"] != "ok"]
    assert proc.returncode == 0 and not failed, (failed, proc.stderr[-3000:])
    assert summary["comparison"]["tokens_per_second_ratio"] > 0
