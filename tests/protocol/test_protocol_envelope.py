"""DSSE envelopes with real Ed25519 keys: round trips, tampering, other keys, PAE, canonical payloads."""

from __future__ import annotations

import base64
import json

import pytest
from make_vectors import raw_envelope
from protocol_factories import all_records, claim, experiment

from autoresearch.protocol import (
    CLAIM_SCHEMA,
    EXPERIMENT_SCHEMA,
    CanonicalError,
    Envelope,
    EnvelopeError,
    EnvelopeSignature,
    KeyPair,
    SchemaError,
    SignatureError,
    Suggestion,
    canonical_bytes,
    pae,
    parse_envelope,
    payload_type,
    record_id,
    sign,
    verify,
)
from autoresearch.protocol.envelope import MAX_ENVELOPE_BYTES


@pytest.fixture(scope="module")
def keys() -> KeyPair:
    return KeyPair.generate()


@pytest.fixture(scope="module")
def other() -> KeyPair:
    return KeyPair.generate()


def _with_payload(env: Envelope, body: bytes) -> dict[str, object]:
    data = json.loads(env.to_json())
    data["payload"] = base64.b64encode(body).decode()
    return data


def _with_sig(env: Envelope, sig: bytes) -> dict[str, object]:
    data = json.loads(env.to_json())
    data["signatures"][0]["sig"] = base64.b64encode(sig).decode()
    return data


def test_pae_matches_dsse_spec_example() -> None:
    """DSSE protocol.md: PAE("http://example.com/HelloWorld", "hello world")."""
    assert pae("http://example.com/HelloWorld", b"hello world") == b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"


def test_pae_lengths_are_bytes_not_characters() -> None:
    assert pae("t/é", "✓".encode()) == "DSSEv1 4 t/é 3 ✓".encode()


def test_payload_types() -> None:
    assert payload_type(EXPERIMENT_SCHEMA) == "application/vnd.autoresearch.experiment.v1+json"
    assert payload_type(CLAIM_SCHEMA) == "application/vnd.autoresearch.claim.v1+json"


@pytest.mark.parametrize("name", ["experiment_ok", "experiment_crash", "calibration", "claim", "client"])
def test_sign_verify_round_trip(keys: KeyPair, name: str) -> None:
    record = all_records(keys)[name]
    env = sign(record, keys)  # type: ignore[arg-type]
    for data in (env, env.to_json(), env.to_json().encode(), json.loads(env.to_json())):
        result = verify(data, keys.public_key)
        assert result.record == record
        assert result.record_id == record_id(record)  # type: ignore[arg-type]
        assert result.keyid == keys.key_id
        assert result.payload == canonical_bytes(record)  # type: ignore[arg-type]
    assert verify(env.to_json()).record == record  # embedded publicKey
    assert verify(env.to_json(), keys.public_key_hex).record == record
    assert verify(env.to_json(), bytes.fromhex(keys.public_key_hex)).record == record


def test_envelope_layout(keys: KeyPair) -> None:
    env = json.loads(sign(experiment(), keys).to_json())
    assert set(env) == {"payloadType", "payload", "signatures"}
    assert set(env["signatures"][0]) == {"keyid", "sig", "publicKey"}
    assert base64.b64decode(env["payload"]) == canonical_bytes(experiment())
    assert len(base64.b64decode(env["signatures"][0]["sig"])) == 64
    bare = json.loads(sign(experiment(), keys, include_public_key=False).to_json())
    assert set(bare["signatures"][0]) == {"keyid", "sig"}


def test_every_payload_byte_flip_is_rejected(keys: KeyPair) -> None:
    env = sign(claim(), keys)
    body = canonical_bytes(claim())
    for i in range(len(body)):
        for bit in (0x01, 0x80):
            tampered = bytearray(body)
            tampered[i] ^= bit
            with pytest.raises(SignatureError):
                verify(_with_payload(env, bytes(tampered)), keys.public_key)


def test_every_signature_byte_flip_is_rejected(keys: KeyPair) -> None:
    env = sign(claim(), keys)
    sig = base64.b64decode(env.signatures[0].sig)
    for i in range(len(sig)):
        for bit in (0x01, 0x80):
            tampered = bytearray(sig)
            tampered[i] ^= bit
            with pytest.raises(SignatureError):
                verify(_with_sig(env, bytes(tampered)), keys.public_key)


def test_truncated_or_extended_payload_is_rejected(keys: KeyPair) -> None:
    env = sign(claim(), keys)
    body = canonical_bytes(claim())
    for changed in (body[:-1], body + b" ", b" " + body, b""):
        with pytest.raises(SignatureError):
            verify(_with_payload(env, changed), keys.public_key)


