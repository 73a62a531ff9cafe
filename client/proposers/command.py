"""The command proposer: runs an agent CLI the user already has (Claude Code, Codex, any other) once
per proposal, non-interactively; the ``train.py`` it leaves behind is the proposal.

Each call gets a fresh scratch folder (``.autoresearch/agent/``) holding a copy of the current best
``train.py``, ``program.md`` and ``prompt.md`` (program.md, the compact results table — number,
keep/discard/crash, val_bpb, Δ, description — and the hub's suggestions). The command runs there
(cwd) with:

- ``AUTORESEARCH_PROMPT_FILE``: absolute path of ``prompt.md``;
- ``AUTORESEARCH_TRAIN_PY``: absolute path of the ``train.py`` to edit;
- ``AUTORESEARCH_AGENT_DIR``: the scratch folder itself;
- the prompt file's path substituted for ``{prompt}`` in the command, or appended as the last
  argument when the command has no ``{prompt}`` and does not name ``$AUTORESEARCH_PROMPT_FILE``.

The command is split like a shell line (:func:`shlex.split`) but runs without a shell: only
``{prompt}`` and ``$AUTORESEARCH_PROMPT_FILE`` / ``$AUTORESEARCH_TRAIN_PY`` / ``$AUTORESEARCH_AGENT_DIR``
(also as ``${…}``) are replaced in its arguments; for pipes or ``$(…)`` wrap it in ``sh -c '…'`` or
a script of your own.

The agent edits ``train.py`` and may write a one-line ``description.txt``. The workspace's own
``train.py`` is never touched, so the loop's git state stays consistent while the agent works in the
background (prefetch).

Trust: the agent CLI is the user's own tool, on the user's side of the boundary, like their editor.
It runs as a plain process with the user's environment (it needs its own credentials), not in the
sandbox. What it *writes* is not trusted: the edited ``train.py`` goes through the static policy
filter and then runs only inside the sandboxed worker, like every other candidate.

Watchdog: each call runs in its own process group (session) with stdin closed and its output in
``agent.log``; after ``timeout`` seconds the whole group is killed (the agent and every tool it
spawned). A call that timed out, exited non-zero or left no ``train.py`` is restarted up to
``retries`` times (a fresh scratch folder each time) before a :class:`ProposerError` gives up. An
agent that ran but changed nothing is not retried: that is its answer, and the loop skips it.
"""

from __future__ import annotations

import atexit
import logging
import os
import shlex
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

from autoresearch.protocol.source import canonical_sha256_or_none, changed_lines

from ..errors import ProposerError, UsageError
from ..results import atomic_write_text
from ..workspace import ProposerUsage
from . import Proposal, ProposalContext

_logger = logging.getLogger(__name__)

PROMPT = """# Task

You are the research agent of an autoresearch workspace. Edit `train.py` in this folder ({folder},
also named by $AUTORESEARCH_TRAIN_PY) in place: make ONE change that you expect to lower val_bpb
(validation bits per byte) within the
fixed training time budget. Then write a one-line description of the change (upstream style, e.g.
`MATRIX_LR 0.04 → 0.06`) to `description.txt` in this folder. Do not run the training yourself:
the loop does. Do not edit any other file.

Rules: keep the `train(h)` contract in the file's docstring; import only torch and the standard
library helpers already used; no files, network, processes, eval/exec (the policy check rejects
them); do not change only the seed; do not repeat an experiment from the table below.

# Research instructions (program.md)

{program}

# Recent results

{results}
{suggestions}{repair}"""


DEFAULT_TIMEOUT = 900.0  # seconds per agent call (15 min) before the watchdog kills it
DEFAULT_RETRIES = 2  # restarts of a stuck or crashed agent per proposal
_KILL_GRACE = 5.0  # seconds between SIGTERM and SIGKILL of the agent's process group

PROMPT_ENV = "AUTORESEARCH_PROMPT_FILE"
TRAIN_PY_ENV = "AUTORESEARCH_TRAIN_PY"
AGENT_DIR_ENV = "AUTORESEARCH_AGENT_DIR"


