"""Parent side of a run: start the harness subprocess, enforce backstop deadlines, return a
:class:`~autoresearch.trainer.result.RunResult` with its error scrubbed. Imports no torch.

The harness (trusted; it never imports ``train.py``) runs as ``python -m
autoresearch.trainer.harness`` with a scrubbed environment (:func:`safe_env`), in its own process
group, with stdout and stderr going to ``run_dir/run.log`` and progress events on a dedicated pipe;
``train.py`` itself runs in sandboxed workers the harness starts (docs/security.md). The harness
enforces the track's deadlines itself; the ones here, measured on the parent's clock from the
harness's phase events, are a backstop for a harness that hangs:

- start-up (spawn → the training worker is handed the track) longer than ``startup_seconds``;
- training longer than ``wall_factor × time_budget + grace_seconds + warmup_seconds`` + a margin;
- evaluation longer than ``eval_seconds`` + a margin.

Past a deadline the whole process group gets SIGKILL and the outcome is ``timeout``. A harness that
dies without writing ``result.json`` is ``oom`` when SIGKILLed by someone else (the kernel's OOM
killer) and ``crash`` otherwise, with the log's tail as the error.

Where no sandbox can be had (:func:`autoresearch.trainer.sandbox.detect`), :func:`run_training`
refuses unless the caller says the code is the user's own or approved (``allow_unsandboxed``).
"""

from __future__ import annotations

import fnmatch
import hashlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from pydantic import ValidationError

from autoresearch.protocol import Outcome, RunMetrics, TrackSpec

from . import sandbox, tracks
from .result import ProgressEvent, RunResult, TrainProgress, truncate_error, write_result

_logger = logging.getLogger(__name__)

SECRET_PATTERNS = ("*KEY*", "*TOKEN*", "*SECRET*", "*PASSWORD*", "*PASSWD*", "*CREDENTIAL*", "ANTHROPIC_*", "AUTORESEARCH_*")
KEEP_VARIABLES = ("AUTORESEARCH_CACHE",)  # the data cache path is all the child needs of ours
POLL_SECONDS = 0.05
BACKSTOP_SECONDS = 30.0  # added to the harness's own deadlines before the parent steps in
# environment values that are not secrets (everything else of 8+ characters is redacted from errors)
PUBLIC_VARIABLES = frozenset({"PATH", "PWD", "OLDPWD", "SHELL", "TERM", "LANG", "LANGUAGE", "HOME", "USER", "LOGNAME",
                              "HOSTNAME", "TMPDIR", "VIRTUAL_ENV", "PYTHONPATH", "OMP_WAIT_POLICY", "PYTHONUNBUFFERED"})  # fmt: skip


