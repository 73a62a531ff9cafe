"""The suggestion engine on a seeded input: typed, ranked, evidenced, deterministic and spread."""

from __future__ import annotations

import difflib
from datetime import UTC, datetime, timedelta

import pytest

from autoresearch.hub import suggestions
from autoresearch.hub.suggestions import posterior, suggest
from autoresearch.protocol import (
    CurveFit,
    DirectionByClass,
    DirectionStats,
    ExperimentRecord,
    ExperimentView,
    Normalised,
    Replications,
    RunMetrics,
    SoftwareVersions,
    Suggestion,
    canonical_source_sha256,
    record_id,
    sha256_hex,
)
from autoresearch.protocol import best as rule
from autoresearch.protocol.source import extract_directions

try:  # tests/hub is a package in some layouts and a rootdir on sys.path in others
    from .test_directions import PARENT, edit
except ImportError:
    from test_directions import PARENT, edit  # type: ignore[no-redef]

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
H100 = "NVIDIA H100 80GB HBM3"
A100 = "NVIDIA A100-SXM4-40GB"
ALICE = "a" * 64
BOB = "b" * 64


def fake_id(text: str) -> str:
    return sha256_hex(text)


def make_view(
    child: str,
    *,
    z: float,
    key_id: str = ALICE,
    hardware_class: str = H100,
    parent: str = PARENT,
    replications: int = 1,
) -> ExperimentView:
    """A kept experiment parent → child as the hub would serve it."""
    record = ExperimentRecord(
        track="tiny-000000000000",
        parent_sha256=sha256_hex(parent),
        child_sha256=sha256_hex(child),
        parent_canonical_sha256=canonical_source_sha256(parent),
        child_canonical_sha256=canonical_source_sha256(child),
        diff="".join(
            difflib.unified_diff(
                parent.splitlines(True), child.splitlines(True), "a/train.py", "b/train.py"
            )
        ),
        description="test change",
        outcome="ok",
        status="keep",
        metrics=RunMetrics(val_bpb=1.0 - 0.002 * z),
        parent_val_bpb=1.0,
        normalised=Normalised(delta_val_bpb=-0.002 * z, sigma=0.002, z=z),
        hardware_class=hardware_class,
        software=SoftwareVersions(python="3.11.7"),
        harness_version="1",
        created_at=NOW - timedelta(hours=1),
    )
    rid = record_id(record)
    candidate = rule.Candidate(
        track=record.track,
        hardware_class=hardware_class,
        run=rule.Evidence(
            experiment_id=rid, key_id=key_id, val_bpb=1.0 - 0.002 * z, parent_val_bpb=1.0,
            calibration=calibration_of(key_id),
        ),
    )
    assessment = rule.assess(candidate)
    return ExperimentView(
        id=rid,
        key_id=key_id,
        client_name="alice",
        received_at=NOW - timedelta(hours=1),
        record=record,
        directions=extract_directions(parent, child),
        replications=Replications(
            n=replications, hardware_classes=[hardware_class], experiment_ids=[rid]
        ),
        normalised=rule.normalise(candidate.run.calibration, 1.0 - 0.002 * z, 1.0),
        calibration_id=calibration_of(key_id).id,
        verdict=assessment.verdict,
        assessment=assessment,
        needs_replication=assessment.verdict == "needs_replication",
    )


def calibration_of(key_id: str) -> rule.CalibrationFacts:
    """The key's own calibration: σ = 0.002 bpb, curve 0.9 + 0.1·t^(−0.5) (budget units)."""
    return rule.CalibrationFacts(
        id=fake_id(f"cal-{key_id}"), fingerprint=fake_id(f"points-{key_id}"), sigma=0.002,
        fit=CurveFit(a=0.1, b=0.5, c=0.9, rmse=0.0), time_budget_seconds=1.0, min_budget_seconds=0.25,
        max_budget_seconds=2.0,
    )


