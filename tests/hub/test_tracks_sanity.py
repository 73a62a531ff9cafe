"""Track views (tracks, leaderboard, best, directions, suggestions) and the sanity rules."""

from __future__ import annotations

import pytest

from autoresearch.protocol import (
    CommunityBest,
    DirectionStats,
    ExperimentDetail,
    Leaderboard,
    SuggestionList,
    TrackView,
    record_id,
    sha256_hex,
)

from . import factory
from .conftest import Hub

REF = factory.REFERENCE
HW = factory.HARDWARE


def lr(value: float) -> str:
    return factory.with_constant(REF, "MATRIX_LR", value)


def submit(hub: Hub, who: str, child: str, **kw: object) -> str:
    response = hub.post("experiments", factory.experiment(hub.track, REF, child, **kw), who)  # type: ignore[arg-type]
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def detail(hub: Hub, eid: str) -> ExperimentDetail:
    return ExperimentDetail.model_validate_json(hub.client.get(f"/api/v1/experiments/{eid}").content)


@pytest.fixture
def two(hub: Hub) -> Hub:
    hub.register("alice")
    hub.register("bob")
    return hub


def cal_run(hub: Hub, who: str, child: str, val_bpb: float, **kw: object) -> str:
    """A run measured against the parent at 2.2 (the factory curve at the full budget) on ``who``'s
    calibration: σ = 0.01, so z = (2.2 − val_bpb) / 0.01; the record claims nothing."""
    cal = hub.calibrations.get(who) or hub.calibrations.setdefault(who, hub.calibrate(who))
    kw.setdefault("z", None)
    return submit(hub, who, child, val_bpb=val_bpb, parent_val_bpb=2.2, calibration_id=cal, **kw)


def test_leaderboard_best_and_track_counts(two: Hub) -> None:
    hub = two
    a = cal_run(hub, "alice", lr(0.05), 2.15)  # z 5: significant and plausible
    b = cal_run(hub, "bob", lr(0.06), 2.14)  # z 6
    cal_run(hub, "bob", lr(0.07), 2.30)  # discarded: worse than its parent
    submit(hub, "alice", lr(0.09), val_bpb=None, outcome="crash")
    board = Leaderboard.model_validate_json(hub.client.get("/api/v1/tracks/tiny/leaderboard").content)
    assert board.track == hub.track.id
    assert [(e.rank, e.experiment_id, e.verdict, e.community_best) for e in board.by_hardware_class[HW]] == [
        (1, b, "qualified", True), (2, a, "qualified", False)
    ]
    assert [e.experiment_id for e in board.ecm] == [b, a]

    best = CommunityBest.model_validate_json(hub.client.get("/api/v1/tracks/tiny/best", params={"hardware_class": HW}).content)
    assert best.experiment is not None and best.experiment.id == b
    assert best.train_py == lr(0.06) and best.sha256 == sha256_hex(lr(0.06))
    assert best.val_bpb == 2.14 and best.lineage == [b]
    across = CommunityBest.model_validate_json(hub.client.get("/api/v1/tracks/tiny/best").content)
    assert across.experiment is not None and across.experiment.id == b
    assert across.ecm == pytest.approx((1 / 0.14) / 5)  # ECM = t*/T, t* = 1/(bpb − 2)
    track = TrackView.model_validate_json(hub.client.get(f"/api/v1/tracks/{hub.track.id}").content)
    assert (track.experiments, track.clients, track.best_val_bpb) == (4, 2, 2.14)
    listed = [TrackView.model_validate(t) for t in hub.client.get("/api/v1/tracks").json()]
    assert [t.spec.id for t in listed] == [hub.track.id]


def test_best_of_an_empty_track_is_the_reference(hub: Hub) -> None:
    best = CommunityBest.model_validate_json(hub.client.get("/api/v1/tracks/tiny/best").content)
    assert best.experiment is None
    assert best.train_py == REF and best.sha256 == hub.track.reference_sha256 and best.ecm == 1.0


def test_seed_only_change_is_never_an_improvement(two: Hub) -> None:
    hub = two
    seeded = factory.with_constant(REF, "SEED", 7)
    eid = submit(hub, "alice", seeded, val_bpb=1.0, parent_val_bpb=1.6, gain=1.5)
    assert detail(hub, eid).directions == ["seed"]
    board = Leaderboard.model_validate_json(hub.client.get("/api/v1/tracks/tiny/leaderboard").content)
    assert board.by_hardware_class == {} and board.ecm == []
    assert CommunityBest.model_validate_json(hub.client.get("/api/v1/tracks/tiny/best").content).experiment is None
    stats = {s.direction: s for s in (DirectionStats.model_validate(d) for d in hub.client.get("/api/v1/tracks/tiny/directions").json())}
    assert stats["seed"].tries == 1 and stats["seed"].mean_gain is None