def safe_env(extra_env: Mapping[str, str] | None = None, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The child's environment: ``base`` (default ``os.environ``) without secrets, plus ``extra_env``.

    Dropped: names matching :data:`SECRET_PATTERNS` (case-insensitive), except
    :data:`KEEP_VARIABLES`. ``extra_env`` is added afterwards and is not filtered (the caller chose
    it). ``PYTHONUNBUFFERED=1`` keeps the log in order; ``OMP_WAIT_POLICY`` defaults to ``PASSIVE``.
    """
    env = {}
    for name, value in (base if base is not None else os.environ).items():
        upper = name.upper()
        if upper not in KEEP_VARIABLES and any(fnmatch.fnmatchcase(upper, p) for p in SECRET_PATTERNS):
            continue
        env[name] = value
    env["PYTHONUNBUFFERED"] = "1"
    # OpenMP threads that spin while waiting collapse torch's CPU speed (15× measured) as soon as
    # anything else wants the cores, e.g. the agent preparing the next proposal. Sleep instead.
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    env.update(extra_env or {})
    return env


def scrub(text: str, env: Mapping[str, str] | None = None, home: str | None = None) -> str:
    """``text`` made fit to leave the machine: environment values redacted, home paths as ``~``.

    Every value of 8 or more characters of a variable outside :data:`PUBLIC_VARIABLES` becomes
    ``[redacted NAME]`` (longest first), then the home directory's path becomes ``~`` (a traceback
    names files under it).
    """
    env = os.environ if env is None else env
    secrets = sorted(((v, k) for k, v in env.items() if k.upper() not in PUBLIC_VARIABLES and not k.startswith("LC_")
                      and len(v) >= 8), key=lambda item: -len(item[0]))  # fmt: skip
    for value, name in secrets:
        text = text.replace(value, f"[redacted {name}]")
    home = home if home is not None else os.path.expanduser("~")
    if home and home != "/":
        text = text.replace(home.rstrip("/") + "/", "~/").replace(home.rstrip("/"), "~")
    return text


class _Watch:
    """Reads the child's progress pipe on a thread and tracks its phase times (parent clock)."""

    def __init__(self, fd: int, on_progress: Callable[[TrainProgress], None] | None) -> None:
        self.spawned = time.monotonic()
        self.train_started: float | None = None
        self.clock_started: float | None = None
        self.eval_started: float | None = None
        self._on_progress = on_progress
        self._thread = threading.Thread(target=self._read, args=(fd,), daemon=True, name="harness-progress")
        self._thread.start()

    def _read(self, fd: int) -> None:
        with os.fdopen(fd, "r", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                try:
                    event = ProgressEvent.model_validate_json(line)
                except ValidationError:
                    _logger.debug("ignoring malformed progress line %r", line[:200])
                    continue
                now = time.monotonic()
                if event.phase == "train":
                    self.train_started = now
                elif event.phase == "clock":
                    self.clock_started = now
                elif event.phase == "eval":
                    self.eval_started = now
                elif event.progress is not None and self._on_progress is not None:
                    try:
                        self._on_progress(event.progress)
                    except Exception:  # a faulty callback must not stop the deadline watch
                        _logger.exception("on_progress callback failed")

    def join(self) -> None:
        self._thread.join(timeout=5)

    def overdue(self, track: TrackSpec, limits: tracks.HarnessLimits, now: float) -> str | None:
        """Why the harness is past a backstop deadline, or None."""
        if self.eval_started is not None:
            if now - self.eval_started > limits.eval_seconds + BACKSTOP_SECONDS:
                return f"evaluation ran longer than {limits.eval_seconds:g} s"
            return None
        if self.train_started is None:
            if now - self.spawned > limits.startup_seconds + BACKSTOP_SECONDS:
                return f"start-up ran longer than {limits.startup_seconds:g} s"
            return None
        allowed = limits.wall_factor * track.time_budget + limits.grace_seconds + limits.warmup_seconds + BACKSTOP_SECONDS
        if now - self.train_started > allowed:
            return f"training ran longer than {allowed:g} s of wall time; killed"
        return None


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _log_tail(path: Path, limit: int = 3000) -> str:
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - limit))
            return fh.read().decode("utf-8", errors="replace")
    except OSError:
        return ""


