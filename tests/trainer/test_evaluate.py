"""evaluate_bpb against hand-computed values; determinism; special tokens excluded; the contract checks."""

from __future__ import annotations

import math

import pytest
import torch

from autoresearch.trainer.evaluate import ContractError, check_causal, evaluate_bpb

V = 4
TOKEN_BYTES = torch.tensor([0, 1, 2, 3])  # token 0 is BOS (special, zero bytes)


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
        nxt = torch.roll(idx, shifts=-1, dims=1)
        return torch.nn.functional.one_hot(nxt, V).float() * 50


def test_uniform_model_hand_computed() -> None:
    rows = torch.tensor([[0, 1, 2, 0, 3]])  # targets 1, 2, 0, 3 → bytes 1 + 2 + 3 (BOS excluded)
    assert evaluate_bpb(Uniform(), rows, TOKEN_BYTES, batch_size=1) == pytest.approx(3 * math.log(4) / (math.log(2) * 6))


def test_special_tokens_are_excluded_from_nats_and_bytes() -> None:
    rows = torch.tensor([[0, 1, 0, 1, 0]])  # targets 1, 0, 1, 0: only the two 1s count
    assert evaluate_bpb(Uniform(), rows, TOKEN_BYTES, batch_size=4) == pytest.approx(2.0)  # 2·ln4 / (ln2·2)


def test_bigram_model_matches_numpy_by_hand() -> None:
    torch.manual_seed(0)
    table = torch.randn(V, V)
    rows = torch.tensor([[0, 1, 3, 2, 2], [0, 3, 3, 1, 0], [0, 2, 1, 1, 3]])
    logp = torch.log_softmax(table.double(), dim=-1)
    nats = bytes_ = 0.0
    for row in rows.tolist():
        for cur, nxt in zip(row[:-1], row[1:], strict=True):
            if TOKEN_BYTES[nxt] > 0:
                nats -= float(logp[cur, nxt])
                bytes_ += float(TOKEN_BYTES[nxt])
    expected = nats / (math.log(2) * bytes_)
    model = Bigram(table)
    got = [evaluate_bpb(model, rows, TOKEN_BYTES, batch_size=b) for b in (1, 2, 3, 8)]
    assert got[0] == pytest.approx(expected, rel=1e-6)
    assert max(got) - min(got) < 1e-6  # batch size changes nothing but rounding
    assert evaluate_bpb(model, rows, TOKEN_BYTES, batch_size=2) == evaluate_bpb(model, rows, TOKEN_BYTES, batch_size=2)
    assert model.training  # mode restored


def test_wrong_logits_shape_is_a_contract_error() -> None:
    class Wrong(torch.nn.Module):
        def forward(self, idx: torch.Tensor) -> torch.Tensor:
            return torch.zeros(*idx.shape, V + 1)

    with pytest.raises(ContractError, match="logits of shape"):
        evaluate_bpb(Wrong(), torch.tensor([[0, 1, 2]]), TOKEN_BYTES, batch_size=1)


def test_rows_without_bytes_are_refused() -> None:
    with pytest.raises(ValueError, match="no target"):
        evaluate_bpb(Uniform(), torch.tensor([[0, 0, 0]]), TOKEN_BYTES, batch_size=1)


def test_causality_check_catches_a_model_that_peeks_ahead() -> None:
    rows = torch.tensor([[0, 1, 2, 3, 1, 2, 3, 1, 2]])
    with pytest.raises(ContractError, match="not causal"):
        check_causal(PeeksAhead(), rows)
    check_causal(Bigram(torch.randn(V, V)), rows)  # a causal model passes
