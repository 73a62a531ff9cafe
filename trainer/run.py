"""Parent side of a run: start the harness subprocess, enforce the kill deadlines, return a
:class:`~autoresearch.trainer.result.RunResult`. Imports no torch.

The child runs ``python -m autoresearch.trainer.harness`` with a scrubbed environment
(:func:`safe_env`), in its own process group, with stdout and stderr going to ``run_dir/run.log``
and progress events on a dedicated pipe. Deadlines (``tracks.HarnessLimits``), measured here on the
parent's clock from the child's phase events:

- start-up (spawn → ``train(h)`` called) longer than ``startup_seconds``;
- training (clock start, or ``train(h)`` called plus the warm-up allowance, → ``train`` returned)
  longer than ``2 × time_budget + grace_seconds``;
- evaluation (``train`` returned → exit) longer than ``eval_seconds``.

Past a deadline the whole process group gets SIGKILL and the outcome is ``timeout``. A child that
dies without writing ``result.json`` is ``oom`` when SIGKILLed by someone else (the kernel's OOM
killer) and ``crash`` otherwise, with the log's tail as the error.
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

from . import tracks
from .result import ProgressEvent, RunResult, TrainProgress, truncate_error, write_result

_logger = logging.getLogger(__name__)

SECRET_PATTERNS = ("*KEY*", "*TOKEN*", "*SECRET*", "*PASSWORD*", "*PASSWD*", "*CREDENTIAL*", "ANTHROPIC_*", "AUTORESEARCH_*")
KEEP_VARIABLES = ("AUTORESEARCH_CACHE",)  # the data cache path is all the child needs of ours
POLL_SECONDS = 0.05


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
        """Why the child is past a deadline, or None."""
        if self.eval_started is not None:
            if now - self.eval_started > limits.eval_seconds:
                return f"evaluation ran longer than {limits.eval_seconds:g} s"
            return None
        if self.train_started is None:
            if now - self.spawned > limits.startup_seconds:
                return f"start-up ran longer than {limits.startup_seconds:g} s"
            return None
        start = self.clock_started if self.clock_started is not None else self.train_started + limits.warmup_seconds
        allowed = 2 * track.time_budget + limits.grace_seconds
        if now - start > allowed:
            return f"training ran longer than 2 × {track.time_budget:g} s budget + {limits.grace_seconds:g} s grace; killed"
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
) -> RunResult:
    """Run ``train_py`` once under ``track`` in a harness subprocess and return its result.

    Writes ``run_dir/result.json`` (the returned model as JSON), ``run_dir/run.log`` (stdout and
    stderr of the child, ending with the summary block) and ``run_dir/track.json``. Never raises for
    a bad ``train.py``: every failure is an outcome. ``on_progress`` is called from a background
    thread with each :class:`TrainProgress` (about 4 per second).

    Raises:
        UnknownTrack: the track's name has no harness limits.
        OSError: ``run_dir`` cannot be created or written.
    """
    limits = tracks.limits(track)
    run_dir = Path(run_dir)
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
        "--seed", str(seed), "--progress-fd", str(write_fd), "--log-path", str(log_path),
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
            return RunResult.model_validate_json(result_path.read_text(encoding="utf-8"))
        except ValidationError as exc:
            _logger.error("harness wrote an unreadable result.json: %s", exc)
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
        error=truncate_error(error),
        log_path=log_path,
        seed=seed,
        track=track.id,
        harness_version=tracks.HARNESS_VERSION,
        train_py_sha256=hashlib.sha256(train_py.read_bytes()).hexdigest() if train_py.is_file() else None,
    )
    write_result(result, result_path)
    return result