def run_training(
    train_py: Path,
    track: TrackSpec,
    run_dir: Path,
    *,
    seed: int = 0,
    on_progress: Callable[[TrainProgress], None] | None = None,
    extra_env: Mapping[str, str] | None = None,
    python: str = sys.executable,
    allow_unsandboxed: bool = False,
) -> RunResult:
    """Run ``train_py`` once under ``track`` through the harness and return its result.

    Writes ``run_dir/result.json`` (the returned model as JSON), ``run_dir/run.log`` (stdout and
    stderr of the harness and, prefixed ``train.py| ``, of the workers, ending with the summary
    block) and ``run_dir/track.json``. Never raises for a bad ``train.py``: every failure is an
    outcome, and the error is :func:`scrub`-bed. ``on_progress`` is called from a background thread
    with each :class:`TrainProgress` (about 4 per second). ``allow_unsandboxed``: the caller vouches
    that ``train_py`` is the user's own or approved code, so it may run at isolation ``process``
    where no sandbox can be had (the result says which level it ran at).

    Raises:
        SandboxUnavailable: no sandbox here and ``allow_unsandboxed`` is false (``.hint`` has the fix).
        UnknownTrack: the track's name has no harness limits.
        OSError: ``run_dir`` cannot be created or written.
    """
    limits = tracks.limits(track)
    support = sandbox.detect()
    if support.isolation != "sandbox" and not allow_unsandboxed:
        raise sandbox.SandboxUnavailable(
            f"refusing to run {Path(train_py).name} without a sandbox: {support.reason}",
            (support.hint or "") + "; or pass --allow-unsandboxed for code you wrote or approved",
        )
    run_dir = Path(run_dir).resolve()  # the harness runs with cwd=run_dir: relative paths would break
    run_dir.mkdir(parents=True, exist_ok=True)
    train_py = Path(train_py).resolve()
    track_json = run_dir / "track.json"
    track_json.write_text(track.model_dump_json(indent=2), encoding="utf-8")
    result_path = run_dir / "result.json"
    result_path.unlink(missing_ok=True)
    log_path = run_dir / "run.log"

    read_fd, write_fd = os.pipe()
    cmd = [
        python, "-m", "autoresearch.trainer.harness",
        "--train-py", str(train_py), "--track-json", str(track_json), "--run-dir", str(run_dir),
        "--seed", str(seed), "--progress-fd", str(write_fd), "--log-path", str(log_path), "--isolation", support.isolation,
        "--spawned-at", repr(time.monotonic()),
    ]  # fmt: skip
    _logger.info("run %s on track %s (budget %g s) in %s", train_py.name, track.id, track.time_budget, run_dir)
    with log_path.open("wb") as log:
        try:
            proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=run_dir,
                env=safe_env(extra_env), pass_fds=(write_fd,), start_new_session=True,
            )  # fmt: skip
        finally:
            os.close(write_fd)
        watch = _Watch(read_fd, on_progress)
        killed_for: str | None = None
        try:
            while proc.poll() is None:
                reason = watch.overdue(track, limits, time.monotonic())
                if reason is not None:
                    killed_for = reason
                    _logger.warning("killing harness: %s", reason)
                    _kill_group(proc)
                    proc.wait()
                    break
                time.sleep(POLL_SECONDS)
        finally:
            if proc.poll() is None:  # interrupted (Ctrl-C): never leave a training process behind
                _kill_group(proc)
                proc.wait()
            watch.join()
    total_seconds = time.monotonic() - watch.spawned

    if killed_for is None and result_path.is_file():
        try:
            result = RunResult.model_validate_json(result_path.read_text(encoding="utf-8"))
        except ValidationError as exc:
            _logger.error("harness wrote an unreadable result.json: %s", exc)
        else:
            if result.error is not None:
                result = result.model_copy(update={"error": truncate_error(scrub(result.error))})
                write_result(result, result_path)
            return result
    outcome: Outcome
    if killed_for is not None:
        outcome, error = "timeout", killed_for
    elif proc.returncode == -signal.SIGKILL:
        outcome, error = "oom", "harness was killed by SIGKILL (likely the out-of-memory killer)\n" + _log_tail(log_path)
    else:
        outcome, error = "crash", f"harness exited with status {proc.returncode}\n" + _log_tail(log_path)
    result = RunResult(
        outcome=outcome,
        metrics=RunMetrics(total_seconds=total_seconds),
        error=truncate_error(scrub(error)),
        log_path=log_path,
        seed=seed,
        track=track.id,
        harness_version=tracks.HARNESS_VERSION,
        train_py_sha256=hashlib.sha256(train_py.read_bytes()).hexdigest() if train_py.is_file() else None,
        isolation=support.isolation,
    )
    write_result(result, result_path)
    return result
