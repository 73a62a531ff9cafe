"""Agent CLIs as proposers: a real (fake) agent CLI script, run the way ``run``/``join`` run Claude
Code or Codex — one call per experiment, the prompt file and train.py named by environment
variables — under the watchdog that kills a stuck agent's process group and restarts it.
"""

from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path

import pytest
from cli_run import run_cli
from hostile_hub import HostileHub

from autoresearch.client.errors import ProposerError, UsageError
from autoresearch.client.join import JoinOptions, join
from autoresearch.client.proposers import ProposalContext, choose_proposer
from autoresearch.client.proposers.command import CommandProposer
from autoresearch.client.workspace import Workspace
from autoresearch.protocol import RunMetrics, SoftwareVersions, Suggestion
from autoresearch.trainer import tracks
from autoresearch.trainer.result import RunResult

TINY = tracks.get_track("tiny")
PARENT = "import torch\n\nMATRIX_LR = 0.2  # Muon learning rate\n"

# A fake agent CLI: reads the prompt file named by $AUTORESEARCH_PROMPT_FILE, keeps a copy of every
# prompt it saw, and sets MATRIX_LR in $AUTORESEARCH_TRAIN_PY to 0.2 + 0.01 · (its call number).
# MODE (argv[1]) makes it misbehave on its first call: hang (with a grandchild), crash, or do nothing.
AGENT = r'''
import os, pathlib, re, subprocess, sys, time
state = pathlib.Path(sys.argv[2])
calls = int(state.read_text()) + 1 if state.exists() else 1
state.write_text(str(calls))
mode = sys.argv[1]
assert sys.argv[3:] == [os.environ["AUTORESEARCH_PROMPT_FILE"]], sys.argv  # substituted, not appended again
prompt = pathlib.Path(os.environ["AUTORESEARCH_PROMPT_FILE"]).read_text()
(state.parent / f"prompt-{calls}.md").write_text(prompt)
if mode == "hang-always" or (mode == "hang-once" and calls == 1):
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    (state.parent / "grandchild.pid").write_text(str(child.pid))
    time.sleep(300)
if mode == "crash-once" and calls == 1:
    print("agent: rate limited", flush=True)
    sys.exit(7)
if mode == "noop":
    sys.exit(0)
train = pathlib.Path(os.environ["AUTORESEARCH_TRAIN_PY"])
assert pathlib.Path.cwd() == train.parent, (pathlib.Path.cwd(), train)
src = train.read_text()
old = re.search(r"^MATRIX_LR = ([0-9.]+)", src, re.M).group(1)
new = f"{0.2 + 0.01 * calls:.2f}"
train.write_text(re.sub(r"^MATRIX_LR = [0-9.]+", f"MATRIX_LR = {new}", src, flags=re.M))
pathlib.Path("description.txt").write_text(f"MATRIX_LR {old} → {new}\n")
print("edited", flush=True)
'''


def agent_command(tmp_path: Path, mode: str) -> tuple[str, Path]:
    """The fake agent's command line and the file counting its calls."""
    script = tmp_path / "fake_agent.py"
    script.write_text(AGENT)
    state = tmp_path / "agent-state" / "calls"
    state.parent.mkdir(exist_ok=True)
    # $AUTORESEARCH_PROMPT_FILE in the command: replaced by the proposer (no shell), not appended again
    return f'{sys.executable} {script} {mode} {state} "$AUTORESEARCH_PROMPT_FILE"', state


def calls(state: Path) -> int:
    return int(state.read_text()) if state.exists() else 0


def ctx() -> ProposalContext:
    suggestion = Suggestion(kind="explore", direction="SOFTCAP ↑", rationale="under-tried on this track")
    return ProposalContext(
        program_md="Lower val_bpb; prefer learning rates.", train_py=PARENT,
        results_table="#     status   val_bpb   delta     description\n1     keep     4.800000  -         baseline",
        suggestions=[suggestion],
    )  # fmt: skip


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting for init to reap it counts as dead)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


# --------------------------------------------------------------------------------------------------
# the proposer with a real agent CLI


def test_agent_reads_the_prompt_file_and_edits_train_py(tmp_path: Path) -> None:
    command, state = agent_command(tmp_path, "ok")
    proposal = CommandProposer(command, scratch_dir=tmp_path / "scratch").propose(ctx())
    assert proposal.source == PARENT.replace("0.2 ", "0.21 ")
    assert proposal.description == "MATRIX_LR 0.2 → 0.21"
    assert proposal.usage is not None and proposal.usage.attempts == 1
    prompt = (state.parent / "prompt-1.md").read_text()
    assert "Lower val_bpb; prefer learning rates." in prompt  # program.md
    assert "1     keep     4.800000" in prompt  # compact history: status, val_bpb, description
    assert "explore SOFTCAP ↑: under-tried on this track" in prompt  # the hub's suggestions
    assert (tmp_path / "scratch" / "agent.log").read_text().strip() == "edited"


