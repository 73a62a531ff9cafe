"""Every bad input gets its 4xx with a machine-readable code and leaves the database unchanged."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import pytest

from autoresearch.protocol import (
    KeyPair,
    canonical_bytes,
    canonical_source_sha256,
    payload_type,
    sha256_hex,
)

from . import factory
from .conftest import Hub

CHILD = factory.with_constant(factory.REFERENCE, "MATRIX_LR", 0.05)
EXP_TYPE = payload_type("autoresearch/experiment/v1")


def _payload_with(hub: Hub, old: bytes, new: bytes) -> bytes:
    payload = canonical_bytes(factory.experiment(hub.track, factory.REFERENCE, CHILD, val_bpb=1.5))
    assert old in payload
    return payload.replace(old, new)


def malformed_json(hub: Hub) -> httpx.Response:
    return hub.client.post("/api/v1/experiments", content=b'{"payloadType": ')


def not_an_envelope(hub: Hub) -> httpx.Response:
    return hub.client.post("/api/v1/experiments", content=b'{"hello": "world"}')


def unknown_schema(hub: Hub) -> httpx.Response:
    body = factory.raw_envelope(b'{"schema":"autoresearch/bogus/v1"}', "application/vnd.autoresearch.bogus.v1+json", hub.key("alice"))
    return hub.client.post("/api/v1/experiments", content=body)


def wrong_schema(hub: Hub) -> httpx.Response:
    return hub.post("experiments", factory.claim(hub.track, factory.REFERENCE, CHILD), "alice")


def bad_signature(hub: Hub) -> httpx.Response:
    payload = canonical_bytes(factory.experiment(hub.track, factory.REFERENCE, CHILD))
    forged = factory.raw_envelope(payload, EXP_TYPE, KeyPair.generate(), keyid=hub.key("alice").key_id)
    return hub.client.post("/api/v1/experiments", content=forged)


def tampered_payload(hub: Hub) -> httpx.Response:
    env = json.loads(factory.envelope_bytes(factory.experiment(hub.track, factory.REFERENCE, CHILD), hub.key("alice")))
    other = canonical_bytes(factory.experiment(hub.track, factory.REFERENCE, CHILD, val_bpb=1.0))
    import base64

    env["payload"] = base64.b64encode(other).decode()
    return hub.client.post("/api/v1/experiments", content=json.dumps(env).encode())


def unregistered_key(hub: Hub) -> httpx.Response:
    return hub.post("experiments", factory.experiment(hub.track, factory.REFERENCE, CHILD), "mallory")


def unknown_track(hub: Hub) -> httpx.Response:
    other = factory.make_track(name="other")
    return hub.post("experiments", factory.experiment(other, factory.REFERENCE, CHILD), "alice")


def oversize_body(hub: Hub) -> httpx.Response:
    return hub.client.post("/api/v1/experiments", content=b" " * (hub.settings.max_body_bytes + 1))


def oversize_diff(hub: Hub) -> httpx.Response:
    child = factory.REFERENCE + "".join(f"# padding line {i} " + "x" * 100 + "\n" for i in range(1400))
    return hub.post("experiments", factory.experiment(hub.track, factory.REFERENCE, child), "alice")


def child_does_not_parse(hub: Hub) -> httpx.Response:
    child = factory.REFERENCE + "def broken(:\n"
    record = factory.experiment(hub.track, factory.REFERENCE, CHILD).model_copy(
        update={"child_sha256": sha256_hex(child), "diff": factory.unified_diff(factory.REFERENCE, child)}
    )
    return hub.post("experiments", record, "alice")


def diff_does_not_apply(hub: Hub) -> httpx.Response:
    # a diff whose removed line the parent does not have
    bad = factory.unified_diff(factory.with_constant(factory.REFERENCE, "EMBED_LR", 0.9), CHILD)
    record = factory.experiment(hub.track, factory.REFERENCE, CHILD, diff=bad)
    return hub.post("experiments", record, "alice")


def child_hash_mismatch(hub: Hub) -> httpx.Response:
    record = factory.experiment(hub.track, factory.REFERENCE, CHILD).model_copy(update={"child_sha256": sha256_hex("other")})
    return hub.post("experiments", record, "alice")


def canonical_hash_mismatch(hub: Hub) -> httpx.Response:
    record = factory.experiment(hub.track, factory.REFERENCE, CHILD).model_copy(
        update={"child_canonical_sha256": canonical_source_sha256(factory.REFERENCE)}
    )
    return hub.post("experiments", record, "alice")


def nan_metric(hub: Hub) -> httpx.Response:
    payload = _payload_with(hub, b'"val_bpb":1.5', b'"val_bpb":NaN')
    return hub.client.post("/api/v1/experiments", content=factory.raw_envelope(payload, EXP_TYPE, hub.key("alice")))


def negative_metric(hub: Hub) -> httpx.Response:
    payload = _payload_with(hub, b'"val_bpb":1.5', b'"val_bpb":-1.5')
    return hub.client.post("/api/v1/experiments", content=factory.raw_envelope(payload, EXP_TYPE, hub.key("alice")))


def non_canonical_payload(hub: Hub) -> httpx.Response:
    record = factory.experiment(hub.track, factory.REFERENCE, CHILD)
    payload = json.dumps(record.model_dump(mode="json", by_alias=True), indent=1).encode()
    return hub.client.post("/api/v1/experiments", content=factory.raw_envelope(payload, EXP_TYPE, hub.key("alice")))


def future_timestamp(hub: Hub) -> httpx.Response:
    record = factory.experiment(hub.track, factory.REFERENCE, CHILD, created_at=factory.future(3600))
    return hub.post("experiments", record, "alice")


def future_claim(hub: Hub) -> httpx.Response:
    return hub.post("claims", factory.claim(hub.track, factory.REFERENCE, CHILD, created_at=factory.future(3600)), "alice")


def registration_by_other_key(hub: Hub) -> httpx.Response:
    """Mallory signs a registration announcing Alice's public key."""
    record = factory.registration(hub.key("alice"), "mallory")
    return hub.client.post("/api/v1/clients", content=factory.envelope_bytes(record, hub.key("mallory")))