def stat(
    direction: str, tries: int, keeps: int, crashes: int, mean_z: float | None, **kw: object
) -> DirectionStats:
    return DirectionStats(
        direction=direction,
        tries=tries,
        keeps=keeps,
        crashes=crashes,
        mean_z=mean_z,
        evidence=[fake_id(f"{direction}-{i}") for i in range(tries)],
        **kw,
    )  # type: ignore[arg-type]


LR_UP = edit("MATRIX_LR = 0.04 ", "MATRIX_LR = 0.05 ")
EMB_DOWN = edit("EMBEDDING_LR = 0.6", "EMBEDDING_LR = 0.4")
GELU = edit("F.relu(x).square()", "F.gelu(x)")
WEAK = edit("HEAD_DIM = 64", "HEAD_DIM = 48")
KEPT = [
    make_view(LR_UP, z=2.5),
    make_view(EMB_DOWN, z=2.2, key_id=BOB, hardware_class=A100),
    make_view(GELU, z=1.2),
    make_view(WEAK, z=0.4),  # kept by noise, most likely: never merged, never replicated
]
SOURCES = {sha256_hex(s): s for s in (PARENT, LR_UP, EMB_DOWN, GELU, WEAK)}
STATS = [
    stat("MATRIX_LR ↑", 4, 3, 0, 1.8),
    stat("EMBEDDING_LR ↓", 2, 1, 0, 1.0),
    stat("MLP.forward", 3, 1, 0, 0.3),
    stat("DEPTH ↑", 5, 0, 4, None),
    stat("WEIGHT_DECAY ↑", 6, 0, 0, -1.4),
    stat("HEAD_DIM ↓", 1, 0, 0, -0.2),
    stat(
        "WARMDOWN_RATIO ↑",
        3,
        2,
        0,
        1.2,
        by_hardware_class={A100: DirectionByClass(tries=3, keeps=0, mean_gain=0.97)},
    ),
    stat("seed", 9, 3, 0, 0.5),
]


def run(
    client: str | None = ALICE, hardware_class: str | None = H100, now: datetime = NOW, **kw: object
) -> list[Suggestion]:
    return suggest(
        "tiny-000000000000",
        STATS,
        KEPT,
        hardware_class=hardware_class,
        client=client,
        source_of=SOURCES.get,
        reference_source=PARENT,
        now=now,
        **kw,
    )  # type: ignore[arg-type]


def test_every_kind_is_typed_with_rationale_and_evidence() -> None:
    items = run(limit=60)
    kinds = {s.kind for s in items}
    assert kinds == {"exploit", "explore", "combine", "replicate", "avoid"}
    for item in items:
        assert isinstance(item, Suggestion) and item.rationale
        if item.kind != "explore" or item.direction in {s.direction for s in STATS}:
            assert item.evidence, item
    exploit = {s.direction for s in items if s.kind == "exploit"}
    assert exploit == {"MATRIX_LR ↑", "EMBEDDING_LR ↓", "MLP.forward", "WARMDOWN_RATIO ↑"}
    avoid = {s.direction: s for s in items if s.kind == "avoid"}
    assert set(avoid) == {"DEPTH ↑", "WEIGHT_DECAY ↑"}
    assert "crashed 4 of 5" in avoid["DEPTH ↑"].rationale
    assert items[-len(avoid) :] == sorted(avoid.values(), key=lambda s: s.score), (
        "avoid entries come last"
    )
    assert all(s.direction != "seed" for s in items)


def test_explore_covers_untried_reference_directions() -> None:
    explore = {s.direction for s in run(limit=200) if s.kind == "explore"}
    assert {
        "ASPECT_RATIO ↑",
        "ASPECT_RATIO ↓",
        "get_lr_multiplier",
        "MLP.__init__",
        "HEAD_DIM ↓",
    } <= explore
    assert "MATRIX_LR ↑" not in explore and "SEED ↑" not in explore and "torch" not in explore
    assert "t_start" not in explore and "model" not in explore  # program state, not a direction


