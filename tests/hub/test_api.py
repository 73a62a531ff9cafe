"""Submissions and reads through the JSON API, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from autoresearch.protocol import (
    EXPERIMENT_SCHEMA,
    ClientView,
    ExperimentDetail,
    ExperimentView,
    Page,
    sha256_hex,
    verify,
)

from . import factory
from .conftest import Hub

REF = factory.REFERENCE


def lr(value: float, parent: str = REF) -> str:
    return factory.with_constant(parent, "MATRIX_LR", value)


def test_registration_is_idempotent_and_readable(hub: Hub) -> None:
    first = hub.register("alice")
    assert first.status_code == 201
    assert first.json() == {"id": hub.key("alice").key_id, "created": True, "kind": "client"}
    again = hub.register("alice")
    assert again.status_code == 200
    assert again.json()["created"] is False
    view = ClientView.model_validate_json(hub.client.get(f"/api/v1/clients/{hub.key('alice').key_id}").content)
    assert (view.display_name, view.status, view.experiments) == ("alice", "active", 0)
    assert hub.counts()["clients"] == 1


def test_experiment_is_stored_once_and_its_envelope_verifies(hub: Hub) -> None:
    hub.register("alice")
    record = factory.experiment(hub.track, REF, lr(0.05), val_bpb=1.5, parent_val_bpb=1.6)
    sent = factory.envelope_bytes(record, hub.key("alice"))
    first = hub.client.post("/api/v1/experiments", content=sent)
    assert first.status_code == 201, first.text
    experiment_id = first.json()["id"]
    again = hub.client.post("/api/v1/experiments", content=sent)
    assert again.status_code == 200
    assert again.json() == {"id": experiment_id, "created": False, "kind": "experiment"}
    assert hub.counts()["experiments"] == 1

    envelope = hub.client.get(f"/api/v1/experiments/{experiment_id}/envelope")
    assert envelope.content == sent
    verified = verify(envelope.content, hub.key("alice").public_key, expected_schema=EXPERIMENT_SCHEMA)
    assert verified.record_id == experiment_id

    detail = ExperimentDetail.model_validate_json(hub.client.get(f"/api/v1/experiments/{experiment_id}").content)
    assert detail.record == record
    assert detail.parent_source == REF
    assert detail.child_source == lr(0.05)
    assert detail.client_name == "alice"
    assert detail.directions == ["MATRIX_LR ↑"]
    assert detail.replications.n == 1
    assert detail.lineage == [] and detail.children == []
    assert hub.client.get(f"/api/v1/sources/{sha256_hex(lr(0.05))}").text == lr(0.05)


def test_unknown_parent_then_put_source_then_retry(hub: Hub) -> None:
    hub.register("alice")
    parent = lr(0.07)
    child = factory.with_constant(parent, "DEPTH", 3)
    record = factory.experiment(hub.track, parent, child)
    refused = hub.post("experiments", record, "alice")
    assert refused.status_code == 409
    assert refused.json()["error"]["code"] == "unknown_parent"
    put = hub.client.put(f"/api/v1/sources/{sha256_hex(parent)}", content=parent.encode())
    assert put.status_code == 201
    assert hub.client.put(f"/api/v1/sources/{sha256_hex(parent)}", content=parent.encode()).status_code == 200
    accepted = hub.post("experiments", record, "alice")
    assert accepted.status_code == 201, accepted.text


def test_lineage_and_children(hub: Hub) -> None:
    hub.register("alice")
    a, b = lr(0.05), factory.with_constant(lr(0.05), "DEPTH", 3)
    first = hub.post("experiments", factory.experiment(hub.track, REF, a, val_bpb=1.5, parent_val_bpb=1.6), "alice").json()["id"]
    second = hub.post("experiments", factory.experiment(hub.track, a, b, val_bpb=1.4, parent_val_bpb=1.5), "alice").json()["id"]
    detail = ExperimentDetail.model_validate_json(hub.client.get(f"/api/v1/experiments/{second}").content)
    assert detail.lineage == [first]
    parent_detail = ExperimentDetail.model_validate_json(hub.client.get(f"/api/v1/experiments/{first}").content)
    assert parent_detail.children == [second]


def test_lineage_prefers_the_signers_line_and_stops_at_a_cycle(hub: Hub, monkeypatch: pytest.MonkeyPatch) -> None:
    """The lineage walk (one recursive statement, ``store.listing._lineage``): at each ``train.py``
    the signer's own kept run is taken before an earlier one of another key; a revert (s2 → s1)
    makes a cycle of sources, where the walk stops instead of going on to an older producer of s1;
    the walk is cut at ``LINEAGE_DEPTH`` steps."""
    for who in ("alice", "bob", "cy"):
        hub.register(who)
    s1 = lr(0.05)
    s2 = factory.with_constant(s1, "DEPTH", 3)
    s3 = factory.with_constant(s2, "EMBED_LR", 0.3)
    s4 = factory.with_constant(s1, "EMBED_LR", 0.4)

    def run(parent: str, child: str, who: str, seed: int, status: str = "keep") -> str:
        record = factory.experiment(hub.track, parent, child, val_bpb=1.5, parent_val_bpb=1.6, seed=seed, status=status)
        response = hub.post("experiments", record, who)
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    def lineage(experiment_id: str) -> list[str]:
        return ExperimentDetail.model_validate_json(hub.client.get(f"/api/v1/experiments/{experiment_id}").content).lineage

    e1 = run(REF, s1, "alice", 1)  # the first producer of s1
    e1b = run(REF, s1, "bob", 2)  # bob's own, later
    e2 = run(s1, s2, "bob", 3)
    e3 = run(s2, s3, "alice", 4)
    assert lineage(e1) == []
    assert lineage(e2) == [e1b]  # bob's line, although e1 is older
    assert lineage(e3) == [e2, e1]  # nobody's own at s2 but bob's; alice's own at s1
    run(s1, s2, "alice", 5, status="discard")  # a discarded run is never an ancestor
    assert lineage(e3) == [e2, e1]
    revert = run(s2, s1, "cy", 6)  # s2 → s1: now s1 has a producer whose parent is s2
    e4 = run(s1, s4, "cy", 7)
    assert lineage(e4) == [revert, e2]  # s1 ← s2 ← s1 again: the cycle ends the walk (not at e1)
    monkeypatch.setattr("autoresearch.hub.store.listing.LINEAGE_DEPTH", 1)
    assert lineage(e3) == [e2]


def test_listing_filters_and_cursor_pagination(hub: Hub) -> None:
    hub.register("alice")
    hub.register("bob")
    ids = []
    for i in range(7):
        who = "alice" if i % 2 == 0 else "bob"
        outcome = "crash" if i == 3 else "ok"
        record = factory.experiment(
            hub.track, REF, lr(0.05 + i / 100), val_bpb=None if outcome == "crash" else 1.5, outcome=outcome,
            hardware_class="gpu:x" if i == 6 else factory.HARDWARE,
        )
        response = hub.post("experiments", record, who)
        assert response.status_code == 201, response.text
        ids.append(response.json()["id"])

    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        page = Page[ExperimentView].model_validate_json(hub.client.get("/api/v1/experiments", params=params).content)
        seen += [v.id for v in page.items]
        pages += 1
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == ids[::-1]
    assert pages == 3

    def listed(**params: object) -> list[str]:
        body = hub.client.get("/api/v1/experiments", params=params).json()
        return [item["id"] for item in body["items"]]

    assert listed(client=hub.key("bob").key_id) == [ids[5], ids[3], ids[1]]
    assert listed(client="bob") == listed(client="BOB") == [ids[5], ids[3], ids[1]]  # the name the pages show
    assert listed(outcome="crash") == [ids[3]]
    assert listed(hardware_class="gpu:x") == [ids[6]]
    assert listed(track="tiny") == ids[::-1]
    assert listed(since="2000-01-01T00:00:00Z") == ids[::-1]
    assert listed(since="2100-01-01T00:00:00Z") == []
    assert hub.client.get("/api/v1/experiments", params={"track": "nope"}).json()["error"]["code"] == "unknown_track"


def test_calibration_is_stored_once(hub: Hub) -> None:
    hub.register("alice")
    record = factory.calibration(hub.track)
    assert hub.post("calibrations", record, "alice").status_code == 201
    assert hub.post("calibrations", record, "alice").status_code == 200
    assert hub.counts()["calibrations"] == 1


def test_missing_things_are_404_in_the_error_shape(hub: Hub) -> None:
    missing = "0" * 64
    for path, code in [
        (f"/api/v1/experiments/{missing}", "unknown_experiment"),
        (f"/api/v1/experiments/{missing}/envelope", "unknown_experiment"),
        (f"/api/v1/clients/{missing}", "unknown_client"),
        (f"/api/v1/sources/{missing}", "unknown_source"),
        ("/api/v1/tracks/nope", "unknown_track"),
        ("/api/v1/nowhere", "not_found"),
    ]:
        response = hub.client.get(path)
        assert response.status_code == 404, path
        assert response.json() == {"error": {"code": code, "message": response.json()["error"]["message"], "status": 404}}


def test_reference_source_is_served(hub: Hub) -> None:
    assert hub.client.get(f"/api/v1/sources/{hub.track.reference_sha256}").text == REF


def test_experiment_by_unique_prefix(hub: Hub) -> None:
    """Tables show 12 hex digits: GET /experiments/{prefix} (and its envelope) resolve a unique
    prefix; a prefix shared by two experiments is 409 ``ambiguous_id``; under 8 digits is 422."""
    from sqlalchemy import create_engine
    from sqlalchemy.orm import Session

    from autoresearch.hub import store
    from autoresearch.hub.db import normalise_url
    from autoresearch.hub.errors import Conflict

    hub.register("alice")
    ids: list[str] = []
    value = 0.05
    while len({i[0] for i in ids}) == len(ids):  # until two ids share their first hex digit
        value += 0.01
        record = factory.experiment(hub.track, REF, lr(round(value, 4)), val_bpb=1.5, parent_val_bpb=1.6)
        response = hub.post("experiments", record, "alice")
        assert response.status_code == 201, response.text
        ids.append(response.json()["id"])
    first = ids[0]
    detail = hub.client.get(f"/api/v1/experiments/{first[:12]}")
    assert detail.status_code == 200
    assert ExperimentDetail.model_validate_json(detail.content).id == first
    envelope = hub.client.get(f"/api/v1/experiments/{first[:12]}/envelope")
    assert verify(envelope.content).record_id == first
    assert hub.client.get(f"/api/v1/experiments/{first[:7]}").status_code == 422
    assert hub.client.get(f"/api/v1/experiments/{'0' * 8 if not first.startswith('0' * 8) else 'f' * 8}").json()["error"]["code"] == "unknown_experiment"

    shared = next(i[0] for i in ids if sum(j[0] == i[0] for j in ids) > 1)
    engine = create_engine(normalise_url(hub.db_url))
    try:
        with Session(engine) as session, pytest.raises(Conflict) as caught:
            store.get_experiment(session, shared)  # the store takes any prefix; the route asks ≥ 8
        assert caught.value.code == "ambiguous_id"
    finally:
        engine.dispose()


def test_only_single_direction_runs_feed_a_directions_gain(hub: Hub) -> None:
    """A run touching two directions counts as a try of both but adds its z to neither, so a
    passenger change never shares another change's gain (docs/suggestions.md)."""
    from autoresearch.protocol import DirectionStats

    hub.register("alice")
    cal = hub.calibrate("alice")  # σ 0.01, parent at 2.2 on its curve: z = (2.2 − val_bpb) / 0.01
    both = factory.with_constant(lr(0.05), "EMBED_LR", 0.5)
    for child, val_bpb in ((both, 2.17), (lr(0.06), 2.18)):
        record = factory.experiment(hub.track, REF, child, val_bpb=val_bpb, parent_val_bpb=2.2, calibration_id=cal)
        assert hub.post("experiments", record, "alice").status_code == 201
    response = hub.client.get(f"/api/v1/tracks/{hub.track.id}/directions")
    stats = {d.direction: d for d in (DirectionStats.model_validate(x) for x in response.json())}
    assert (stats["MATRIX_LR ↑"].tries, stats["MATRIX_LR ↑"].mean_z) == (2, pytest.approx(2.0))
    assert (stats["EMBED_LR ↓"].tries, stats["EMBED_LR ↓"].mean_z) == (1, None)