def test_valid_signature_under_another_key_is_rejected(keys: KeyPair, other: KeyPair) -> None:
    by_other = sign(experiment(), other)
    assert verify(by_other.to_json()).keyid == other.key_id  # valid, but by `other`
    with pytest.raises(SignatureError, match="does not match key id"):
        verify(by_other.to_json(), keys.public_key)
    # the same signature relabelled with our key id (and our public key) does not verify either
    forged = json.loads(by_other.to_json())
    forged["signatures"][0].update(keyid=keys.key_id, publicKey=keys.public_key_hex)
    with pytest.raises(SignatureError, match="signature does not verify"):
        verify(forged, keys.public_key)
    with pytest.raises(SignatureError, match="signature does not verify"):
        verify(forged)


def test_embedded_public_key_must_match_key_id(keys: KeyPair, other: KeyPair) -> None:
    data = json.loads(sign(experiment(), keys).to_json())
    data["signatures"][0]["publicKey"] = other.public_key_hex
    with pytest.raises(SignatureError, match="does not match key id"):
        verify(data)


def test_no_key_given_or_embedded_is_rejected(keys: KeyPair) -> None:
    env = sign(experiment(), keys, include_public_key=False)
    with pytest.raises(SignatureError, match="no public key"):
        verify(env)
    assert verify(env, keys.public_key).keyid == keys.key_id


def test_signature_replayed_under_another_payload_type_is_rejected(keys: KeyPair) -> None:
    """PAE binds the payloadType: a claim signature relabelled as an experiment does not verify."""
    data = json.loads(sign(claim(), keys).to_json())
    data["payloadType"] = payload_type(EXPERIMENT_SCHEMA)
    with pytest.raises(SignatureError):
        verify(data, keys.public_key)


def test_non_canonical_but_equivalent_payload_is_rejected(keys: KeyPair) -> None:
    obj = json.loads(canonical_bytes(experiment()))
    for body in (
        json.dumps(obj).encode(),  # spaces after separators
        json.dumps(obj, sort_keys=True, indent=2).encode(),
        json.dumps(obj, sort_keys=True, separators=(",", ":")).encode(),  # \u escapes for non-ASCII
        json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode() + b"\n",
    ):
        env = raw_envelope(body, keys)
        with pytest.raises(CanonicalError, match="first difference at byte"):
            verify(env, keys.public_key)


def test_expected_schema(keys: KeyPair) -> None:
    env = sign(claim(), keys)
    assert verify(env, keys.public_key, expected_schema=CLAIM_SCHEMA).record == claim()
    with pytest.raises(SchemaError) as info:
        verify(env, keys.public_key, expected_schema=EXPERIMENT_SCHEMA)
    assert info.value.reason == "wrong_schema"


def test_invalid_record_is_rejected_after_the_signature_check(keys: KeyPair, other: KeyPair) -> None:
    """A signed but invalid payload is a SchemaError; the same payload badly signed is a SignatureError
    (the signature is checked over the bytes as received, before parsing)."""
    body = canonical_bytes(experiment()).replace(b'"val_bpb":1.8765', b'"val_bpb":0')
    with pytest.raises(SchemaError, match="metrics.val_bpb"):
        verify(raw_envelope(body, keys), keys.public_key)
    with pytest.raises(SignatureError):
        verify(raw_envelope(body, other), keys.public_key)


def test_multiple_signatures_any_valid_one_verifies(keys: KeyPair, other: KeyPair) -> None:
    good = sign(experiment(), keys)
    bad = EnvelopeSignature(keyid=other.key_id, sig=base64.b64encode(b"\0" * 64).decode(), publicKey=other.public_key_hex)
    env = Envelope(payloadType=good.payload_type, payload=good.payload, signatures=[bad, good.signatures[0]])
    assert verify(env).keyid == keys.key_id


def test_malformed_envelopes() -> None:
    cases = {
        b"{": "malformed_json",
        b"[]": "envelope_malformed",
        b'{"payloadType": "x", "payload": "", "signatures": []}': "envelope_malformed",
        b"x" * (MAX_ENVELOPE_BYTES + 1): "too_large",
    }
    for data, reason in cases.items():
        with pytest.raises(EnvelopeError) as info:
            parse_envelope(data)
        assert info.value.reason == reason
    oversized = {"payloadType": "x", "payload": "A" * (MAX_ENVELOPE_BYTES + 4), "signatures": [{"keyid": "0" * 64, "sig": ""}]}
    with pytest.raises(EnvelopeError, match="payload"):
        parse_envelope(oversized)  # an already-decoded dict is bounded too


def test_bad_public_key_argument_is_a_signature_error(keys: KeyPair) -> None:
    with pytest.raises(SignatureError) as info:
        verify(sign(claim(), keys), "abcd")
    assert info.value.reason == "bad_public_key"


def test_only_signed_record_types_can_be_signed(keys: KeyPair) -> None:
    with pytest.raises(SchemaError, match="not a signed record type"):
        sign(Suggestion(kind="explore", direction="DEPTH ↑", rationale="under-tried"), keys)  # type: ignore[arg-type]
