"""The harness's budget clock and batch API, in-process (no subprocess)."""

from __future__ import annotations

import time

import pytest
import torch

from autoresearch.trainer import data, tracks
from autoresearch.trainer.harness import BudgetExhausted, Handle, NonFiniteLoss, ProgressWriter

TRACK = tracks.get_track("tiny", time_budget=0.3)
CORPUS = data.load_corpus(TRACK)


def _handle(warmup_batches: int = 2, warmup_seconds: float = 30.0) -> Handle:
    limits = tracks.HarnessLimits(warmup_batches, warmup_seconds, 0.0, 0.2, 60, 10, 60, 8)
    h = Handle(TRACK, limits, CORPUS, torch.device("cpu"), seed=0, progress=ProgressWriter(None))
    h._start()
    return h


def test_clock_starts_after_the_warmup_batches() -> None:
    h = _handle(warmup_batches=2)
    h.next_batch(1)
    h.next_batch(1)
    time.sleep(0.05)
    assert h.training_seconds() == 0.0 and not h.should_stop()
    h.next_batch(1)  # third call: the clock starts now
    time.sleep(0.35)
    assert h.training_seconds() >= 0.35 and h.should_stop() and h.progress() > 1
    assert h.total_tokens == 3 * 128 and h.timed_tokens == 128


def test_clock_starts_anyway_when_the_warmup_allowance_runs_out() -> None:
    h = _handle(warmup_batches=1000, warmup_seconds=0.1)
    time.sleep(0.25)
    assert 0.1 <= h.training_seconds() < 1.0  # counted from the end of the allowance


def test_next_batch_refuses_to_continue_past_the_over_budget_limit() -> None:
    h = _handle(warmup_batches=0)
    h.next_batch(1)
    time.sleep(0.6)  # limit: 0.3 × 1.0 + 0.2 s
    with pytest.raises(BudgetExhausted):
        h.next_batch(1)
    assert h.over_budget


def test_batches_are_shifted_bos_aligned_and_sized() -> None:
    h = _handle()
    x, y = h.next_batch(3)
    assert x.shape == y.shape == (3, TRACK.max_seq_len) and x.dtype == torch.int64
    assert (x[:, 0] == CORPUS.bos_id).all() and torch.equal(x[:, 1:], y[:, :-1])
    xs, _ = h.next_batch(2, 16)
    assert xs.shape == (2, 16)
    with pytest.raises(ValueError, match="seq_len"):
        h.next_batch(1, TRACK.max_seq_len + 1)
    with pytest.raises(ValueError, match="batch_size"):
        h.next_batch(0)


def test_should_stop_anticipates_half_a_step() -> None:
    h = _handle(warmup_batches=0)
    h.next_batch(1)
    h.report(0, 1.0)
    time.sleep(0.1)
    h.report(1, 1.0)  # steps take ~0.1 s
    assert 0.09 <= h.step_seconds < 0.3
    while not h.should_stop():
        time.sleep(0.005)
    assert h.training_seconds() >= TRACK.time_budget - h.step_seconds / 2 - 0.01
    assert h.training_seconds() < TRACK.time_budget


def test_report_flags_non_finite_loss() -> None:
    h = _handle()
    h.report(0, 2.5)
    with pytest.raises(NonFiniteLoss):
        h.report(1, float("inf"))
    assert h.num_steps == 2 and h.nonfinite and "step 1" in h.nonfinite
