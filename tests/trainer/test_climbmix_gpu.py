"""climbmix on a real CUDA GPU with prepared data (skipped elsewhere)."""

from __future__ import annotations

from pathlib import Path

import pytest

from autoresearch.trainer import climbmix, tracks
from autoresearch.trainer.data import DataError
from autoresearch.trainer.run import run_training

torch = pytest.importorskip("torch")

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.slow,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


def test_climbmix_reference_runs_briefly_on_the_gpu(tmp_path: Path) -> None:
    track = tracks.get_track("climbmix", time_budget=30)
    try:
        climbmix.load_climbmix(track)
    except DataError as exc:  # not prepared on this machine
        pytest.skip(f"climbmix data not prepared: {exc}")
    train_py = tmp_path / "train.py"
    train_py.write_text(tracks.reference_source(track))
    result = run_training(train_py, track, tmp_path / "run")
    assert result.outcome == "ok", result.error
    assert result.metrics.val_bpb is not None and result.metrics.val_bpb < 2.0
    assert result.metrics.peak_vram_mib and result.metrics.peak_vram_mib > 0
    assert result.hardware_class and not result.hardware_class.startswith("cpu:")
