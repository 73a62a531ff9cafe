"""Every file of the hostile corpus (tests/security/hostile_corpus.py) through the real harness and
sandbox, on the tiny track: what each attack may do and what it must not.

The runs go straight to :func:`run_training` (past the static policy, which is a first filter and not
the boundary). Around them the test holds what an attacker wants: a secret in the environment, a
private key file, a home with an SSH key, a git workspace, a loopback listener; afterwards it checks
each one from the host side. Runs go two at a time (the budget is CPU time, so parallel runs do not
change what each one measures).
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from autoresearch.protocol import KeyPair
from autoresearch.trainer import sandbox, tracks
from autoresearch.trainer.result import RunResult
from autoresearch.trainer.run import run_training

from .hostile_corpus import CASES, Case

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(1800),  # the module fixture runs the whole corpus (docs/security.md has the time)
    pytest.mark.skipif(sandbox.detect().isolation != "sandbox", reason="no sandbox on this machine (autoresearch doctor)"),
]

TRACK = tracks.get_track("tiny", time_budget=1.0)
# The floor a harmless case is held to: the honest reference given twice the budget, less a slack for
# float noise. Tokens per CPU-second vary with what shares the cores (CI runs saw 29 to 42 steps in
# the same 1 s, worth 0.15 bpb this early in training), so the same 1 s budget is no floor; twice
# the steps is, and a fake (0.01, or a clock that never runs out) still lands far below it.
FLOOR_TRACK = tracks.get_track("tiny", time_budget=2.0)
HONEST_SLACK = 0.05  # bits per byte


def _insert(case: Case, fill: dict[str, str]) -> str:
    src = tracks.reference_source(TRACK)

    def fmt(code: str, indent: str) -> str:
        return "".join(indent + line + "\n" for line in code.format(**fill).splitlines())

    anchor = "import torch.nn.functional as F\n"
    src = src.replace(anchor, anchor + fmt(case.top, ""), 1)
    src = src.replace("def train(h):\n", "def train(h):\n" + fmt(case.train, "    "), 1)
    head, tail = src.rsplit("    return model\n", 1)
    return head + fmt(case.ret, "    ") + "    return model\n" + tail


@dataclass
class World:
    root: Path
    home: Path
    workspace: Path
    key: Path
    secret: str
    marker: str
    listener: socket.socket
    before: dict[str, str]
    results: dict[str, RunResult]
    honest: RunResult
    floor: RunResult


def _snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    # Not under /tmp: inside the sandbox /tmp is a private tmpfs, where an attack could create the
    # "workspace" path afresh and think it had written to it. /var/tmp is not mounted there at all.
    root = Path(tempfile.mkdtemp(prefix="ar-hostile-", dir="/var/tmp"))
    home = root / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "id_ed25519").write_text("-----BEGIN OPENSSH PRIVATE KEY----- fake")
    key = home / ".config" / "autoresearch" / "keys" / "ed25519.pem"
    KeyPair.generate().save(key)
    workspace = root / "workspace"
    workspace.mkdir()
    (workspace / "train.py").write_text(tracks.reference_source(TRACK))
    (workspace / "results.tsv").write_text("commit\tval_bpb\tmemory_gb\tstatus\tdescription\n")
    subprocess.run(["git", "init", "-q", str(workspace)], check=True)
    secret = "sk-hostile-" + secrets.token_hex(12)
    marker = "armarker" + secrets.token_hex(6)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.setblocking(False)
    saved = {k: os.environ.get(k) for k in ("HOME", "ANTHROPIC_API_KEY", "MY_HUB_TOKEN")}
    os.environ.update(HOME=str(home), ANTHROPIC_API_KEY=secret, MY_HUB_TOKEN=secret)
    before = _snapshot(workspace)

    def run(item: Case | str) -> tuple[str, RunResult]:
        case = item if isinstance(item, Case) else None
        name = case.name if case else str(item)
        track = FLOOR_TRACK if name == "floor" else TRACK
        folder = root / "runs" / name
        folder.mkdir(parents=True)
        fill = dict(SECRET=secret, KEY=str(key), WORKSPACE=str(workspace), RUN_DIR=str(folder / "run"), HOME=str(home),
                    PORT=str(listener.getsockname()[1]), MARKER=marker)  # fmt: skip
        source = tracks.reference_source(TRACK) if case is None else _insert(case, fill)
        (folder / "train.py").write_text(source)
        return name, run_training(folder / "train.py", track, folder / "run", extra_env={"OMP_NUM_THREADS": "1"})

    try:
        with ThreadPoolExecutor(2) as pool:
            done = dict(pool.map(run, ["honest", "floor", *CASES]))
        yield World(root, home, workspace, key, secret, marker, listener, before, done, done.pop("honest"), done.pop("floor"))
    finally:
        listener.close()
        shutil.rmtree(root, ignore_errors=True)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def test_the_honest_reference_runs_ok(world: World) -> None:
    for run in (world.honest, world.floor):
        assert run.outcome == "ok" and run.isolation == "sandbox", run.error
        assert run.probes > 0
    assert world.floor.metrics.val_bpb < world.honest.metrics.val_bpb  # type: ignore[operator]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_case(world: World, case: Case) -> None:
    result = world.results[case.name]
    log = result.log_path.read_text(errors="replace")
    assert result.isolation == "sandbox"
    # nothing it tried worked from the inside …
    assert "PWNED" not in log, f"{case.name}: the attack reports success:\n{log[-3000:]}"
    assert world.secret not in log and world.secret not in (result.error or "")
    assert str(world.key) not in (result.error or "") and str(world.home) not in (result.error or "")
    if case.expect == "rejected":
        assert result.outcome == "rejected" and "probe" in (result.error or ""), (result.outcome, result.error)
    elif case.expect == "honest" and result.outcome == "ok":
        floor = world.floor.metrics
        assert result.metrics.val_bpb is not None and floor.val_bpb is not None
        assert result.metrics.val_bpb >= floor.val_bpb - HONEST_SLACK, (case.name, result.metrics, floor)
        assert result.metrics.training_seconds is not None and result.metrics.training_seconds <= TRACK.time_budget * 1.05 + 1.0
    # … and the one summary block at the start of a line is the harness's own
    blocks = [line for line in log.splitlines() if line.startswith("val_bpb:")]
    assert len(blocks) == 1 and f"\noutcome:          {result.outcome}\n" in log
    assert "\nval_bpb:          0.010000" not in log


def test_nothing_reached_the_host(world: World) -> None:
    """After every case: the workspace is byte-identical, no connection came in, nothing is left running."""
    assert _snapshot(world.workspace) == world.before
    assert not any(world.workspace.glob("pwned*")) and not Path("/tmp/pwned_hook").exists()
    with pytest.raises(BlockingIOError):
        world.listener.accept()
    leftovers = []
    for pid in (p for p in os.listdir("/proc") if p.isdigit()):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if world.marker.encode() in cmdline or str(world.root).encode() in cmdline:  # our runs' bwrap and children
            leftovers.append((pid, cmdline[:200]))
    assert not leftovers
    for result in world.results.values():  # each run's folder holds only the harness's own files
        assert {p.name for p in result.log_path.parent.iterdir()} <= {"run.log", "result.json", "track.json"}


def test_the_corpus_covers_every_category() -> None:
    categories = {c.category for c in CASES}
    assert categories == {"os", "secrets", "network", "writes", "persistence", "resources", "metric"}
    assert len(CASES) >= 40 and len({c.name for c in CASES}) == len(CASES)
