"""protocol.source: the one source analysis of the project (seed-only, rebase, diff/patch).

Direction keys and near-duplicates are covered by tests/hub/test_directions.py and
tests/hub/test_units.py (the hub is their main user); this file pins what the client relies on.
"""

from __future__ import annotations

import pytest

from autoresearch.client.proposers.offline import apply_mutations, find_constants, mutations
from autoresearch.protocol import sha256_hex
from autoresearch.protocol.source import (
    MergeConflict,
    apply_diff,
    extract_directions,
    is_seed_only,
    rebase,
    seed_names,
    unified_diff,
)
from autoresearch.trainer.tracks import reference_source

REF = reference_source("cpu")
SEEDING = "torch.manual_seed(SEED + h.seed)"


@pytest.mark.parametrize(
    ("what", "child"),
    [
        ("the seed constant", REF.replace("SEED = 42", "SEED = 7")),
        ("the expression inside the seeding call (issue 14)", REF.replace(SEEDING, "torch.manual_seed(7 + h.seed)")),
        ("a second seeding call", REF.replace(SEEDING, SEEDING + "\n    torch.cuda.manual_seed_all(3)")),
        ("a seeding call removed", REF.replace("    " + SEEDING + "\n", "")),
    ],
)
def test_seed_only_whatever_the_spelling(what: str, child: str) -> None:
    """Catches: a seeding change labelled a real direction (the hub once ranked one as best)."""
    assert child != REF, what
    assert extract_directions(REF, child) == ["seed"], what


def test_generators_seeded_by_argument_or_keyword() -> None:
    parent = "BASE = 3\nrng = random.Random(BASE)\ngen = np.random.default_rng(seed=BASE + 1)\nx = rng.random() + gen.random()\n"
    assert seed_names(parent) == {"BASE"}
    assert extract_directions(parent, parent.replace("Random(BASE)", "Random(BASE * 2)")) == ["seed"]
    assert extract_directions(parent, parent.replace("seed=BASE + 1", "seed=5")) == ["seed"]
    assert extract_directions(parent, parent.replace("rng.random() +", "2 * rng.random() +")) == ["x"]


def test_seed_names_follow_the_data_flow() -> None:
    """Catches: a name-based rule (``*SEED*``) that calls a count of seeds a seed, or misses ``S``."""
    assert seed_names(REF) == {"SEED"}
    assert seed_names("S = 1\nrandom.seed(S)\n") == {"S"}
    assert seed_names("SEED = 1\nrandom.seed(SEED)\nx = list(range(SEED))\n") == frozenset()
    counted = "NUM_SEEDS = 2\nfor i in range(NUM_SEEDS):\n    random.seed(i)\n"
    assert seed_names(counted) == {"i"}


def test_a_count_of_seeds_is_a_real_change() -> None:
    """The documented decision: ``NUM_SEEDS`` changes how much is computed, so it is measured."""
    parent = "NUM_SEEDS = 2\nfor i in range(NUM_SEEDS):\n    random.seed(i)\n"
    assert extract_directions(parent, parent.replace("= 2", "= 4")) == ["NUM_SEEDS ↑"]
    assert not is_seed_only(extract_directions(parent, parent.replace("= 2", "= 4")))


def test_a_seed_that_also_sets_a_size_is_not_seed_only() -> None:
    parent = "SEED = 1\nrandom.seed(SEED)\nx = list(range(SEED))\n"
    assert extract_directions(parent, parent.replace("SEED = 1", "SEED = 2")) == ["SEED ↑"]


def test_seed_mixed_with_a_real_change_keeps_both() -> None:
    child = REF.replace("SEED = 42", "SEED = 7").replace("DEPTH = 4", "DEPTH = 5")
    assert "DEPTH = 5" in child
    assert extract_directions(REF, child) == ["DEPTH ↑", "seed"]


def _single_changes() -> list[tuple[str, str]]:
    """One mutation of every constant of the reference, in file order: (direction, child)."""
    out = []
    for const in find_constants(REF):
        m = mutations(const)[0]
        out.append((m.direction, apply_mutations(REF, [m])))
    return out


def test_rebase_merges_changes_on_adjacent_lines() -> None:
    """Catches: ``git merge-file`` semantics (adjacent edits conflict), which made the GPU wait for a
    fresh proposal on 9 % of pairs of single-constant changes (bench/merge_bench.py has the figures)."""
    changes = _single_changes()
    assert len(changes) >= 10
    for (best_dir, best), (prop_dir, proposal) in zip(changes, changes[1:], strict=False):
        merged = rebase(REF, best, proposal)
        assert extract_directions(best, merged) == [prop_dir]
        assert extract_directions(REF, merged) == sorted({best_dir, prop_dir})


def test_rebase_refuses_overlap_and_drift() -> None:
    a = REF.replace("DEPTH = 4", "DEPTH = 5")
    b = REF.replace("DEPTH = 4", "DEPTH = 6")
    with pytest.raises(MergeConflict) as overlap:
        rebase(REF, a, b)
    assert overlap.value.reason == "conflict"
    with pytest.raises(MergeConflict) as same:  # the new best already holds the proposal: nothing left to run
        rebase(REF, a, a)
    assert same.value.reason == "drift"


@pytest.mark.parametrize("child", [REF.replace("DEPTH = 4", "DEPTH = 5"), REF.rstrip("\n"), REF + "X = 1", REF])
def test_unified_diff_round_trips_through_apply_diff(child: str) -> None:
    assert apply_diff(REF, unified_diff(REF, child), sha256_hex(child)) == child


def _fresh_summary(text: str) -> tuple[dict[str, list[str]], dict[str, list[str]], frozenset[str]]:
    """The summary computed without the statement memos (every statement dumped and read from its own tree)."""
    from autoresearch.protocol import source as src
    from autoresearch.protocol.canonical import parse_source

    summary = src._summarise(parse_source(text))
    return dict(summary.statements), dict(summary.blanked), summary.seed_names


@pytest.mark.parametrize(
    ("what", "parent", "child"),
    [
        ("decorators differ, body the same", "import f\n@f.a\ndef g():\n    return 1\n", "import f\n@f.b\ndef g():\n    return 1\n"),
        ("CRLF line ends", "A = 1\r\nB = 2\r\n", "A = 1\r\nB = 3\r\n"),
        ("lone CR line ends", "A = 1\rB = 2\r", "A = 1\rB = 3\r"),
        ("non-ASCII text before the change (byte offsets)", "S = 'ü→'; A = 1\nB = 2\n", "S = 'ü→'; A = 2\nB = 2\n"),
        ("two statements on one line", "A = 1; B = 2\n", "A = 1; B = 3\n"),
        ("a seed name read by a later statement", "import torch\nS = 1\ntorch.manual_seed(S)\nA = 1\n",
         "import torch\nS = 1\ntorch.manual_seed(S)\nA = S + 2\n"),
        ("a method whose text matches a function", "def f(x):\n    return x\nclass C:\n    def f(x):\n        return x + 1\n",
         "def f(x):\n    return x\nclass C:\n    def f(x):\n        return x\n"),
    ],
)
def test_memoised_statement_dumps_equal_fresh_ones(what: str, parent: str, child: str) -> None:
    """Catches: the per-statement memo (keyed by a statement's exact source bytes) handing one
    statement another's dump — a wrong direction, or a real change read as no change."""
    from autoresearch.protocol import source as src

    for text in (parent, child):
        memo = src._analysis(text).summary
        assert (dict(memo.statements), dict(memo.blanked), memo.seed_names) == _fresh_summary(text), what
    assert extract_directions(parent, child) != [], what