def test_a_hanging_agent_is_killed_with_its_children_and_restarted(tmp_path: Path) -> None:
    command, state = agent_command(tmp_path, "hang-once")
    start = time.monotonic()
    proposal = CommandProposer(command, scratch_dir=tmp_path / "scratch", timeout=2, retries=1).propose(ctx())
    assert time.monotonic() - start < 60  # the 300 s sleep was cut short
    assert calls(state) == 2 and proposal.usage is not None and proposal.usage.attempts == 2
    assert proposal.description == "MATRIX_LR 0.2 → 0.22"
    grandchild = int((state.parent / "grandchild.pid").read_text())
    deadline = time.monotonic() + 10
    while _alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(grandchild), "the agent's own child survived the watchdog"


def test_an_agent_stuck_every_time_gives_up_after_the_retries(tmp_path: Path) -> None:
    command, state = agent_command(tmp_path, "hang-always")
    with pytest.raises(ProposerError, match=r"gave up after 2 call\(s\): timed out after 1 s") as info:
        CommandProposer(command, scratch_dir=tmp_path / "scratch", timeout=1, retries=1).propose(ctx())
    assert calls(state) == 2
    assert "--agent-timeout" in (info.value.hint or "")


def test_agents_left_running_by_a_background_prefetch_are_killed_at_exit(tmp_path: Path) -> None:
    """A prefetch thread's agent runs in its own session (Ctrl-C never reaches it): the exit hook
    kills its process group, and no restart follows."""
    import threading

    from autoresearch.client.proposers import command as command_module

    command, state = agent_command(tmp_path, "hang-always")
    proposer = CommandProposer(command, scratch_dir=tmp_path / "scratch", timeout=120, retries=2)
    errors: list[Exception] = []

    def work() -> None:
        try:
            proposer.propose(ctx())
        except ProposerError as exc:
            errors.append(exc)

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    pid_file = state.parent / "grandchild.pid"
    deadline = time.monotonic() + 30
    while not pid_file.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    grandchild = int(pid_file.read_text())
    try:
        command_module._kill_live_agents()
        thread.join(timeout=30)
    finally:
        command_module._exiting.clear()
    assert not thread.is_alive()
    assert len(errors) == 1 and "exiting" in str(errors[0]) and calls(state) == 1
    deadline = time.monotonic() + 10
    while _alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(grandchild)


def test_a_crashed_agent_is_restarted(tmp_path: Path) -> None:
    command, state = agent_command(tmp_path, "crash-once")
    proposal = CommandProposer(command, scratch_dir=tmp_path / "scratch", retries=2).propose(ctx())
    assert calls(state) == 2 and proposal.description == "MATRIX_LR 0.2 → 0.22"


def test_a_crash_with_no_retries_left_quotes_the_agent(tmp_path: Path) -> None:
    command, state = agent_command(tmp_path, "crash-once")
    with pytest.raises(ProposerError, match="status 7: agent: rate limited"):
        CommandProposer(command, scratch_dir=tmp_path / "scratch", retries=0).propose(ctx())
    assert calls(state) == 1


def test_an_agent_that_changes_nothing_is_a_clear_error_and_not_retried(tmp_path: Path) -> None:
    command, state = agent_command(tmp_path, "noop")
    with pytest.raises(ProposerError, match="did not change train.py") as info:
        CommandProposer(command, scratch_dir=tmp_path / "scratch", retries=2).propose(ctx())
    assert calls(state) == 1
    assert "AUTORESEARCH_TRAIN_PY" in (info.value.hint or "")


@pytest.mark.parametrize(("timeout", "retries"), [(0.0, 1), (-1.0, 1), (5.0, -1)])
def test_bad_watchdog_settings_are_refused(tmp_path: Path, timeout: float, retries: int) -> None:
    with pytest.raises(ProposerError, match="timeout|retries"):
        CommandProposer("agent", scratch_dir=tmp_path, timeout=timeout, retries=retries)


# --------------------------------------------------------------------------------------------------
# choosing the proposer: options, then the workspace config's agent entry


def _ws(tmp_path: Path) -> Workspace:
    return Workspace.init(tmp_path / "ws", track="tiny", reference_source=tracks.reference_source(TINY), program_md="Lower val_bpb.\n")


def test_choose_proposer_reads_the_config_entry_and_options_win(tmp_path: Path) -> None:
    ws = _ws(tmp_path)
    assert choose_proposer(None, ws)[0] == "offline"
    config = ws.state_dir / "config.json"
    text = config.read_text().replace('"agent": null', '"agent": {"command": "my-agent --headless", "timeout": 60, "retries": 0}')
    config.write_text(text)
    ws = Workspace.open(ws.root)
    name, proposer = choose_proposer("auto", ws)
    assert name == "command" and isinstance(proposer, CommandProposer)
    assert (proposer.argv, proposer.timeout, proposer.retries) == (["my-agent", "--headless"], 60, 0)
    assert proposer.scratch_dir == ws.state_dir / "agent"
    _, proposer = choose_proposer(None, ws, agent_command="other-agent", agent_timeout=5.0, agent_retries=3)
    assert isinstance(proposer, CommandProposer)
    assert (proposer.argv, proposer.timeout, proposer.retries) == (["other-agent"], 5.0, 3)
    assert choose_proposer("offline", ws)[0] == "offline"  # naming a proposer wins over the config


