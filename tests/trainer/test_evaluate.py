"""The fixed metric and its probes: bits per byte from scores, the scoring worker's maths, and
probe plans and checks against honest and cheating score tables (no subprocess)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from autoresearch.trainer.evaluate import ProbeFailed, bits_per_byte, check_probes, plan_probes
from autoresearch.trainer.worker.scoring import score

V = 4
TOKEN_BYTES = np.array([0, 1, 2, 3])  # token 0 is BOS (special, zero bytes)


class Uniform(torch.nn.Module):
    """Logits all zero: every target costs ln V nats."""

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return torch.zeros(*idx.shape, V)


class Bigram(torch.nn.Module):
    """Logits of position t depend only on token t (a fixed table)."""

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.table = torch.nn.Parameter(table)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.table[idx]


class PeeksAhead(torch.nn.Module):
    """Cheats: logits at t put all mass on the token at t + 1."""

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.one_hot(torch.roll(idx, shifts=-1, dims=1), V).float() * 50


def _bpb(model: torch.nn.Module, rows: np.ndarray) -> float:
    lse, tgt, _ = score(model, torch.from_numpy(rows), V)
    return bits_per_byte(lse.numpy(), tgt.numpy(), rows[:, 1:], TOKEN_BYTES)


def test_uniform_model_hand_computed() -> None:
    rows = np.array([[0, 1, 2, 0, 3]])  # targets 1, 2, 0, 3 → bytes 1 + 2 + 3 (BOS excluded)
    assert _bpb(Uniform(), rows) == pytest.approx(3 * math.log(4) / (math.log(2) * 6))


def test_special_tokens_are_excluded_from_nats_and_bytes() -> None:
    rows = np.array([[0, 1, 0, 1, 0]])  # targets 1, 0, 1, 0: only the two 1s count
    assert _bpb(Uniform(), rows) == pytest.approx(2.0)  # 2·ln4 / (ln2·2)


def test_bigram_model_matches_a_hand_computation() -> None:
    torch.manual_seed(0)
    table = torch.randn(V, V)
    rows = np.array([[0, 1, 3, 2, 2], [0, 3, 3, 1, 0], [0, 2, 1, 1, 3]])
    logp = torch.log_softmax(table.double(), dim=-1)
    nats = nbytes = 0.0
    for row in rows.tolist():
        for cur, nxt in zip(row[:-1], row[1:], strict=True):
            if TOKEN_BYTES[nxt] > 0:
                nats -= float(logp[cur, nxt])
                nbytes += float(TOKEN_BYTES[nxt])
    assert _bpb(Bigram(table), rows) == pytest.approx(nats / (math.log(2) * nbytes), rel=1e-6)


def test_rows_without_bytes_are_an_error() -> None:
    with pytest.raises(ValueError, match="no target"):
        _bpb(Uniform(), np.array([[0, 0, 0]]))


def test_wrong_logit_shape_is_a_type_error() -> None:
    class Wrong(torch.nn.Module):
        def forward(self, idx: torch.Tensor) -> torch.Tensor:
            return torch.zeros(*idx.shape, V + 1)

    with pytest.raises(TypeError, match="logits of shape"):
        score(Wrong(), torch.tensor([[0, 1, 2]]), V)


# --------------------------------------------------------------------------------------------------
# probes: worker A scores the rows, worker B the plan; the check compares them


def _rows(n: int = 24, width: int = 33, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rows = rng.integers(1, V, size=(n, width))
    rows[:, 0] = 0
    return rows


def _scores(model: torch.nn.Module, rows: np.ndarray, audits: dict[int, list[int]]) -> tuple[tuple[np.ndarray, np.ndarray], dict[tuple[int, int], np.ndarray]]:
    lse, tgt, logits = score(model, torch.from_numpy(rows), V)
    shown = {(i, t): logits[i, t].float().numpy() for i, ts in audits.items() for t in ts}
    return (lse.numpy(), tgt.numpy()), shown


def _check(model_a: torch.nn.Module, model_b: torch.nn.Module, rows: np.ndarray, seed: int = 1) -> int:
    plan = plan_probes(rows, 16, np.random.default_rng(seed))
    a, a_rows = _scores(model_a, rows, plan.audits_a())
    b, b_rows = _scores(model_b, plan.rows, plan.audits_b())
    return check_probes(plan, rows, a, b, a_rows, b_rows, "cpu")


def test_plan_mixes_probes_and_replays_of_real_rows() -> None:
    rows = _rows()
    plan = plan_probes(rows, 16, np.random.default_rng(3))
    kinds = [kind for kind, _ in plan.kinds]
    assert plan.rows.shape == (16, rows.shape[1]) and kinds.count("probe") == 12 and kinds.count("replay") == 4
    for j, (kind, k) in enumerate(plan.kinds):
        if kind == "replay":
            assert (plan.rows[j] == rows[k]).all()
        else:
            p = plan.probes[k]
            assert 1 <= p.split < rows.shape[1] and (plan.rows[j, : p.split] == rows[p.source, : p.split]).all()
            assert plan.rows[j, p.split] != rows[p.source, p.split]  # the target at split − 1 differs


def test_an_honest_causal_model_passes_every_probe() -> None:
    model = Bigram(torch.randn(V, V))
    assert _check(model, model, _rows()) == 16


def test_a_model_that_looks_ahead_fails_a_causality_probe() -> None:
    with pytest.raises(ProbeFailed, match="causality probe"):
        _check(PeeksAhead(), PeeksAhead(), _rows())


def test_a_model_that_looks_ahead_only_in_big_batches_is_caught() -> None:
    """Attack: be causal for single rows (the old probe), look ahead when the batch has more."""

    class Sneaky(torch.nn.Module):
        def forward(self, idx: torch.Tensor) -> torch.Tensor:
            return (PeeksAhead() if idx.size(0) > 1 else Uniform())(idx)

    with pytest.raises(ProbeFailed):
        _check(Sneaky(), Sneaky(), _rows())


def test_state_carried_across_batches_is_caught_by_a_replay() -> None:
    """Attack: learn from evaluation batches as they pass (the fresh worker B has not seen them)."""

    class Learner(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.table = torch.nn.Parameter(torch.zeros(V, V))

        def forward(self, idx: torch.Tensor) -> torch.Tensor:
            out = self.table[idx].clone()
            with torch.no_grad():  # "dynamic evaluation": count bigrams seen so far
                self.table.index_put_((idx[:, :-1].reshape(-1), idx[:, 1:].reshape(-1)), torch.tensor(1.0), accumulate=True)
            return out

    rows = _rows()
    a_model = Learner()
    for i in range(0, len(rows), 8):  # A sees all rows batch by batch before B sees anything
        a_model(torch.from_numpy(rows[i : i + 8]))
    with pytest.raises(ProbeFailed):
        _check(a_model, Learner(), rows)


def test_scores_that_do_not_match_the_logits_shown_are_caught() -> None:
    """Attack: report a lower log-sum-exp than the logits have (made-up scores), show honest rows."""
    rows = _rows()
    model = Bigram(torch.randn(V, V))
    plan = plan_probes(rows, 16, np.random.default_rng(1))
    (lse, tgt), a_rows = _scores(model, rows, plan.audits_a())
    b, b_rows = _scores(model, plan.rows, plan.audits_b())
    with pytest.raises(ProbeFailed, match="does not match"):
        check_probes(plan, rows, (lse - 0.5, tgt), (b[0] - 0.5, b[1]), a_rows, b_rows, "cpu")
