"""The harness's budget clock (trusted side): what "training seconds" means on each track.

Two kinds (``HarnessLimits.clock``):

``cpu``  (``cpu``, ``tiny``) the CPU time, user + system, of the training worker's whole process
         tree, read from ``/proc`` by the harness, from the moment the worker is handed the track
         (after its interpreter and torch are loaded, before ``train.py`` is imported) until the
         model's bytes have arrived. Other load on the machine slows the wall clock, not this one,
         so it cannot decide a keep; extra threads spend the budget as fast as they help. There is
         no warm-up allowance: nothing compiles on these tracks.
``wall`` (GPU tracks) wall time on the harness's monotonic clock, from the moment the worker is
         handed the track until the model's bytes arrive, minus a warm-up allowance for
         compilation: the first ``warmup_batches`` batches, but never more than ``warmup_seconds``
         (so warm-up can hide at most that much training, and at most that many batches of data).

Either way the worker cannot move the clock: it only sees the readings the harness sends along.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal


class BudgetClock:
    """Training seconds for one run.

    Args:
        kind: ``cpu`` or ``wall`` (see the module docstring).
        time_budget: the track's budget, seconds.
        limit: training seconds past which the run is ``over_budget``.
        warmup_batches, warmup_seconds: the warm-up allowance (``wall`` only).
        cpu_seconds: reads the worker tree's CPU seconds (``cpu`` only).
        now: the wall clock (``time.monotonic``; tests pass a fake).
    """

    def __init__(
        self,
        kind: Literal["cpu", "wall"],
        time_budget: float,
        limit: float,
        *,
        warmup_batches: int = 0,
        warmup_seconds: float = 0.0,
        cpu_seconds: Callable[[], float] | None = None,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        if kind == "cpu" and cpu_seconds is None:
            raise ValueError("a cpu clock needs a cpu_seconds reader")
        self.kind = kind
        self.time_budget = time_budget
        self.limit = limit
        self._warmup_batches = warmup_batches
        self._warmup_seconds = warmup_seconds
        self._cpu = cpu_seconds
        self._now = now
        self._t0: float | None = None  # wall time the worker was handed the track
        self._cpu0 = 0.0
        self._start: float | None = None  # wall: when the counted part began
        self._frozen: tuple[float, float] | None = None  # (seconds, wall seconds) once stopped
        self.batches = 0

    def begin(self) -> None:
        """The worker was just handed the track: the run's time starts now."""
        self._t0 = self._now()
        if self.kind == "cpu":
            assert self._cpu is not None
            self._cpu0 = self._cpu()
        elif self._warmup_batches == 0:
            self._start = self._t0

    @property
    def started(self) -> bool:
        """True once training seconds count (at :meth:`begin` on ``cpu``; after warm-up on ``wall``)."""
        self._tick()
        return self.kind == "cpu" or self._start is not None

    def _tick(self) -> None:
        if self.kind == "wall" and self._start is None and self._t0 is not None and self._frozen is None:
            if self._now() >= self._t0 + self._warmup_seconds:
                self._start = self._t0 + self._warmup_seconds

    def on_batch(self) -> None:
        """Count a batch request; the ``warmup_batches + 1``-th ends the warm-up on ``wall``."""
        self.batches += 1
        self._tick()
        if self.kind == "wall" and self._start is None and self.batches > self._warmup_batches:
            self._start = self._now()

    def seconds(self) -> float:
        """Training seconds so far (0 before :meth:`begin`, frozen after :meth:`stop`)."""
        if self._frozen is not None:
            return self._frozen[0]
        if self._t0 is None:
            return 0.0
        if self.kind == "cpu":
            assert self._cpu is not None
            return max(0.0, self._cpu() - self._cpu0)
        self._tick()
        return 0.0 if self._start is None else max(0.0, self._now() - self._start)

    def wall_seconds(self) -> float:
        """Wall seconds since :meth:`begin` (frozen after :meth:`stop`)."""
        if self._frozen is not None:
            return self._frozen[1]
        return 0.0 if self._t0 is None else self._now() - self._t0

    def over(self) -> bool:
        """True once training seconds passed the over-budget limit."""
        return self.seconds() > self.limit

    def stop(self) -> float:
        """Freeze the clock (the model arrived); returns the training seconds."""
        if self._frozen is None:
            self._frozen = (self.seconds(), self.wall_seconds())
        return self._frozen[0]
