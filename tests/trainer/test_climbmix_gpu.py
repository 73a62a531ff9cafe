"""climbmix on a real CUDA GPU (skipped elsewhere): prepared data if present, else the offline cache."""

from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np
import pytest

from autoresearch.protocol import TrackSpec
from autoresearch.trainer import climbmix, data, tracks
from autoresearch.trainer.data import DataError
from autoresearch.trainer.run import run_training

torch = pytest.importorskip("torch")

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.slow,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


def test_climbmix_reference_runs_briefly_on_the_gpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    base = tracks.get_track("climbmix").model_dump(mode="json")
    track = TrackSpec.build(**{**base, "time_budget": 30.0, "eval_tokens": 16 * 2048})
    try:
        corpus = climbmix.load_climbmix(track)
    except DataError:  # not prepared here (no internet on GPU test machines): upstream's layout, offline
        monkeypatch.setenv("HOME", str(tmp_path / "home"))
        monkeypatch.setenv("AUTORESEARCH_CACHE", str(tmp_path / "cache"))
        climbmix.build_offline_cache(tmp_path / "home" / ".cache" / "autoresearch")
        corpus = climbmix.load_climbmix(track)
    rows = data.eval_rows(corpus, track.max_seq_len, track.eval_tokens)
    targets = rows[:, 1:].ravel()
    p = np.bincount(targets, minlength=corpus.vocab_size) / targets.size
    unigram = float(-(p[p > 0] * np.log2(p[p > 0])).sum() * targets.size / corpus.token_bytes[targets].sum())
    train_py = tmp_path / "train.py"
    train_py.write_text(tracks.reference_source(track))
    trusted = {"allow_unsandboxed": True} if "allow_unsandboxed" in inspect.signature(run_training).parameters else {}
    result = run_training(train_py, track, tmp_path / "run", **trusted)  # our own reference
    assert result.outcome == "ok", result.error
    assert result.metrics.val_bpb is not None and result.metrics.val_bpb < unigram - 0.2, (result.metrics.val_bpb, unigram)
    assert result.metrics.peak_vram_mib and result.metrics.peak_vram_mib > 0
    assert result.metrics.mfu_percent and 0 < result.metrics.mfu_percent < 100
    assert result.hardware_class and not result.hardware_class.startswith("cpu:")