def key_registered_under_other_name(hub: Hub) -> httpx.Response:
    return hub.client.post(
        "/api/v1/clients", content=factory.envelope_bytes(factory.registration(hub.key("alice"), "alice2"), hub.key("alice"))
    )


def display_name_taken(hub: Hub) -> httpx.Response:
    keys = hub.key("bob")
    return hub.client.post("/api/v1/clients", content=factory.envelope_bytes(factory.registration(keys, "ALICE"), keys))


def source_hash_mismatch(hub: Hub) -> httpx.Response:
    claimed = sha256_hex("x = 1\n")
    return hub.client.put(f"/api/v1/sources/{claimed}", content=b"x = 2\n")


def source_does_not_parse(hub: Hub) -> httpx.Response:
    text = "def (:\n"
    return hub.client.put(f"/api/v1/sources/{sha256_hex(text)}", content=text.encode())


def bad_cursor(hub: Hub) -> httpx.Response:
    return hub.client.get("/api/v1/experiments", params={"cursor": "!!nope"})


CASES: list[tuple[Callable[[Hub], httpx.Response], int, str]] = [
    (malformed_json, 400, "malformed_json"),
    (not_an_envelope, 400, "envelope_malformed"),
    (unknown_schema, 422, "unknown_schema"),
    (wrong_schema, 422, "wrong_schema"),
    (bad_signature, 403, "bad_signature"),
    (tampered_payload, 403, "bad_signature"),
    (unregistered_key, 403, "unregistered_key"),
    (unknown_track, 404, "unknown_track"),
    (oversize_body, 413, "body_too_large"),
    (oversize_diff, 413, "diff_too_large"),
    (child_does_not_parse, 422, "unparsable_source"),
    (diff_does_not_apply, 422, "diff_does_not_apply"),
    (child_hash_mismatch, 422, "hash_mismatch"),
    (canonical_hash_mismatch, 422, "hash_mismatch"),
    (nan_metric, 422, "schema_invalid"),
    (negative_metric, 422, "out_of_range"),
    (non_canonical_payload, 422, "non_canonical"),
    (future_timestamp, 422, "future_timestamp"),
    (future_claim, 422, "future_timestamp"),
    (registration_by_other_key, 403, "bad_signature"),
    (key_registered_under_other_name, 409, "key_already_registered"),
    (display_name_taken, 409, "display_name_taken"),
    (source_hash_mismatch, 422, "hash_mismatch"),
    (source_does_not_parse, 422, "unparsable_source"),
    (bad_cursor, 400, "bad_cursor"),
]


@pytest.mark.parametrize(("send", "status", "code"), CASES, ids=[c[0].__name__ for c in CASES])
def test_bad_input_is_refused_and_stores_nothing(hub: Hub, send: Callable[[Hub], httpx.Response], status: int, code: str) -> None:
    assert hub.register("alice").status_code == 201
    before = hub.counts()
    response = send(hub)
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"]["code"] == code
    assert body["error"]["status"] == status
    assert body["error"]["message"]
    assert hub.counts() == before
    metrics = hub.client.get("/metrics").text
    if response.request.method in ("POST", "PUT"):
        assert f'autoresearch_hub_verification_failures_total{{reason="{code}"}} 1.0' in metrics
