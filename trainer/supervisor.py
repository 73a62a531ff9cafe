"""The harness's end of one worker: start it in its cage, talk to it, read its CPU time, kill it.

Trusted side. Every frame a worker sends is validated here (size limits before allocation, strict
pydantic models after) because once ``train.py`` is imported the worker is hostile. The worker's
stdout and stderr are pumped into the run log with a prefix (``train.py| ``), so nothing it prints
can pass for the harness's own summary block, and capped in size.
"""

from __future__ import annotations

import logging
import math
import os
import selectors
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import BinaryIO, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .sandbox import Support, WorkerSpec, command
from .worker.wire import FrameBuffer, WireError, encode

_logger = logging.getLogger(__name__)

SEND_TIMEOUT = 30.0  # seconds a worker may leave a frame unread before it counts as stuck
TREE_RESCAN = 1.0  # seconds between full /proc scans for a worker's process tree
LOG_CAP_BYTES = 8 << 20  # worker output kept in run.log per worker
_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


class WorkerError(Exception):
    """The worker broke the protocol, died or stopped answering. ``outcome`` classifies it."""

    def __init__(self, message: str, outcome: Literal["crash", "oom", "timeout"] = "crash") -> None:
        super().__init__(message)
        self.outcome = outcome


# --------------------------------------------------------------------------------------------------
# What a worker may say (everything else is a protocol violation)