def check_agent_command(command: str) -> None:
    """Fail early (before a long calibration) when ``command`` is empty or its program is missing.

    Raises:
        UsageError: empty command, or its first word is neither a path to a file nor on ``PATH``.
    """
    argv = shlex.split(command)
    if not argv:
        raise UsageError("the agent command is empty", hint='e.g. --agent-command "my-agent --headless"')
    if shutil.which(argv[0]) is None and not Path(argv[0]).is_file():
        raise UsageError(f"agent command not found: {argv[0]}", hint="check --agent-command (is the agent CLI on PATH?)")


_live: set[subprocess.Popen[bytes]] = set()  # agent calls running now (a prefetch thread's included)
_live_lock = threading.Lock()
_exiting = threading.Event()  # set at exit: no agent call starts (or restarts) after it


@atexit.register
def _kill_live_agents() -> None:
    """At exit (Ctrl-C, loop abort), kill agents a background prefetch left running: they run in
    their own session, so the terminal's SIGINT never reaches them."""
    _exiting.set()
    with _live_lock:
        procs = list(_live)
    for proc in procs:
        _kill_group(proc, grace=0.0)


class _AgentFailed(Exception):
    """One agent call that may be retried: timed out, exited non-zero, or left no train.py."""


class CommandProposer:
    """Runs ``command`` (a shell-like string, split with :func:`shlex.split`, no shell) in a scratch
    folder; see the module docstring.

    Args:
        command: the agent CLI, e.g. ``'claude -p "Follow the instructions in prompt.md"'`` or
            ``"my-agent --headless --prompt-file {prompt}"``.
        scratch_dir: folder the agent works in (recreated for every call).
        timeout: seconds per call before its process group is killed (> 0).
        retries: restarts after a timeout, a non-zero exit or a missing ``train.py`` (≥ 0); the
            proposal fails after ``retries + 1`` calls.

    Raises:
        ProposerError: the command is empty, or ``timeout``/``retries`` are out of range.
    """

    name = "command"
    can_repair = True

    def __init__(
        self, command: str, *, scratch_dir: Path, timeout: float = DEFAULT_TIMEOUT, retries: int = DEFAULT_RETRIES
    ) -> None:
        self.argv = shlex.split(command)
        if not self.argv:
            raise ProposerError("the agent command is empty", hint='e.g. --agent-command "my-agent --headless"')
        if not timeout > 0:
            raise ProposerError(f"the agent timeout must be positive seconds, not {timeout!r}")
        if retries < 0:
            raise ProposerError(f"the agent retries must be 0 or more, not {retries!r}")
        self.scratch_dir = scratch_dir
        self.timeout = timeout
        self.retries = retries

    def propose(self, ctx: ProposalContext) -> Proposal:
        """Run the agent (restarting it up to ``retries`` times) and return its edited ``train.py``.

        Raises:
            ProposerError: the command is missing; every call timed out, failed or left no
                ``train.py``; or the agent left ``train.py`` unchanged, unparsable or identical
                to one already tried.
        """
        start = time.monotonic()
        attempts = 0
        while True:
            attempts += 1
            if _exiting.is_set():
                raise ProposerError("not starting the agent: autoresearch is exiting")
            folder = self._prepare(ctx)
            try:
                self._call(folder)
                break
            except _AgentFailed as exc:
                if attempts > self.retries:
                    raise ProposerError(
                        f"agent command gave up after {attempts} call(s): {exc}",
                        hint="run the command by hand in .autoresearch/agent/ to see why; raise --agent-timeout or --agent-retries",
                    ) from None
                _logger.warning("agent call %d failed (%s); restarting it", attempts, exc)
        seconds = time.monotonic() - start
        source = (folder / "train.py").read_text(encoding="utf-8", errors="replace")
        child = canonical_sha256_or_none(source)
        if child is None:
            raise ProposerError("the agent left a train.py that does not parse", hint=f"see {folder / 'agent.log'}")
        parent = ctx.repair.source if ctx.repair is not None else ctx.train_py
        if child == canonical_sha256_or_none(parent):
            raise ProposerError(
                "the agent did not change train.py", hint=f"it must edit ${TRAIN_PY_ENV} in place; see {folder / 'agent.log'}"
            )
        if child in ctx.tried:
            raise ProposerError("the agent produced a train.py that was already run")
        description = self._description(folder, ctx.train_py, source)
        _logger.info("agent command took %.1f s (%d call(s)): %s", seconds, attempts, description)
        return Proposal(
            source=source, description=description, usage=ProposerUsage(seconds=round(seconds, 3), attempts=attempts)
        )

    def _call(self, folder: Path) -> None:
        """One agent call in ``folder`` under the watchdog.

        Raises:
            ProposerError: the command does not exist (not retried).
            _AgentFailed: timeout (the process group was killed), non-zero exit, or no train.py.
        """
        prompt = folder / "prompt.md"
        train_py = folder / "train.py"
        values = {PROMPT_ENV: str(prompt), TRAIN_PY_ENV: str(train_py), AGENT_DIR_ENV: str(folder)}
        argv = [_substitute(a, values) for a in self.argv]
        if not any("{prompt}" in a or PROMPT_ENV in a for a in self.argv):
            argv.append(str(prompt))
        env = {**os.environ, **values}
        log_path = folder / "agent.log"
        with log_path.open("wb") as log, _live_lock:
            if _exiting.is_set():
                raise ProposerError("not starting the agent: autoresearch is exiting")
            try:
                proc = subprocess.Popen(
                    argv, cwd=folder, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                    start_new_session=True,  # its own process group: the watchdog kills the agent and its tools
                )  # fmt: skip
            except FileNotFoundError as exc:
                raise ProposerError(f"agent command not found: {argv[0]}", hint="check --agent-command") from exc
            _live.add(proc)  # the child holds its own copy of the log's descriptor
        try:
            code = proc.wait(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            raise _AgentFailed(f"timed out after {self.timeout:g} s and was killed (output in {log_path})") from None
        finally:
            if proc.poll() is None:  # interrupted (Ctrl-C, loop abort): leave no agent behind
                _kill_group(proc)
            with _live_lock:
                _live.discard(proc)
        _kill_group(proc, grace=0.0)  # tools it left running in the background
        if code != 0:
            tail = log_path.read_text(errors="replace")[-500:].strip()
            raise _AgentFailed(f"exited with status {code}: {tail}")
        if not train_py.is_file():
            raise _AgentFailed("left no train.py in its folder")

    def _prepare(self, ctx: ProposalContext) -> Path:
        folder = self.scratch_dir
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        atomic_write_text(folder / "train.py", ctx.train_py)
        atomic_write_text(folder / "program.md", ctx.program_md)
        suggestions = ""
        if ctx.suggestions:
            suggestions = "\n# Hub suggestions\n\n" + "\n".join(
                f"- {s.kind} {s.direction}: {s.rationale}" for s in ctx.suggestions[:10]
            ) + "\n"
        repair = ""
        if ctx.repair is not None:
            repair = (
                f"\n# Fix a crash\n\nThe candidate '{ctx.repair.description}' crashed; it is in train.py now. "
                f"Fix it (keep the idea if you can). Traceback tail:\n\n```\n{ctx.repair.error_tail}\n```\n"
            )
            atomic_write_text(folder / "train.py", ctx.repair.source)
        text = PROMPT.format(
            folder=folder, program=ctx.program_md, results=ctx.results_table or "(none yet)",
            suggestions=suggestions, repair=repair,
        )  # fmt: skip
        atomic_write_text(folder / "prompt.md", text)
        return folder.resolve()

    @staticmethod
    def _description(folder: Path, parent: str, child: str) -> str:
        path = folder / "description.txt"
        if path.exists():
            line = " ".join(path.read_text(encoding="utf-8", errors="replace").split())
            if line:
                return line[:500]
        return f"agent edit ({changed_lines(parent, child)} lines changed)"


def _substitute(arg: str, values: dict[str, str]) -> str:
    """``arg`` with ``{prompt}`` and ``$NAME`` / ``${NAME}`` of our own variables replaced (the
    command runs without a shell, so nothing else is expanded)."""
    arg = arg.replace("{prompt}", values[PROMPT_ENV])
    for name, value in values.items():
        arg = arg.replace("${" + name + "}", value).replace("$" + name, value)
    return arg


def _kill_group(proc: subprocess.Popen[bytes], *, grace: float = _KILL_GRACE) -> None:
    """SIGTERM the process group of ``proc`` (its own session), then SIGKILL after ``grace`` s."""
    try:
        os.killpg(proc.pid, signal.SIGTERM if grace > 0 else signal.SIGKILL)
    except ProcessLookupError:
        return
    if grace > 0:
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    try:
        proc.wait(timeout=grace + 5)
    except subprocess.TimeoutExpired:
        _logger.warning("agent process %d did not exit after SIGKILL", proc.pid)