def test_claimed_z_is_replaced_by_the_hubs(two: Hub) -> None:
    """Catches: a self-declared z (issue 14: val_bpb 0.01 with z = 5 became #1). Stored: the hub's z."""
    eid = cal_run(two, "alice", lr(0.05), 2.19, z=5.0)  # the numbers say z = 1
    view = detail(two, eid)
    assert view.record.normalised.z == 5.0  # the signed claim stays as signed
    assert view.normalised.z == pytest.approx(1.0) and view.verdict == "not_significant"
    assert CommunityBest.model_validate_json(two.client.get("/api/v1/tracks/tiny/best").content).experiment is None


def test_uncalibrated_records_are_shown_but_never_best(two: Hub) -> None:
    eid = submit(two, "alice", lr(0.05), val_bpb=0.3, parent_val_bpb=2.2, z=50.0)
    view = detail(two, eid)
    assert (view.verdict, view.provisional, view.normalised.z) == ("provisional", True, None)
    board = Leaderboard.model_validate_json(two.client.get("/api/v1/tracks/tiny/leaderboard").content)
    assert [(e.experiment_id, e.provisional, e.community_best) for e in board.by_hardware_class[HW]] == [(eid, True, False)]
    assert CommunityBest.model_validate_json(two.client.get("/api/v1/tracks/tiny/best").content).experiment is None


def test_implausible_gain_is_best_only_once_another_key_confirms(two: Hub) -> None:
    """Catches: a fake (or a bug) becoming community best on one key's word, a second key that
    reuses the first key's calibration, and the author's own re-runs counting as confirmation."""
    hub = two
    hub.register("carol")
    child = lr(0.05)
    flagged = cal_run(hub, "alice", child, 2.12)  # z 8 on a fresh track: more than 6 σ beyond
    view = detail(hub, flagged)
    assert (view.verdict, view.needs_replication) == ("needs_replication", True)
    assert view.assessment is not None and view.assessment.implausible == "step_beyond_track"
    cal_run(hub, "alice", child, 2.121, seed=1)  # the author again
    assert detail(hub, flagged).verdict == "needs_replication"
    # carol signs alice's calibration points as her own: the same fingerprint, no confirmation
    copied = factory.calibration(hub.track, machine=sorted(hub.keys).index("alice") + 1)
    assert hub.post("calibrations", copied, "carol").status_code in (200, 201)
    submit(hub, "carol", child, val_bpb=2.13, parent_val_bpb=2.2, z=None, calibration_id=record_id(copied))
    assert detail(hub, flagged).verdict == "needs_replication"
    items = SuggestionList.model_validate_json(
        hub.client.get("/api/v1/tracks/tiny/suggestions", params={"client": hub.key("bob").key_id}).content
    ).items
    assert flagged in {s.experiment_id for s in items if s.kind == "replicate"}  # offered, as flagged
    assert CommunityBest.model_validate_json(hub.client.get("/api/v1/tracks/tiny/best").content).experiment is None
    confirm = cal_run(hub, "bob", child, 2.14)  # bob, own machine: z 6
    assert detail(hub, flagged).verdict == "qualified"
    best = CommunityBest.model_validate_json(hub.client.get("/api/v1/tracks/tiny/best", params={"hardware_class": HW}).content)
    assert best.experiment is not None and best.experiment.id == flagged
    assert detail(hub, confirm).verdict == "qualified"


def test_asymptote_test_flags_a_run_far_below_the_curve(two: Hub) -> None:
    eid = cal_run(two, "alice", lr(0.05), 1.7)  # asymptote 2.0, headroom 0.2: below 1.8
    view = detail(two, eid)
    assert view.verdict == "needs_replication" and view.assessment is not None
    assert view.assessment.implausible == "below_asymptote"