def test_combine_serves_a_merged_file_of_disjoint_kept_siblings() -> None:
    combos = [s for s in run(limit=200) if s.kind == "combine"]
    by_direction = {s.direction: s for s in combos}
    assert set(by_direction) == {
        "EMBEDDING_LR ↓ + MATRIX_LR ↑",
        "MATRIX_LR ↑ + MLP.forward",
        "EMBEDDING_LR ↓ + MLP.forward",
    }
    best = by_direction["EMBEDDING_LR ↓ + MATRIX_LR ↑"]
    assert best.parent_sha256 == sha256_hex(PARENT)
    assert set(best.evidence) == {KEPT[0].id, KEPT[1].id}
    assert best.train_py is not None
    assert extract_directions(PARENT, best.train_py) == ["EMBEDDING_LR ↓", "MATRIX_LR ↑"]


def test_replicate_asks_other_classes_and_never_the_author() -> None:
    mine = {
        s.experiment_id
        for s in run(client=ALICE, hardware_class=H100, limit=200)
        if s.kind == "replicate"
    }
    assert mine == {KEPT[1].id}  # Bob's A100 result; not Alice's own, not the weak ones
    bob = [
        s
        for s in run(client=BOB, hardware_class=A100, limit=200, best_id=KEPT[0].id)
        if s.kind == "replicate"
    ]
    assert [s.experiment_id for s in bob] == [KEPT[0].id]
    assert bob[0].train_py == LR_UP and "community best" in bob[0].rationale


def test_decisive_replication_asks_only_where_one_replica_can_decide() -> None:
    """``flagged`` offers both flagged would-be bests (z 2.5 and 2.2); ``decisive`` only the one that a
    confirmation at its own z would qualify (two runs need a mean z ≥ 2.33); ``decisive_top1`` the
    decisive one with the largest z."""
    carol = fake_id("carol")

    def replicated(kept: list[ExperimentView], policy: str) -> list[str | None]:
        items = suggest("tiny-000000000000", STATS, kept, hardware_class=H100, client=carol, source_of=SOURCES.get,
                        reference_source=PARENT, now=NOW, limit=200, replicate=policy)  # type: ignore[arg-type]
        return sorted(i.experiment_id for i in items if i.kind == "replicate")  # type: ignore[type-var]

    assert replicated(KEPT, "flagged") == sorted([KEPT[0].id, KEPT[1].id])
    assert replicated(KEPT, "decisive") == [KEPT[0].id]
    stronger = make_view(GELU, z=3.1, key_id=BOB)
    assert stronger.verdict == "needs_replication"
    assert replicated([*KEPT, stronger], "decisive") == sorted([KEPT[0].id, stronger.id])
    assert replicated([*KEPT, stronger], "decisive_top1") == [stronger.id]


def test_hardware_dependent_direction_is_not_pushed_on_the_class_where_it_fails() -> None:
    assert "WARMDOWN_RATIO ↑" in {s.direction for s in run(hardware_class=H100, limit=200)}
    assert "WARMDOWN_RATIO ↑" not in {s.direction for s in run(hardware_class=A100, limit=200)}


def test_deterministic_for_a_seeded_input() -> None:
    assert run() == run()
    assert run(now=NOW + timedelta(seconds=30)) == run()  # same 10-minute bucket
    reordered = suggest(
        "tiny-000000000000",
        list(reversed(STATS)),
        list(reversed(KEPT)),
        hardware_class=H100,
        client=ALICE,
        source_of=SOURCES.get,
        reference_source=PARENT,
        now=NOW,
    )
    assert reordered == run()


def test_clients_asking_at_the_same_moment_are_spread() -> None:
    tops = [run(client=fake_id(f"client-{i}"), limit=1)[0] for i in range(20)]
    assert len({(t.kind, t.direction) for t in tops}) >= 4
    assert all(t.score >= 0 for t in tops)


