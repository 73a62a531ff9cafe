"""Quotas per key, per enrollment token and per anonymous address: 429 with Retry-After, nothing
stored by a refused request, limits from the hub settings (docs/private-hub.md, "Quotas")."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from autoresearch.hub import store
from autoresearch.hub.db import make_engine, session_factory
from autoresearch.protocol import KeyPair, sha256_hex

from . import factory
from .conftest import Hub, make_hub

ADMIN = "quota-admin-token"


def child(i: int) -> str:
    return factory.with_constant(factory.REFERENCE, "MATRIX_LR", round(0.05 + i / 1000, 4))


def refused(response: httpx.Response, code: str) -> int:
    """Assert a 429 with ``code``; returns its Retry-After (seconds)."""
    assert response.status_code == 429, response.text
    assert response.json()["error"] == {"code": code, "message": response.json()["error"]["message"], "status": 429}
    retry = int(response.headers["retry-after"])
    assert retry >= 1
    return retry


def make_token(hub: Hub, kind: str) -> str:
    engine = make_engine(hub.db_url)
    try:
        with session_factory(engine)() as session:
            token = store.create_token(session, kind, f"quota test {kind}")
            session.commit()
    finally:
        engine.dispose()
    return token


@pytest.fixture
def tight(db_url: str) -> Iterator[Hub]:
    """A public hub with small quotas."""
    yield from make_hub(db_url, quota_records_per_minute=3, quota_live_claims=2, quota_source_bytes_per_day=4096,
                        quota_registrations_per_hour=3)


def test_records_per_minute_per_key(tight: Hub) -> None:
    """Attack: one key floods experiments. Outcome: the 4th record in a minute is 429 rate_limited
    with Retry-After ≤ 60 s and nothing of it is stored; another key is unaffected."""
    hub = tight
    assert hub.register("alice").status_code == 201 and hub.register("bob").status_code == 201
    for i in range(3):
        assert hub.post("experiments", factory.experiment(hub.track, factory.REFERENCE, child(i)), "alice").status_code == 201
    before = hub.counts()
    retry = refused(hub.post("experiments", factory.experiment(hub.track, factory.REFERENCE, child(3)), "alice"), "rate_limited")
    assert retry <= 60
    assert hub.counts() == before
    # claims and calibrations count against the same per-minute quota
    refused(hub.post("claims", factory.claim(hub.track, factory.REFERENCE, child(9)), "alice"), "rate_limited")
    refused(hub.post("calibrations", factory.calibration(hub.track), "alice"), "rate_limited")
    assert hub.post("experiments", factory.experiment(hub.track, factory.REFERENCE, child(3)), "bob").status_code == 201
    # resubmitting a stored record (a lost acknowledgement) is never refused
    again = hub.post("experiments", factory.experiment(hub.track, factory.REFERENCE, child(3)), "bob")
    assert again.status_code in (200, 201)


def test_live_claims_and_lease_length(tight: Hub) -> None:
    """Attack: one key holds many claims, or a day-long one. Outcome: the third live claim is 429
    quota_exceeded (Retry-After: until the earliest lease ends); renewing a held claim and claiming
    after the experiment is stored are fine; a lease beyond 2 × budget + margin is lease_too_long."""
    hub = tight
    assert hub.register("alice").status_code == 201
    for i in range(2):
        assert hub.post("claims", factory.claim(hub.track, factory.REFERENCE, child(i), lease_seconds=100), "alice").json()["status"] == "granted"
    before = hub.counts()
    retry = refused(hub.post("claims", factory.claim(hub.track, factory.REFERENCE, child(2), lease_seconds=100), "alice"), "quota_exceeded")
    assert 1 <= retry <= 100
    assert hub.counts() == before
    renewed = hub.post("claims", factory.claim(hub.track, factory.REFERENCE, child(0), lease_seconds=100), "alice")
    assert renewed.status_code == 200 and renewed.json()["status"] == "granted"
    long = hub.post("claims", factory.claim(hub.track, factory.REFERENCE, child(2), lease_seconds=86_400), "alice")
    assert long.status_code == 422 and long.json()["error"]["code"] == "lease_too_long"
    assert "2 × its 5 s budget" in long.json()["error"]["message"]


def test_a_stored_experiment_frees_its_claim(db_url: str) -> None:
    for hub in make_hub(db_url, quota_live_claims=1):
        assert hub.register("alice").status_code == 201
        assert hub.post("claims", factory.claim(hub.track, factory.REFERENCE, child(0)), "alice").json()["status"] == "granted"
        refused(hub.post("claims", factory.claim(hub.track, factory.REFERENCE, child(1)), "alice"), "quota_exceeded")
        assert hub.post("experiments", factory.experiment(hub.track, factory.REFERENCE, child(0)), "alice").status_code == 201
        assert hub.post("claims", factory.claim(hub.track, factory.REFERENCE, child(1)), "alice").json()["status"] == "granted"


def test_source_bytes_per_day_anonymous(tight: Hub) -> None:
    """Attack: an anonymous uploader on a public hub stores source after source. Outcome: past
    4 KiB a day, 429 quota_exceeded with Retry-After until the UTC day ends; nothing stored."""
    hub = tight
    texts = [f"X = {i}\n" + "# pad\n" * 300 for i in range(3)]  # ~1.8 KB each
    for text in texts[:2]:
        assert hub.client.put(f"/api/v1/sources/{sha256_hex(text)}", content=text.encode()).status_code == 201
    before = hub.counts()
    retry = refused(hub.client.put(f"/api/v1/sources/{sha256_hex(texts[2])}", content=texts[2].encode()), "quota_exceeded")
    assert retry <= 86_400
    assert hub.counts() == before
    # uploading a source the hub already has costs nothing
    assert hub.client.put(f"/api/v1/sources/{sha256_hex(texts[0])}", content=texts[0].encode()).status_code == 200


def test_experiment_children_count_as_source_bytes(db_url: str) -> None:
    """Attack: a key stores large children through experiments instead of uploads. Outcome: the
    children's bytes count against its daily quota (429 quota_exceeded once spent)."""
    for hub in make_hub(db_url, quota_source_bytes_per_day=len(factory.REFERENCE) * 2):
        assert hub.register("alice").status_code == 201
        for i in range(2):
            assert hub.post("experiments", factory.experiment(hub.track, factory.REFERENCE, child(i)), "alice").status_code == 201
        refused(hub.post("experiments", factory.experiment(hub.track, factory.REFERENCE, child(2)), "alice"), "quota_exceeded")