def test_the_command_proposer_without_a_command_says_how_to_set_one(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="--agent-command") as info:
        choose_proposer("command", _ws(tmp_path))
    assert "config.json" in (info.value.hint or "")


# --------------------------------------------------------------------------------------------------
# join with --agent-command


class ConstantRunner:
    """Stand-in for the harness: val_bpb = 5 − MATRIX_LR (a larger learning rate is better)."""

    def __init__(self) -> None:
        self.sources: list[str] = []

    def __call__(self, train_py: Path, track, run_dir: Path, *, seed: int = 0, on_progress=None, allow_unsandboxed: bool = False) -> RunResult:  # type: ignore[no-untyped-def]
        source = train_py.read_text()
        self.sources.append(source)
        lr = float(re.search(r"^MATRIX_LR = ([0-9.]+)", source, re.M).group(1))  # type: ignore[union-attr]
        log = run_dir / "run.log"
        log.write_text(f"val_bpb: {5 - lr}\n")
        return RunResult(
            outcome="ok", metrics=RunMetrics(val_bpb=5 - lr, training_seconds=0.01), log_path=log, seed=seed, track=track.id,
            harness_version=tracks.HARNESS_VERSION, hardware_class="cpu:test:2", software=SoftwareVersions(python="3.11"),
        )  # fmt: skip


def test_join_runs_the_agent_cli_once_per_experiment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`join --agent-command`: the loop, connected to a real hub, takes every proposal from the agent
    CLI; each train.py it writes is trained (here by a stand-in runner), kept and published."""
    from autoresearch.client import loop
    from autoresearch.client.commands.federation import _run_loop

    runner = ConstantRunner()
    monkeypatch.setattr(loop, "_default_runner", lambda: runner)
    command, state = agent_command(tmp_path, "ok")
    with HostileHub(f"sqlite:///{tmp_path / 'hub.db'}") as hub:
        opts = JoinOptions(
            hub_url=hub.url, init=tmp_path / "ws", track="tiny", display_name="bob", yes=True, calibrate=False,
            agent_command=command, agent_timeout=60, agent_retries=0, max_experiments=3,
        )  # fmt: skip
        stats = join(opts, lambda ws, spec, hooks: _run_loop(ws, spec, hooks, opts))
    assert stats.runs == 3 and stats.crashes == 0 and stats.rejected == 0
    lrs = [float(re.search(r"^MATRIX_LR = ([0-9.]+)", s, re.M).group(1)) for s in runner.sources]  # type: ignore[union-attr]
    # the baseline, then the agent's edits (a prefetched one that conflicts with a new best is
    # re-proposed, so the agent may be called more often than there are runs); without a
    # calibration each keep's parent is re-measured right after it (the drift guard)
    assert lrs == [0.2, 0.21, 0.2, lrs[3], 0.21] and lrs[3] > 0.21, lrs
    n = calls(state)
    assert n >= 2
    last = (state.parent / f"prompt-{n}.md").read_text()
    # the history it saw: the baseline, and the keep marked provisional (no calibration)
    assert re.search(r"keep\s+4\.800000", last) and re.search(r"keep\?\s+4\.790000", last), last
    assert "keep? = provisional: no calibration" in last
    ws = Workspace.open(tmp_path / "ws")
    assert ws.train_py.read_text() == runner.sources[3]  # kept and committed


def test_join_refuses_a_missing_agent_cli_before_doing_anything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    result = run_cli(
        capsys, monkeypatch, "join", "http://127.0.0.1:9", "--init", str(tmp_path / "ws"), "--track", "tiny",
        "--agent-command", "no-such-agent-xyz -p hi", "--yes", "--no-calibrate",
    )  # fmt: skip
    assert result.code != 0
    assert "agent command not found: no-such-agent-xyz" in result.err
    assert not (tmp_path / "ws").exists()


def test_join_with_the_command_proposer_and_no_agent_says_so_before_doing_anything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    result = run_cli(
        capsys, monkeypatch, "join", "http://127.0.0.1:9", "--init", str(tmp_path / "ws"), "--track", "tiny",
        "--proposer", "command", "--yes", "--no-calibrate",
    )  # fmt: skip
    assert result.code != 0 and "needs --agent-command" in result.err
    assert not (tmp_path / "ws").exists()


def test_join_help_names_the_agent_options(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    result = run_cli(capsys, monkeypatch, "join", "--help")
    assert result.code == 0
    for option in ("--agent-command", "--agent-timeout", "--agent-retries"):
        assert option in result.out
    assert os.environ.get("AUTORESEARCH_AGENT_COMMAND") is None