def test_live_claims_push_other_directions_up() -> None:
    free = posterior(1.8, 4)
    busy = posterior(1.8, 4, pseudo_zeros=4)
    assert busy.mean < free.mean and busy.sd < free.sd
    # limit 5: the two flagged would-be bests (replicate, with BEST_BONUS) take the first places
    tops = [run(client=fake_id(f"c{i}"), limit=5) for i in range(30)]
    claimed = [
        run(client=fake_id(f"c{i}"), limit=5, in_flight={"MATRIX_LR ↑": 6}) for i in range(30)
    ]
    count = sum(any(s.direction == "MATRIX_LR ↑" and s.kind == "exploit" for s in t) for t in tops)
    count_claimed = sum(
        any(s.direction == "MATRIX_LR ↑" and s.kind == "exploit" for s in t) for t in claimed
    )
    assert count_claimed < count


def test_limit_and_bad_input() -> None:
    assert len(run(limit=4)) == 4
    assert [s.kind for s in run(limit=4)].count("avoid") == 1
    with pytest.raises(ValueError, match="limit must be at least 1"):
        run(limit=0)
    with pytest.raises(ValueError, match="timezone-aware"):
        run(now=datetime(2026, 1, 1))


def test_posterior_matches_the_normal_normal_formula() -> None:
    post = posterior(2.0, 2)
    # prior N(0, 1), two observations with noise sd √2: precision 1 + 2/2 = 2, mean (2·2/2)/2 = 1
    assert post.mean == pytest.approx(1.0) and post.sd == pytest.approx(2**-0.5)
    assert posterior(None, 0).p_gain == pytest.approx(0.5)
    assert suggestions.area_of("MATRIX_LR ↑") == "optimizer"
    assert suggestions.area_of("CausalSelfAttention.forward") == "attention"


def test_combine_builds_on_the_best_and_folds_in_every_sibling() -> None:
    combos = [s for s in run(limit=200, best_id=KEPT[0].id) if s.kind == "combine"]
    by_direction = {s.direction: s for s in combos}
    # Pairs that would drop the best's change are gone; the greedy merge folds both siblings in.
    assert set(by_direction) == {
        "EMBEDDING_LR ↓ + MATRIX_LR ↑",
        "MATRIX_LR ↑ + MLP.forward",
        "EMBEDDING_LR ↓ + MATRIX_LR ↑ + MLP.forward",
    }
    greedy = by_direction["EMBEDDING_LR ↓ + MATRIX_LR ↑ + MLP.forward"]
    assert greedy.evidence == [KEPT[0].id, KEPT[1].id, KEPT[2].id]  # the best, then by z
    assert greedy.train_py is not None
    assert extract_directions(LR_UP, greedy.train_py) == ["EMBEDDING_LR ↓", "MLP.forward"]


def test_only_single_direction_runs_count_toward_gain() -> None:
    assert suggestions.counts_toward_gain(["MATRIX_LR ↑"])
    assert not suggestions.counts_toward_gain(["MATRIX_LR ↑", "MLP.forward"])
    assert not suggestions.counts_toward_gain(["seed"])


def test_empirical_prior_learns_that_most_changes_hurt() -> None:
    assert (
        suggestions.empirical_prior(STATS[:3]) == suggestions.Prior()
    )  # too few directions: N(0, 1)
    hurting = [stat(f"C{i} ↑", 4, 0, 0, -1.0 - 0.3 * (i % 3)) for i in range(8)]
    prior = suggestions.empirical_prior(hurting)
    assert prior.mean == pytest.approx(-1.2625)  # try-weighted mean of the mean z
    assert suggestions.MIN_PRIOR_SD <= prior.sd <= suggestions.PRIOR_SD
    assert (
        suggestions.empirical_prior([stat(f"G{i} ↑", 2, 2, 0, 3.0) for i in range(6)]).mean == 0.0
    )  # clamped
    untried = suggestions.posterior(None, 0, prior=prior)
    assert untried.mean == pytest.approx(prior.mean) and untried.sd == pytest.approx(prior.sd)