def test_registrations_per_hour_per_address(tight: Hub) -> None:
    """Attack: one address registers key after key (to multiply per-key quotas). Outcome: the 4th
    registration in an hour is 429 rate_limited; re-registering an existing key the same way is not."""
    hub = tight
    for name in ("k1", "k2", "k3"):
        assert hub.register(name).status_code == 201
    before = hub.counts()
    refused(hub.register("k4"), "rate_limited")
    assert hub.counts() == before
    assert hub.register("k1").status_code == 200


@pytest.fixture
def private(db_url: str) -> Iterator[Hub]:
    yield from make_hub(db_url, private=True, admin_token=ADMIN, quota_token_records_per_minute=4,
                        quota_records_per_minute=100, quota_token_live_claims=3)


def test_a_read_token_cannot_upload(private: Hub) -> None:
    """Attack: a read-only token of a private hub uploads a train.py. Outcome: 403 read_only_token,
    nothing stored; no token: 401; an enroll token or the admin token may."""
    hub = private
    text = "X = 1\n"
    url = f"/api/v1/sources/{sha256_hex(text)}"
    read = make_token(hub, "read")
    before = hub.counts()
    denied = hub.client.put(url, content=text.encode(), headers={"Authorization": f"Bearer {read}"})
    assert denied.status_code == 403 and denied.json()["error"]["code"] == "read_only_token"
    anonymous = hub.client.put(url, content=text.encode())
    assert anonymous.status_code == 401 and anonymous.json()["error"]["code"] == "token_required"
    assert hub.counts() == before
    enroll = make_token(hub, "enroll")
    assert hub.client.put(url, content=text.encode(), headers={"Authorization": f"Bearer {enroll}"}).status_code == 201
    other = "X = 2\n"
    assert hub.client.put(f"/api/v1/sources/{sha256_hex(other)}", content=other.encode(),
                          headers={"Authorization": f"Bearer {ADMIN}"}).status_code == 201


def test_enrollment_token_quota_covers_all_its_keys(private: Hub) -> None:
    """Attack: a member registers several keys with one enrollment token to multiply its quota.
    Outcome: the token's limit covers the records of all its keys together (4 a minute here), and
    its keys' live claims together (3)."""
    hub = private
    enroll = make_token(hub, "enroll")
    keys = ["m1", "m2", "m3"]
    for name in keys:
        assert hub.register(name, headers={"Authorization": f"Bearer {enroll}"}).status_code == 201
    for i, name in enumerate(keys):
        assert hub.post("claims", factory.claim(hub.track, factory.REFERENCE, child(i)), name).json()["status"] == "granted"
    refused(hub.post("claims", factory.claim(hub.track, factory.REFERENCE, child(7)), "m1"), "quota_exceeded")
    assert hub.post("experiments", factory.experiment(hub.track, factory.REFERENCE, child(0)), "m1").status_code == 201
    refused(hub.post("experiments", factory.experiment(hub.track, factory.REFERENCE, child(1)), "m2"), "rate_limited")
    # a key enrolled by the admin token has no token quota
    admin_key = KeyPair.generate()
    hub.keys["solo"] = admin_key
    assert hub.register("solo", headers={"Authorization": f"Bearer {ADMIN}"}).status_code == 201
    assert hub.post("experiments", factory.experiment(hub.track, factory.REFERENCE, child(1)), "solo").status_code == 201
