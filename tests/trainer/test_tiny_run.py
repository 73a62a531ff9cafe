"""The real thing on CPU: the tiny track's reference train.py learns within its budget."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from autoresearch.trainer import data, tracks
from autoresearch.trainer.run import run_training

pytestmark = pytest.mark.slow

CLI = str(Path(sys.executable).with_name("autoresearch"))  # the installed console script


def _unigram_bits_per_byte(track_name: str) -> float:
    """Entropy of the val split's byte distribution: what a model that learned no context can reach."""
    corpus = data.load_corpus(tracks.get_track(track_name))
    tokens = np.concatenate(corpus.val_docs)
    tokens = tokens[corpus.token_bytes[tokens] > 0]
    p = np.bincount(tokens) / len(tokens)
    p = p[p > 0]
    return float(-(p * np.log2(p)).sum())  # one byte per token on this track


def test_tiny_reference_learns_context_within_its_budget(tmp_path: Path) -> None:
    track = tracks.get_track("tiny")
    limits = tracks.limits(track)
    train_py = tmp_path / "train.py"
    train_py.write_text(tracks.reference_source(track))
    result = run_training(train_py, track, tmp_path / "run")
    assert result.outcome == "ok", result.error
    m = result.metrics
    baseline = _unigram_bits_per_byte("tiny")
    assert 4.0 < baseline < 5.5
    assert m.val_bpb is not None and m.val_bpb < baseline - 0.15, (m.val_bpb, baseline)
    assert m.training_seconds is not None
    upper = track.time_budget * (1 + limits.budget_tolerance) + limits.budget_slack_seconds
    assert 0.75 * track.time_budget <= m.training_seconds <= upper  # should_stop() may end half a step early
    assert m.depth == 2 and m.num_params and m.num_steps and m.mfu_percent is not None
    assert not result.mfu_estimated  # against the matmul peak measured on this CPU (hardware.measured_cpu_peak)
    assert result.train_py_sha256 == track.reference_sha256 and result.track == track.id
    assert result.hardware_class and result.hardware_class.startswith("cpu:")


def test_cli_train_prints_the_summary_block_and_writes_json(tmp_path: Path) -> None:
    """``--run-dir runs/1`` relative to the working directory, as the docs write it."""
    out = tmp_path / "result.json"
    proc = subprocess.run(
        [CLI, "train", "--track", "tiny", "--time-budget", "2",
         "--json", str(out), "--run-dir", "runs/1"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "---"
    keys = [line.split(":")[0] for line in lines[1:]]
    assert keys[:9] == ["val_bpb", "training_seconds", "total_seconds", "peak_vram_mb", "mfu_percent",
                        "total_tokens_M", "num_steps", "num_params_M", "depth"]  # fmt: skip
    assert "startup_seconds" in keys and "eval_seconds" in keys
    assert '"outcome": "ok"' in out.read_text()
    assert (tmp_path / "runs" / "1" / "run.log").is_file()
    assert tracks.get_track("tiny", time_budget=2).id in proc.stderr  # the derived track is named


def test_cli_train_reports_a_failed_run_with_exit_status_1(tmp_path: Path) -> None:
    bad = tmp_path / "train.py"
    bad.write_text("def train(h):\n    raise RuntimeError('nope')\n")
    proc = subprocess.run(
        [CLI, "train", str(bad), "--track", "tiny", "--run-dir", str(tmp_path / "run")],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 1
    assert "outcome:          crash" in proc.stdout and "val_bpb:          nan" in proc.stdout
    assert "outcome crash: RuntimeError: nope" in proc.stderr and "run.log" in proc.stderr


def test_cli_prepare_checks_the_offline_corpus(tmp_path: Path) -> None:
    proc = subprocess.run([CLI, "prepare", "--track", "cpu"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "offline corpus ok" in proc.stdout and tracks.get_track("cpu").id in proc.stdout