def test_direction_statistics(two: Hub) -> None:
    hub = two
    cal_run(hub, "alice", lr(0.05), 2.19)
    cal_run(hub, "alice", lr(0.06), 2.17)
    submit(hub, "bob", lr(0.07), hardware_class="gpu:b", val_bpb=1.7, parent_val_bpb=1.6)
    submit(hub, "bob", lr(0.08), hardware_class="gpu:b", val_bpb=1.8, parent_val_bpb=1.6)
    submit(hub, "bob", factory.with_constant(REF, "DEPTH", 3), val_bpb=None, outcome="oom")
    stats = {s.direction: s for s in (DirectionStats.model_validate(d) for d in hub.client.get("/api/v1/tracks/tiny/directions").json())}
    up = stats["MATRIX_LR ↑"]
    assert (up.tries, up.keeps, up.crashes) == (4, 2, 0)
    gains = [0.2 / 0.19, 0.2 / 0.17]  # ECM ratio: t* = 1/(bpb − 2), parent at 2.2
    assert (up.gain_n, up.mean_gain) == (2, pytest.approx(sum(gains) / 2))
    ratios = [2.2 / 2.19, 2.2 / 2.17, 1.6 / 1.7, 1.6 / 1.8]
    assert (up.bpb_ratio_n, up.mean_bpb_ratio) == (4, pytest.approx(sum(ratios) / 4))
    assert up.mean_z == pytest.approx(2.0)  # the hub's z of the calibrated runs: 1 and 3
    assert up.by_hardware_class["gpu:b"].mean_gain is None
    assert up.by_hardware_class["gpu:b"].mean_bpb_ratio == pytest.approx(sum(ratios[2:]) / 2)
    assert up.hardware_dependent is True
    assert len(up.evidence) == 2
    depth = stats["DEPTH ↑"]
    assert (depth.tries, depth.keeps, depth.crashes, depth.mean_gain) == (1, 0, 1, None)


def test_suggestions_come_from_the_engine(two: Hub) -> None:
    hub = two
    submit(hub, "alice", lr(0.05), gain=1.2, z=2.0)
    response = hub.client.get("/api/v1/tracks/tiny/suggestions", params={"hardware_class": HW, "client": hub.key("bob").key_id})
    assert response.status_code == 200, response.text
    suggestions = SuggestionList.model_validate_json(response.content)
    assert suggestions.track == hub.track.id and suggestions.hardware_class == HW
    assert suggestions.items, "the engine always has something to explore on a fresh track"


def test_store_best_route_leaderboard_client_and_rule_agree(two: Hub) -> None:
    """Acceptance (issue 14): one answer. The pure rule over the stored candidates, the store's best
    rows, ``/best``, the leaderboard's mark and the client's adoption check name the same run."""
    from autoresearch.client.hubhooks import qualifies
    from autoresearch.hub import store
    from autoresearch.hub.db import make_engine, session_factory
    from autoresearch.protocol import best as rule

    hub = two
    qualified = cal_run(hub, "alice", lr(0.05), 2.15)  # z 5: qualifies alone
    cal_run(hub, "bob", lr(0.06), 2.08)  # z 12: > 5 + 6 beyond the track, unconfirmed
    submit(hub, "bob", lr(0.07), val_bpb=1.0, parent_val_bpb=2.2)  # uncalibrated, lowest val_bpb
    cal_run(hub, "bob", lr(0.08), 2.17)  # z 3: needs a replication
    engine = make_engine(hub.db_url)
    try:
        with session_factory(engine)() as session:
            cands = store.candidates(session, hub.track.id)
            by_rule = rule.community_best(cands, hardware_class=HW)
            across = rule.community_best(cands, hardware_class=None)
    finally:
        engine.dispose()
    assert len(cands) == 4 and by_rule is not None and across is not None
    assert by_rule.run.experiment_id == across.run.experiment_id == qualified
    served = CommunityBest.model_validate_json(hub.client.get("/api/v1/tracks/tiny/best", params={"hardware_class": HW}).content)
    assert served.experiment is not None and served.experiment.id == qualified
    board = Leaderboard.model_validate_json(hub.client.get("/api/v1/tracks/tiny/leaderboard").content)
    assert [e.experiment_id for e in board.by_hardware_class[HW] if e.community_best] == [qualified]
    assert board.by_hardware_class[HW][0].provisional is True  # shown first, never best
    assert qualifies(served) is True
    forged = served.model_copy(update={"candidate": served.candidate.model_copy(update={"replications": []}) if served.candidate else None})
    assert qualifies(forged) is True  # z 5 needs no confirmation
    assert served.candidate is not None
    lowered = served.candidate.model_copy(update={"run": served.candidate.run.model_copy(update={"val_bpb": 2.19})})
    assert qualifies(served.model_copy(update={"candidate": lowered})) is False  # evidence ≠ the served run
