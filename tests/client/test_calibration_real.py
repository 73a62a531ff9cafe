"""A real calibration on the ``tiny`` track: real harness runs on CPU at short budgets, through the
CLI, signed, verified by ``autoresearch verify``, cached and reused.

The calibrated ``train.py`` is a bigram model given with ``--reference`` rather than the track's GPT
reference: on a shared 2-core machine the GPT sits on the byte-unigram plateau (≈ 4 bits per byte)
for its first ~10 s, so at budgets of seconds its curve is flat plus noise and the fit is rightly
refused. The bigram, annealed to LR 0 at the end of every budget, improves with every second, which
is what this test needs: everything else (derived tracks, the harness subprocess, σ, fit, signing,
cache) is the production path.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import pytest

from autoresearch.client import calibration
from autoresearch.protocol import CalibrationRecord, canonical_json, record_id, sha256_hex

TIME_BUDGET = 2.0  # seconds: runs at 0.5, 1, 2, 2 and 4 s

BIGRAM = '''"""A bigram model: learns fast and steadily, so its val_bpb falls with every second of training."""

import torch
import torch.nn as nn
import torch.nn.functional as F

LR = 0.005  # Adam learning rate, decayed linearly to 0 over the budget: low enough that 4 s stays far above
# the bigram plateau (≈ 3.7 bits per byte, reached by 2 s at LR 0.02 on an idle machine, where the fit is rightly refused)
BATCH = 8  # rows per step
SEED = 0


class Bigram(nn.Module):
    def __init__(self, vocab_size):
        super().__init__()
        self.table = nn.Embedding(vocab_size, vocab_size)
        nn.init.zeros_(self.table.weight)

    def forward(self, idx):
        return self.table(idx)  # (B, T, V)


def train(h):
    torch.manual_seed(SEED + h.seed)
    model = Bigram(h.vocab_size).to(h.device)
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    step = 0
    while not h.should_stop():
        x, y = h.next_batch(BATCH)  # (B, T) each
        loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
        for group in opt.param_groups:
            group["lr"] = LR * max(0.0, 1.0 - h.progress())  # annealed: every budget ends converged
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        h.report(step, loss.item())
    return model
'''


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).parent / "autoresearch"
    return subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=600)


def _run_logs(root: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in root.rglob("run.log")}


@pytest.mark.slow
def test_real_tiny_calibration_is_signed_verified_and_cached(clean_env: Path, tmp_path: Path) -> None:
    from autoresearch.trainer import tracks

    spec = tracks.derive(tracks.get_track("tiny"), time_budget=TIME_BUDGET)
    reference = tmp_path / "bigram.py"
    reference.write_text(BIGRAM)
    # --seeds 2: this test is about signing, verifying and caching; 2 seeds keep it to 5 runs
    args = ("calibrate", "--track", "tiny", "--time-budget", f"{TIME_BUDGET:g}", "--seeds", "2", "--reference", str(reference), "--json")
    first = _cli(*args)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "5 reference runs" in first.stderr and "this takes about" in first.stderr
    # not a TTY: each run is one plain line as it starts, no escape codes
    assert [line.split("calibration run ", 1)[1][:3] for line in first.stderr.splitlines() if "calibration run " in line] == [
        "1/5", "2/5", "3/5", "4/5", "5/5"]  # fmt: skip
    assert "\x1b[" not in first.stderr
    data = json.loads(first.stdout)
    record = CalibrationRecord.model_validate(data["record"], strict=False)
    assert data["id"] == record_id(record)

    assert record.track == spec.id
    assert record.hardware_class == calibration.machine_hardware_class(spec)
    assert sorted(p.budget_seconds for p in record.points) == [0.5, 1.0, 2.0, 2.0, 4.0]
    assert sorted(p.seed for p in record.points if p.budget_seconds == 2.0) == [0, 1]
    assert (record.min_budget_seconds, record.max_budget_seconds) == (0.5, 4.0)
    assert record.reference_sha256 == sha256_hex(BIGRAM) and record.reference_ecm == 1.0
    assert record.fit.a > 0 and record.fit.b > 0 and record.fit.c >= 0
    assert record.tokens_per_second > 0 and record.matmul_tflops > 0
    full = [p.val_bpb for p in record.points if p.budget_seconds == 2.0]
    assert record.sigma == pytest.approx(abs(full[0] - full[1]) / 2**0.5)
    value, _ = calibration.ecm(record, sum(full) / 2)
    assert value is not None and value > 0

    # the cache file is a DSSE envelope that the CLI's verify accepts
    cached = calibration.cache_path(spec, record.hardware_class)
    verified = _cli("verify", str(cached))
    assert verified.returncode == 0, verified.stderr
    assert "valid autoresearch/calibration/v1" in verified.stdout
    assert f"record id: {record_id(record)}" in verified.stdout
    # …and a tampered copy is refused
    env = json.loads(cached.read_text())
    payload = json.loads(base64.b64decode(env["payload"]))
    payload["sigma"] = payload["sigma"] + 1.0  # claim more seed noise than was measured
    env["payload"] = base64.b64encode(canonical_json(payload)).decode()
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(env))
    refused = _cli("verify", str(bad))
    assert refused.returncode == 1 and "bad_signature" in refused.stderr

    # a second call reuses the cache: same record, no new runs
    logs = _run_logs(calibration.cache_dir() / "runs")
    assert len(logs) == 5
    second = _cli(*args)
    assert second.returncode == 0, second.stderr
    assert "using the cached calibration" in second.stderr
    assert json.loads(second.stdout)["id"] == record_id(record)
    assert _run_logs(calibration.cache_dir() / "runs") == logs
    assert calibration.load_cached(spec) == record
