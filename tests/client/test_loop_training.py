"""The agent loop on the real harness (tiny track, CPU training): offline proposer, git state,
results.tsv, scrubbed environment, and SIGKILL + resume through the real `autoresearch run`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from autoresearch.client.loop import AgentLoop, LoopOptions
from autoresearch.client.proposers.offline import OfflineProposer
from autoresearch.client.results import read_results
from autoresearch.client.workspace import Workspace
from autoresearch.trainer import tracks

pytestmark = pytest.mark.slow

SECRETS = {
    "ANTHROPIC_API_KEY": "fake-anthropic-key-for-tests-123",
    "AUTORESEARCH_HUB_TOKEN": "hub-token-secret-456",
    "MY_SERVICE_PASSWORD": "password-secret-789",
}


def git(root: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, check=True).stdout.strip()


def test_offline_loop_three_experiments(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    reference = tracks.reference_source("tiny")
    leaky = reference.replace("import torch\n", "import torch\nimport os\n\nprint('ENV:', dict(os.environ))\n", 1)
    ws = Workspace.init(tmp_path / "ws", track="tiny", reference_source=leaky, program_md="p\n")
    loop = AgentLoop(ws, tracks.get_track("tiny"), OfflineProposer(seed=3), LoopOptions(tag="real", max_experiments=3))
    stats = loop.run()
    assert stats.runs == 3

    experiments = ws.experiments()
    records = [e.record for e in experiments if e.record is not None]
    assert len(records) == 3 and records[0].description == "baseline"
    assert records[0].outcome == "ok" and records[0].metrics.val_bpb is not None
    # git holds the baseline and only kept commits; discarded/crashed candidates are not in HEAD
    history = git(ws.root, "rev-list", "HEAD").splitlines()
    for exp in experiments[1:]:
        assert exp.record is not None and exp.commit is not None
        assert (exp.commit in history) == (exp.record.status == "keep"), exp.description
    last_keep = [e for e in experiments if e.record and e.record.status == "keep"][-1]
    assert ws.train_py.read_text() == ws.source_at(last_keep.commit)  # type: ignore[arg-type]
    assert git(ws.root, "status", "--porcelain") == ""
    # results.tsv rows match the recorded results
    rows = read_results(ws.results_tsv)
    assert [(r.commit, r.status, r.description) for r in rows] == [
        (e.commit[:7], e.record.status, e.record.description) for e in experiments  # type: ignore[index, union-attr]
    ]
    for row, record in zip(rows, records, strict=True):
        expected = record.metrics.val_bpb if record.status != "crash" else 0.0
        assert row.val_bpb == f"{expected:.6f}"
    # the training subprocess saw no secrets (the baseline printed its whole environment)
    log = (ws.runs_dir / "0001" / "run.log").read_text()
    assert "ENV:" in log
    for value in SECRETS.values():
        assert value not in log


def _start_run(ws: Path, home: Path, *args: str) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTORESEARCH_")}
    env.update(AUTORESEARCH_HOME=str(home), NO_COLOR="1")
    cmd = [sys.executable, "-c", "from autoresearch.client.cli import main; main()", "run", *args]
    return subprocess.Popen(cmd, cwd=ws, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def test_sigkill_mid_run_then_resume(tmp_path: Path, clean_env: Path) -> None:
    ws = Workspace.init(tmp_path / "ws", track="tiny", reference_source=tracks.reference_source("tiny"), program_md="p\n")
    proc = _start_run(ws.root, clean_env, "--proposer", "offline", "--max-experiments", "4", "--tag", "kill")
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline:  # wait until experiment 2 is training
            pending = ws.pending()
            if pending is not None and pending.number == 2 and (ws.runs_dir / "0002" / "run.log").exists():
                break
            assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
            time.sleep(0.2)
        else:
            pytest.fail("experiment 2 never started")
        time.sleep(1.0)  # mid-run
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert [e.number for e in ws.experiments()] == [1]
    killed = ws.pending()
    assert killed is not None and killed.number == 2

    resumed = _start_run(ws.root, clean_env, "--proposer", "offline", "--max-experiments", "2", "--tag", "kill")
    out, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, out.decode()
    experiments = ws.experiments()
    assert [e.number for e in experiments] == [1, 2, 3]
    assert ws.pending() is None
    rows = read_results(ws.results_tsv)
    assert [r.description for r in rows] == [e.description for e in experiments]
    assert experiments[1].description == killed.description  # the killed candidate, re-run under its number
    assert experiments[1].run_dir == ".autoresearch/runs/0002-2"
    assert git(ws.root, "status", "--porcelain") == ""


def test_ctrl_c_stops_after_recording_the_current_run(tmp_path: Path, clean_env: Path) -> None:
    ws = Workspace.init(tmp_path / "ws", track="tiny", reference_source=tracks.reference_source("tiny"), program_md="p\n")
    proc = _start_run(ws.root, clean_env, "--proposer", "offline", "--max-experiments", "5", "--tag", "int")
    try:
        deadline = time.monotonic() + 240
        while not (ws.runs_dir / "0001" / "run.log").exists():
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.2)
        time.sleep(1.0)
        proc.send_signal(signal.SIGINT)  # one Ctrl-C: finish and record this run, then stop
        out, _ = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = out.decode()
    assert proc.returncode == 0, text
    assert "stopping after this experiment is recorded" in text
    assert [e.number for e in ws.experiments()] == [1]
    assert ws.pending() is None
    assert len(read_results(ws.results_tsv)) == 1