class _Msg(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class Hello(_Msg):
    op: Literal["hello"]
    role: Literal["train", "eval"]
    torch: str = Field(max_length=100)
    cuda: str | None = Field(default=None, max_length=100)


class BatchRequest(_Msg):
    op: Literal["batch"]
    batch_size: int = Field(ge=1, le=1 << 16)
    seq_len: int = Field(ge=1, le=1 << 20)


class Report(_Msg):
    op: Literal["report"]
    step: int = Field(ge=-(2**53), le=2**53)
    loss: float | None = Field(default=None, allow_inf_nan=False)


class ModelReady(_Msg):
    op: Literal["model"]
    peak_vram_mib: float = Field(ge=0.0, le=1e9, allow_inf_nan=False)


class Loaded(_Msg):
    op: Literal["loaded"]
    num_params: int = Field(ge=0, le=2**53)
    flops_per_token: float | None = Field(default=None, ge=0.0, allow_inf_nan=False)


class Scores(_Msg):
    op: Literal["scores"]
    peak_vram_mib: float = Field(default=0.0, ge=0.0, le=1e9, allow_inf_nan=False)


class Audit(_Msg):
    op: Literal["audit"]


class Failure(_Msg):
    op: Literal["error"]
    kind: Literal["exception", "contract"]
    oom: bool
    message: str = Field(max_length=8000)


Message = Hello | BatchRequest | Report | ModelReady | Loaded | Scores | Audit | Failure
_BY_OP: dict[str, type[_Msg]] = {
    "hello": Hello, "batch": BatchRequest, "report": Report, "model": ModelReady, "loaded": Loaded,
    "scores": Scores, "audit": Audit, "error": Failure,
}  # fmt: skip


def parse_message(header: dict[str, object]) -> _Msg:
    """The validated model of a worker's header.

    Raises:
        WorkerError: unknown op or a field out of its range.
    """
    kind = _BY_OP.get(str(header.get("op")))
    if kind is None:
        raise WorkerError(f"worker sent an unknown message {str(header.get('op'))[:40]!r}")
    try:
        return kind.model_validate(header)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise WorkerError(f"worker sent a malformed {header['op']!r} message: {first['loc']}: {first['msg']}") from None


# --------------------------------------------------------------------------------------------------
# Process tree accounting (Linux /proc)


def _stat(pid: int) -> tuple[int, int] | None:
    """``(ppid, utime + stime + cutime + cstime in clock ticks)`` of ``pid``, or None if gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            raw = fh.read()
    except OSError:
        return None
    fields = raw[raw.rfind(b")") + 2 :].split()  # after "pid (comm) ": state ppid … (proc(5))
    return int(fields[1]), sum(int(v) for v in fields[11:15])


def process_tree(root: int) -> dict[int, tuple[int, int]]:
    """``{pid: (ppid, cpu ticks)}`` of ``root`` and all its live (or zombie) descendants."""
    children: dict[int, list[int]] = {}
    stats: dict[int, tuple[int, int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit() and (stat := _stat(int(name))) is not None:
            stats[int(name)] = stat
            children.setdefault(stat[0], []).append(int(name))
    tree: dict[int, tuple[int, int]] = {}
    todo = [root]
    while todo:
        pid = todo.pop()
        if pid in stats and pid not in tree:
            tree[pid] = stats[pid]
            todo.extend(children.get(pid, []))
    return tree


def check_lockdown(pid: int, no_fork: bool) -> None:
    """Check from outside that a worker applied its lockdown (no_new_privs, seccomp when asked).

    Raises:
        WorkerError: it did not (or its ``/proc`` entry is gone).
    """
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError as exc:
        raise WorkerError(f"cannot read the worker's status: {exc}") from None
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    if no_fork and (fields.get("NoNewPrivs", "").strip() != "1" or fields.get("Seccomp", "").strip() != "2"):
        raise WorkerError("the worker did not install its seccomp filter (no new processes); refusing to run train.py")


# --------------------------------------------------------------------------------------------------
# The worker


class Worker:
    """One started worker (training or evaluation).

    ``payload_limits`` maps an incoming ``op`` to the largest payload it may carry (bytes; other ops
    carry none); the harness updates it before each request whose answer has a known size.
    """

    def __init__(
        self,
        spec: WorkerSpec,
        support: Support,
        scratch: Path,
        log: BinaryIO,
        payload_limits: dict[str, int],
        label: str,
    ) -> None:
        self.spec = spec
        self.label = label
        parent, child = socket.socketpair()
        argv, cwd = command(spec, support, child.fileno(), scratch)
        read_out, write_out = os.pipe()
        try:
            self.proc = subprocess.Popen(
                argv, cwd=cwd, env=dict(spec.env), stdin=subprocess.DEVNULL, stdout=write_out, stderr=write_out,
                pass_fds=(child.fileno(),), start_new_session=True,
            )  # fmt: skip
        finally:
            child.close()
            os.close(write_out)
        self.started = time.monotonic()
        self.sock = parent
        self.sock.settimeout(SEND_TIMEOUT)
        self.payload_limits = payload_limits
        self._frames = FrameBuffer(lambda header: self.payload_limits.get(str(header["op"]), 0))
        self._ready: list[tuple[dict[str, object], bytes]] = []
        self._selector = selectors.DefaultSelector()
        self._selector.register(self.sock, selectors.EVENT_READ)
        self._closed = False
        self._pump = threading.Thread(target=self._pump_output, args=(read_out, log), daemon=True, name=f"{label}-log")
        self._pump.start()
        self.host_pid: int | None = None
        self._tree: list[int] = []
        self._tree_scanned = -math.inf
        self._cpu_ticks = 0

    def _pump_output(self, fd: int, log: BinaryIO) -> None:
        prefix = f"{self.label}| ".encode()
        written = 0
        with os.fdopen(fd, "rb") as fh:
            for line in fh:
                if written < LOG_CAP_BYTES:
                    chunk = prefix + line[:4096] + (b"" if line.endswith(b"\n") else b"\n")
                    written += len(chunk)
                    if written >= LOG_CAP_BYTES:
                        chunk += prefix + b"[output past %d MiB not kept]\n" % (LOG_CAP_BYTES >> 20)
                    try:
                        log.write(chunk)
                        log.flush()
                    except (OSError, ValueError):
                        return

    # --- frames ------------------------------------------------------------------------------------
    def send(self, header: dict[str, object], payload: bytes | memoryview = b"") -> None:
        """Send a frame; a worker that does not read it within :data:`SEND_TIMEOUT` is stuck.

        Raises:
            WorkerError: the worker is gone or stuck.
        """
        try:
            head, body = encode(header, payload)
            self.sock.sendall(head)
            if body.nbytes:
                self.sock.sendall(body)
        except OSError as exc:
            raise WorkerError(f"{self.label} worker stopped reading ({exc})", outcome=self._death_outcome()) from None

    def recv(self, timeout: float) -> tuple[_Msg, bytes] | None:
        """The next message within ``timeout`` seconds, or None.

        Raises:
            WorkerError: the worker closed the connection, died, or sent a malformed frame.
        """
        deadline = time.monotonic() + max(0.0, timeout)
        while not self._ready:
            left = deadline - time.monotonic()
            if left < 0:
                return None
            if not self._selector.select(min(left, 0.25)):
                continue
            try:
                data = self.sock.recv(1 << 20)
            except OSError as exc:
                raise WorkerError(f"{self.label} worker connection failed: {exc}", outcome=self._death_outcome()) from None
            if not data:
                raise WorkerError(f"{self.label} worker exited without a result", outcome=self._death_outcome())
            try:
                self._ready.extend(self._frames.feed(data))
            except WireError as exc:
                raise WorkerError(f"{self.label} worker broke the harness protocol: {exc}") from None
        header, payload = self._ready.pop(0)
        return parse_message(header), payload

    def expect(self, kind: type[_Msg], timeout: float) -> tuple[_Msg, bytes]:
        """The next message, which must be ``kind`` or a :class:`Failure`, within ``timeout``.

        Raises:
            WorkerError: anything else, or nothing in time (outcome ``timeout``).
        """
        got = self.recv(timeout)
        if got is None:
            raise WorkerError(f"{self.label} worker did not answer within {timeout:.0f} s", outcome="timeout")
        if not isinstance(got[0], kind | Failure):
            raise WorkerError(f"{self.label} worker sent {got[0].model_dump()['op']!r} where {kind.__name__} was due")
        return got

    # --- process -----------------------------------------------------------------------------------
    def locate(self) -> int:
        """Find the worker's Python process (host PID) once it said hello: the leaf of its tree."""
        tree = process_tree(self.proc.pid)
        parents = {ppid for ppid, _ in tree.values()}
        leaves = [pid for pid in tree if pid not in parents]
        self.host_pid = max(leaves) if leaves else self.proc.pid
        return self.host_pid

    def cpu_seconds(self) -> float:
        """CPU seconds (user + system, all threads, reaped children) of the worker's process tree.

        The tree's membership is rescanned from ``/proc`` at most every :data:`TREE_RESCAN` seconds;
        in between only its known members are read (cumulative counters: a late rescan delays a new
        process's time, it never loses it — except for children reaped without ``wait``, which is
        why CPU-clock tracks forbid new processes altogether).
        """
        now = time.monotonic()
        if now - self._tree_scanned >= TREE_RESCAN:
            self._tree = list(process_tree(self.proc.pid))
            self._tree_scanned = now
        total = 0
        for pid in self._tree:
            stat = _stat(pid)
            if stat is not None:
                total += stat[1]
        self._cpu_ticks = max(self._cpu_ticks, total)  # a member that exited unreaped-then-reaped moves time upwards only
        return self._cpu_ticks / _CLK_TCK

    def alive(self) -> bool:
        return self.proc.poll() is None

    def _death_outcome(self) -> Literal["crash", "oom"]:
        try:
            code = self.proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            return "crash"
        return "oom" if code in (-signal.SIGKILL, 128 + signal.SIGKILL) else "crash"

    def kill(self) -> None:
        """SIGKILL the worker's whole session (bwrap then takes every process in its namespace along)."""
        if not self._closed:
            self._closed = True
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                _logger.error("%s worker (pid %d) did not die after SIGKILL", self.label, self.proc.pid)
            self._selector.close()
            self.sock.close()
            self._pump.join(timeout=5)

    def finish(self, timeout: float = 10.0) -> None:
        """Wait for a worker told to stop, then make sure nothing of it is left."""
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
        self.kill()
