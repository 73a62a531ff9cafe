"""The harness's budget clock (in-process, fake clocks) and the worker handle's checks."""

from __future__ import annotations

import socket

import pytest

from autoresearch.trainer.budget import BudgetClock
from autoresearch.trainer.worker.handle import Handle
from autoresearch.trainer.worker.wire import Connection


class Fake:
    """A settable clock (seconds)."""

    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_cpu_clock_counts_cpu_time_from_begin_not_wall_time() -> None:
    wall, cpu = Fake(), Fake()
    clock = BudgetClock("cpu", 1.0, 1.5, cpu_seconds=cpu, now=wall)
    cpu.t = 7.0  # the interpreter and torch loaded before begin: not counted
    clock.begin()
    assert clock.started and clock.seconds() == 0.0
    wall.t += 10.0  # a loaded machine: ten wall seconds …
    cpu.t += 0.4  # … but the worker only got 0.4 s of CPU
    assert clock.seconds() == pytest.approx(0.4) and clock.wall_seconds() == pytest.approx(10.0) and not clock.over()
    cpu.t += 1.2
    assert clock.over()
    assert clock.stop() == pytest.approx(1.6)
    cpu.t += 5
    assert clock.seconds() == pytest.approx(1.6)  # frozen once the model arrived


def test_wall_clock_starts_after_the_warmup_batches() -> None:
    wall = Fake()
    clock = BudgetClock("wall", 1.0, 1.5, warmup_batches=2, warmup_seconds=30.0, now=wall)
    clock.begin()
    clock.on_batch()
    clock.on_batch()
    wall.t += 5.0  # compiling: free
    assert not clock.started and clock.seconds() == 0.0
    clock.on_batch()  # the third batch starts the clock
    wall.t += 0.5
    assert clock.started and clock.seconds() == pytest.approx(0.5)


def test_wall_clock_warmup_is_capped_in_seconds() -> None:
    """Attack: take the warm-up batches, then train on them for minutes before asking for more."""
    wall = Fake()
    clock = BudgetClock("wall", 1.0, 1.5, warmup_batches=20, warmup_seconds=3.0, now=wall)
    clock.begin()
    clock.on_batch()
    wall.t += 10.0
    assert clock.started and clock.seconds() == pytest.approx(7.0) and clock.over()


def test_a_cpu_clock_needs_a_reader() -> None:
    with pytest.raises(ValueError, match="cpu_seconds"):
        BudgetClock("cpu", 1.0, 1.5)


def _handle() -> Handle:
    a, _b = socket.socketpair()
    setup = {"device": "cpu", "vocab_size": 257, "max_seq_len": 16, "bos_id": 256, "seed": 0, "time_budget": 1.0, "clock": "cpu"}
    return Handle(Connection(a, lambda h: 0), setup)


@pytest.mark.parametrize("args", [(0,), (True,), (1.5,), (2, 17), (2, 0), (2, "8")])
def test_next_batch_refuses_bad_sizes_before_asking(args: tuple[object, ...]) -> None:
    with pytest.raises(ValueError, match="batch_size|seq_len"):
        _handle().next_batch(*args)  # type: ignore[arg-type]


def test_should_stop_is_false_before_the_first_batch() -> None:
    h = _handle()
    assert not h.should_stop() and h.progress() == 0.0 and h.time_left() == 1.0
