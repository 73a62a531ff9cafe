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


def test_leaderboard_best_and_track_counts(two: Hub) -> None:
    hub = two
    a = submit(hub, "alice", lr(0.05), val_bpb=1.50, ecm=1.2)
    b = submit(hub, "bob", lr(0.06), val_bpb=1.45, ecm=1.3)
    submit(hub, "bob", lr(0.07), val_bpb=1.70)  # discarded: worse than its parent
    submit(hub, "alice", lr(0.09), val_bpb=None, outcome="crash")
    board = Leaderboard.model_validate_json(hub.client.get("/api/v1/tracks/tiny/leaderboard").content)
    assert board.track == hub.track.id
    assert [(e.rank, e.experiment_id) for e in board.by_hardware_class[HW]] == [(1, b), (2, a)]
    assert [e.experiment_id for e in board.ecm] == [b, a]

    best = CommunityBest.model_validate_json(hub.client.get("/api/v1/tracks/tiny/best", params={"hardware_class": HW}).content)
    assert best.experiment is not None and best.experiment.id == b
    assert best.train_py == lr(0.06) and best.sha256 == sha256_hex(lr(0.06))
    assert best.val_bpb == 1.45 and best.lineage == [b]
    across = CommunityBest.model_validate_json(hub.client.get("/api/v1/tracks/tiny/best").content)
    assert across.experiment is not None and across.experiment.id == b and across.ecm == 1.3

    track = TrackView.model_validate_json(hub.client.get(f"/api/v1/tracks/{hub.track.id}").content)
    assert (track.experiments, track.clients, track.best_val_bpb, track.best_ecm) == (4, 2, 1.45, 1.3)
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


def test_large_gain_needs_replication_until_another_key_confirms(two: Hub) -> None:
    hub = two
    child = lr(0.05)
    flagged = submit(hub, "alice", child, val_bpb=1.40, z=10.0)
    assert detail(hub, flagged).needs_replication is True
    again_same_key = submit(hub, "alice", child, val_bpb=1.41, z=10.0, seed=1)
    assert detail(hub, flagged).needs_replication is True  # the author's own re-run is no confirmation
    assert detail(hub, again_same_key).needs_replication is False  # not a new best
    confirm = submit(hub, "bob", child, val_bpb=1.42, z=9.0)
    assert detail(hub, flagged).needs_replication is False
    assert detail(hub, confirm).needs_replication is False
    uncalibrated = submit(hub, "bob", lr(0.06), val_bpb=1.30, z=None)
    assert detail(hub, uncalibrated).needs_replication is True
    modest = submit(hub, "alice", lr(0.055), val_bpb=1.20, z=3.0)
    assert detail(hub, modest).needs_replication is False


def test_direction_statistics(two: Hub) -> None:
    hub = two
    submit(hub, "alice", lr(0.05), gain=1.1, z=1.0)
    submit(hub, "alice", lr(0.06), gain=1.3, z=3.0)
    submit(hub, "bob", lr(0.07), gain=0.9, z=-1.0, hardware_class="gpu:b", val_bpb=1.7)
    submit(hub, "bob", lr(0.08), gain=0.8, z=-2.0, hardware_class="gpu:b", val_bpb=1.8)
    submit(hub, "bob", factory.with_constant(REF, "DEPTH", 3), val_bpb=None, outcome="oom")
    stats = {s.direction: s for s in (DirectionStats.model_validate(d) for d in hub.client.get("/api/v1/tracks/tiny/directions").json())}
    up = stats["MATRIX_LR ↑"]
    assert (up.tries, up.keeps, up.crashes) == (4, 2, 0)
    assert up.mean_gain == pytest.approx(1.025)
    assert up.std_gain == pytest.approx(((0.075**2 + 0.275**2 + 0.125**2 + 0.225**2) / 4) ** 0.5)
    assert up.mean_z == pytest.approx(0.25)
    assert up.by_hardware_class[HW].mean_gain == pytest.approx(1.2)
    assert up.by_hardware_class["gpu:b"].keeps == 0
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
