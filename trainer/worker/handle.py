"""The handle ``h`` that ``train(h)`` gets, inside the sandbox (untrusted side).

Batches come from the harness over the worker's socket and the budget clock is the harness's: each
batch reply carries the harness's training seconds, and between replies the handle extrapolates
with the same kind of clock locally (the process's CPU time on ``cpu``/``tiny``, wall time on GPU
tracks). ``should_stop()`` and friends are therefore advice for an honest ``train.py``; what
decides ``over_budget`` is the harness's own reading, which nothing in this process can change.
"""

from __future__ import annotations

import math
import time

import torch

from .wire import Connection


class BudgetExhausted(BaseException):  # noqa: N818 - a control-flow signal, like StopIteration
    """Raised by ``h.next_batch`` once the harness refuses more batches (past the over-budget limit).

    A BaseException so that a ``train.py`` catching ``Exception`` does not swallow it; swallowing it
    anyway changes nothing, because the harness has already recorded the overrun.
    """


class NonFiniteLoss(BaseException):  # noqa: N818
    """Raised by ``h.report`` for a NaN or infinite loss (the harness ends the run as ``nan``)."""


class Handle:
    """Data, sizes, the budget clock and a progress channel for ``train(h)``.

    Attributes: ``device`` (torch.device), ``vocab_size``, ``max_seq_len``, ``bos_id``, ``seed``,
    ``time_budget`` (seconds of the track's budget clock).
    """

    def __init__(self, conn: Connection, setup: dict[str, object]) -> None:
        self._conn = conn
        self.device = torch.device(str(setup["device"]))
        self.vocab_size = int(setup["vocab_size"])  # type: ignore[call-overload]
        self.max_seq_len = int(setup["max_seq_len"])  # type: ignore[call-overload]
        self.bos_id = int(setup["bos_id"])  # type: ignore[call-overload]
        self.seed = int(setup["seed"])  # type: ignore[call-overload]
        self.time_budget = float(setup["time_budget"])  # type: ignore[arg-type]
        self._local = time.process_time if setup["clock"] == "cpu" else time.monotonic
        self._clock = 0.0  # harness training seconds at the last reply
        self._clock_started = False
        self._local_at_reply = self._local()
        self._last_report: float | None = None
        self.step_seconds = 0.0  # local duration of the last step (between two reports)

    # --- the clock (extrapolated from the harness's last reading) ---------------------------------
    def training_seconds(self) -> float:
        """Seconds on the harness's budget clock, extrapolated since its last reply (0 before it starts)."""
        if not self._clock_started:
            return 0.0
        return self._clock + (self._local() - self._local_at_reply)

    def time_left(self) -> float:
        """Seconds of budget left (negative once over)."""
        return self.time_budget - self.training_seconds()

    def should_stop(self) -> bool:
        """True when the step about to start would end nearer past the budget than the last one
        ended before it: ``training_seconds + step_seconds / 2 >= time_budget`` (docs/trainer.md)."""
        return self.training_seconds() + self.step_seconds / 2 >= self.time_budget

    def progress(self) -> float:
        """Fraction of the budget used, 0 at the clock start, 1 at the budget (can exceed 1)."""
        return self.training_seconds() / self.time_budget

    # --- data --------------------------------------------------------------------------------------
    def next_batch(self, batch_size: int, seq_len: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The next training batch: inputs and targets, each ``(batch_size, seq_len)`` int64 on
        ``h.device`` (``seq_len`` defaults to ``max_seq_len``); every row starts with BOS, no padding.

        Raises:
            BudgetExhausted: the harness refuses more batches (training time past the limit).
            ValueError: ``batch_size`` is not a positive int, or ``seq_len`` not in 1..max_seq_len.
        """
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        T = self.max_seq_len if seq_len is None else seq_len
        if not isinstance(T, int) or isinstance(T, bool) or not 1 <= T <= self.max_seq_len:
            raise ValueError(f"seq_len must be an int in 1..{self.max_seq_len}, got {seq_len!r}")
        self._conn.send({"op": "batch", "batch_size": batch_size, "seq_len": T})
        header, payload = self._conn.recv()
        if header["op"] == "stop":
            raise BudgetExhausted(str(header.get("reason", "the harness refused more batches")))
        self._clock = float(header["clock"])  # type: ignore[arg-type]
        self._clock_started = bool(header["clock_started"])
        self._local_at_reply = self._local()
        rows = torch.frombuffer(bytearray(payload), dtype=torch.int32).view(batch_size, T + 1).long()  # (B, T+1)
        if self.device.type == "cuda":
            rows = rows.pin_memory().to(self.device, non_blocking=True)
        return rows[:, :-1].contiguous(), rows[:, 1:].contiguous()

    def report(self, step: int, loss: float) -> None:
        """Report one optimizer step's loss (nats per token): live progress for the volunteer.

        Raises:
            NonFiniteLoss: ``loss`` is not finite (the run ends as ``nan``).
        """
        value = float(loss)
        now = self._local()
        if self._last_report is not None:
            self.step_seconds = now - self._last_report
        self._last_report = now
        finite = math.isfinite(value)
        self._conn.send({"op": "report", "step": int(step), "loss": value if finite else None})
        if not finite:
            raise NonFiniteLoss(f"non-finite training loss {value} at step {step}")
