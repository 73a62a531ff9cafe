"""The offline proposer: libcst mutations of module-level constants, novelty, hub suggestions."""

from __future__ import annotations

import ast

import pytest

from autoresearch.client.errors import ProposerError
from autoresearch.client.proposers import ProposalContext, make_proposer
from autoresearch.client.proposers.offline import OfflineProposer, find_constants, mutations
from autoresearch.protocol import Suggestion, canonical_source_sha256
from autoresearch.trainer import tracks
from autoresearch.trainer.policy import check_source

SOURCE = '''"""toy"""
import torch

DEPTH = 4  # layers
WIDTH = 96  # channels
BATCH = 2**10  # tokens
MATRIX_LR = 0.04  # Muon LR
WARMDOWN_RATIO = 0.5  # fraction
WEIGHT_DECAY = 0.0
WINDOW_PATTERN = "SSSL"  # windows
DEVICE = "cuda"
SEED = 42
TIME_BUDGET = 300


def train(h):
    LOCAL = 3
    return torch.nn.Linear(DEPTH, WIDTH)
'''


def _values(source: str) -> dict[str, object]:
    return {c.name: c.value for c in find_constants(source)}


def test_finds_only_mutable_module_constants() -> None:
    found = _values(SOURCE)
    assert found == {
        "DEPTH": 4,
        "WIDTH": 96,
        "BATCH": 10,  # exponent of 2**10
        "MATRIX_LR": 0.04,
        "WARMDOWN_RATIO": 0.5,
        "WEIGHT_DECAY": 0.0,
        "WINDOW_PATTERN": "SSSL",
    }  # not DEVICE (not a window pattern), SEED, TIME_BUDGET, nor the function's LOCAL


@pytest.mark.parametrize(
    ("name", "check"),
    [
        ("DEPTH", lambda v: isinstance(v, int) and v in (2, 8)),  # power of two stays one
        ("WIDTH", lambda v: isinstance(v, int) and v in (72, 120)),  # step of 25 %
        ("BATCH", lambda v: v in ("2**9", "2**11")),
        ("MATRIX_LR", lambda v: isinstance(v, float) and v != 0.04),
        ("WARMDOWN_RATIO", lambda v: isinstance(v, float) and 0 < v < 1),
        ("WEIGHT_DECAY", lambda v: v == 0.1),
        ("WINDOW_PATTERN", lambda v: isinstance(v, str) and set(v) <= {"S", "L"} and v != "SSSL"),
    ],
)
def test_mutation_rules(name: str, check) -> None:  # type: ignore[no-untyped-def]
    const = next(c for c in find_constants(SOURCE) if c.name == name)
    muts = mutations(const)
    assert muts
    for m in muts:
        value = m.new_code if "**" in m.new_code else ast.literal_eval(m.new_code)
        assert check(value), (name, m.new_code)
        assert m.description == f"{name} {const.code} → {m.new_code}"


def test_proposals_parse_keep_comments_and_never_repeat() -> None:
    proposer = OfflineProposer(seed=1)
    tried: set[str] = set()
    for _ in range(25):
        proposal = proposer.propose(ProposalContext(program_md="", train_py=SOURCE, tried=frozenset(tried)))
        child = canonical_source_sha256(proposal.source)
        assert child not in tried
        assert child != canonical_source_sha256(SOURCE)
        assert "# Muon LR" in proposal.source and "def train(h):" in proposal.source
        assert " → " in proposal.description
        assert "SEED = 42" in proposal.source and "TIME_BUDGET = 300" in proposal.source
        tried.add(child)


def test_exhausted_when_everything_was_tried() -> None:
    source = "import torch\nDEPTH = 4\n"
    tried = {canonical_source_sha256(f"import torch\nDEPTH = {d}\n") for d in (2, 8)}
    with pytest.raises(ProposerError, match="tried every mutation"):
        OfflineProposer().propose(ProposalContext(program_md="", train_py=source, tried=frozenset(tried)))


def test_exploit_suggestion_pushes_that_direction() -> None:
    suggestion = Suggestion(kind="exploit", direction="MATRIX_LR ↑", rationale="pays", score=1.0)
    ups = 0
    for seed in range(12):
        proposal = OfflineProposer(seed=seed).propose(ProposalContext(program_md="", train_py=SOURCE, suggestions=[suggestion]))
        new = _values(proposal.source)
        ups += new["MATRIX_LR"] > 0.04  # type: ignore[operator]
    assert ups >= 6  # sampled first three times in four


def test_avoid_suggestion_is_never_proposed() -> None:
    avoid = [Suggestion(kind="avoid", direction=f"{n} {a}", rationale="keeps failing") for n in ("DEPTH", "WIDTH", "MATRIX_LR") for a in "↑↓"]
    tried: set[str] = set()
    for _ in range(15):
        proposal = OfflineProposer().propose(ProposalContext(program_md="", train_py=SOURCE, suggestions=avoid, tried=frozenset(tried)))
        tried.add(canonical_source_sha256(proposal.source))
        new = _values(proposal.source)
        assert (new["DEPTH"], new["WIDTH"], new["MATRIX_LR"]) == (4, 96, 0.04), proposal.description


def test_combine_suggestion_runs_the_hubs_train_py() -> None:
    merged = SOURCE.replace("DEPTH = 4", "DEPTH = 8").replace("MATRIX_LR = 0.04", "MATRIX_LR = 0.05")
    suggestion = Suggestion(kind="combine", direction="DEPTH ↑ + MATRIX_LR ↑", rationale="two keeps", score=2.0, train_py=merged)
    seen = {OfflineProposer(seed=s).propose(ProposalContext(program_md="", train_py=SOURCE, suggestions=[suggestion])).source for s in range(8)}
    assert merged in seen


def test_reference_train_py_mutations_pass_the_policy() -> None:
    source = tracks.reference_source("tiny")
    proposal = make_proposer("offline").propose(ProposalContext(program_md="", train_py=source))
    assert check_source(proposal.source) == []
    assert proposal.source != source
