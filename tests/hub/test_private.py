"""Private hub: tokens for reads and enrollment, pending approval, key revocation."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy.orm import Session

from autoresearch.hub import store
from autoresearch.hub.db import make_engine, session_factory
from autoresearch.protocol import ExperimentDetail, Leaderboard

from . import factory
from .conftest import Hub, make_hub

ADMIN = "admin-secret-token"


def _token(hub: Hub, kind: str) -> str:
    with _session(hub) as session:
        token = store.create_token(session, kind, f"test {kind}")
        session.commit()
    return token


@contextmanager
def _session(hub: Hub) -> Iterator[Session]:
    engine = make_engine(hub.db_url)
    try:
        with session_factory(engine)() as session:
            yield session
    finally:
        engine.dispose()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def private(db_url: str) -> Iterator[Hub]:
    yield from make_hub(db_url, private=True, admin_token=ADMIN)


@pytest.fixture
def approving(db_url: str) -> Iterator[Hub]:
    yield from make_hub(db_url, private=True, require_approval=True, admin_token=ADMIN)


def test_reads_need_a_live_token(private: Hub) -> None:
    hub = private
    missing = hub.client.get("/api/v1/tracks")
    assert missing.status_code == 401 and missing.json()["error"]["code"] == "token_required"
    wrong = hub.client.get("/api/v1/tracks", headers=bearer("nope"))
    assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "bad_token"
    scheme = hub.client.get("/api/v1/tracks", headers={"Authorization": "Basic abc"})
    assert scheme.status_code == 401 and scheme.json()["error"]["code"] == "bad_token"
    read = _token(hub, "read")
    assert hub.client.get("/api/v1/tracks", headers=bearer(read)).status_code == 200
    assert hub.client.get("/api/v1/tracks", headers=bearer(ADMIN)).status_code == 200
    with _session(hub) as session:
        [info] = store.list_tokens(session)
        store.revoke_token(session, info.id)
        session.commit()
    assert hub.client.get("/api/v1/tracks", headers=bearer(read)).json()["error"]["code"] == "bad_token"
    assert hub.client.get("/healthz").status_code == 200  # ops endpoints stay open


def test_registration_needs_an_enroll_token(private: Hub) -> None:
    hub = private
    before = hub.counts()
    refused = hub.register("alice")
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "token_required"
    read = _token(hub, "read")
    assert hub.register("alice", headers=bearer(read)).status_code == 401
    assert hub.counts()["clients"] == before["clients"]
    enroll = _token(hub, "enroll")
    assert hub.register("alice", headers=bearer(enroll)).status_code == 201
    assert hub.client.get("/api/v1/tracks", headers=bearer(enroll)).status_code == 200  # enroll also reads


def test_pending_until_approved(approving: Hub) -> None:
    hub = approving
    assert hub.register("alice").status_code == 201
    client = hub.client.get(f"/api/v1/clients/{hub.key('alice').key_id}", headers=bearer(ADMIN)).json()
    assert client["status"] == "pending"
    record = factory.experiment(hub.track, factory.REFERENCE, factory.with_constant(factory.REFERENCE, "MATRIX_LR", 0.05))
    pending = hub.post("experiments", record, "alice")
    assert pending.status_code == 403 and pending.json()["error"]["code"] == "key_pending"
    with _session(hub) as session:
        store.set_client_status(session, hub.key("alice").key_id, "active")
        session.commit()
    assert hub.post("experiments", record, "alice").status_code == 201


def test_revoked_key_is_refused_and_its_records_are_marked(hub: Hub) -> None:
    hub.register("alice")
    hub.register("bob")
    cals = {who: hub.calibrate(who) for who in ("alice", "bob")}  # parent at 2.2, σ 0.01: z 5 and 4.5

    def run(who: str, value: float, val_bpb: float) -> str:
        child = factory.with_constant(factory.REFERENCE, "MATRIX_LR", value)
        record = factory.experiment(hub.track, factory.REFERENCE, child, val_bpb=val_bpb, parent_val_bpb=2.2, calibration_id=cals[who])
        return str(hub.post("experiments", record, who).json()["id"])

    a, b = run("alice", 0.05, 2.15), run("bob", 0.06, 2.155)
    with _session(hub) as session:
        store.set_client_status(session, hub.key("alice").key_id, "revoked")
        session.commit()
    before = hub.counts()
    refused = hub.post("experiments", factory.experiment(hub.track, factory.REFERENCE, factory.with_constant(factory.REFERENCE, "MATRIX_LR", 0.07)), "alice")
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "key_revoked"
    assert hub.counts() == before
    old = ExperimentDetail.model_validate_json(hub.client.get(f"/api/v1/experiments/{a}").content)
    assert old.revoked is True
    board = Leaderboard.model_validate_json(hub.client.get("/api/v1/tracks/tiny/leaderboard").content)
    assert [e.experiment_id for e in board.by_hardware_class[factory.HARDWARE]] == [b]
    best = hub.client.get("/api/v1/tracks/tiny/best", params={"hardware_class": factory.HARDWARE}).json()
    assert best["experiment"]["id"] == b


def test_admin_api(private: Hub) -> None:
    hub = private
    assert hub.client.post("/api/v1/admin/tokens", json={"kind": "enroll"}).json()["error"]["code"] == "admin_required"
    made = hub.client.post("/api/v1/admin/tokens", json={"kind": "enroll", "label": "lab"}, headers=bearer(ADMIN))
    assert made.status_code == 201
    enroll = made.json()["token"]
    assert hub.register("alice", headers=bearer(enroll)).status_code == 201
    key_id = hub.key("alice").key_id
    not_admin = hub.client.post(f"/api/v1/admin/clients/{key_id}/revoke", headers=bearer(enroll))
    assert not_admin.status_code == 403 and not_admin.json()["error"]["code"] == "admin_required"
    revoked = hub.client.post(f"/api/v1/admin/clients/{key_id}/revoke", headers=bearer(ADMIN))
    assert revoked.status_code == 200 and revoked.json()["status"] == "revoked"
    [listed] = hub.client.get("/api/v1/admin/clients", headers=bearer(ADMIN)).json()
    assert listed["status"] == "revoked"
    assert hub.client.post(f"/api/v1/admin/clients/{key_id}/approve", headers=bearer(ADMIN)).json()["status"] == "active"
    missing = hub.client.post(f"/api/v1/admin/clients/{'0' * 64}/approve", headers=bearer(ADMIN))
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "unknown_client"
