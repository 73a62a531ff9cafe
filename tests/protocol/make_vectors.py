"""Generate the golden test vectors under ``tests/protocol/vectors/``.

    .venv/bin/python tests/protocol/make_vectors.py            # rewrite tests/protocol/vectors/
    .venv/bin/python tests/protocol/make_vectors.py OUT_DIR    # write elsewhere

Output is deterministic (fixed records, fixed TEST-ONLY keys, Ed25519 signatures are deterministic
per RFC 8032), so regenerating gives byte-identical files; ``test_protocol_vectors.py`` checks that.

Layout::

    vectors/test_keys.json      the TEST-ONLY key seeds, public keys and key ids (never use them)
    vectors/manifest.json       per vector: file, what it catches, expected result
    vectors/good/<name>.json    envelopes that verify, with the expected record id
    vectors/bad/<name>.json     envelopes that must fail, named for what they catch

Bad vectors that test the record rules are signed correctly over the bad payload bytes, so the only
thing wrong with them is the thing named: a verifier must get past the signature and still reject.
"""

from __future__ import annotations

import base64
import json
import sys
from collections.abc import Callable
from pathlib import Path

from protocol_factories import (
    OTHER_KEY_SEED,
    TEST_KEY_SEED,
    all_records,
    experiment,
    other_keys,
    vector_keys,
)

from autoresearch.protocol import (
    CLAIM_SCHEMA,
    EXPERIMENT_SCHEMA,
    KeyPair,
    canonical_bytes,
    canonical_json,
    pae,
    payload_type,
    record_id,
    sign,
)

VECTORS_DIR = Path(__file__).resolve().parent / "vectors"
EXPERIMENT_TYPE = payload_type(EXPERIMENT_SCHEMA)
CLAIM_TYPE = payload_type(CLAIM_SCHEMA)


def raw_envelope(
    body: bytes,
    keys: KeyPair,
    *,
    ptype: str = EXPERIMENT_TYPE,
    signed_type: str | None = None,
    keyid: str | None = None,
    public_key: str | None = "self",
) -> dict[str, object]:
    """A DSSE envelope over arbitrary ``body`` bytes, signed over PAE(``signed_type`` or ``ptype``).

    ``public_key="self"`` embeds the signer's key; None omits it; any other hex string is embedded as is.
    """
    sig = keys.sign(pae(signed_type or ptype, body))
    entry: dict[str, str] = {"keyid": keyid or keys.key_id, "sig": base64.b64encode(sig).decode("ascii")}
    if public_key is not None:
        entry["publicKey"] = keys.public_key_hex if public_key == "self" else public_key
    return {"payloadType": ptype, "payload": base64.b64encode(body).decode("ascii"), "signatures": [entry]}


def _replace_once(body: bytes, old: bytes, new: bytes) -> bytes:
    if body.count(old) != 1:
        raise ValueError(f"expected exactly one {old!r} in the payload")
    return body.replace(old, new)


def _record_dict(**metric_overrides: object) -> dict[str, object]:
    """The sample experiment as a JSON dict, with ``metrics`` fields replaced (bypassing validation)."""
    data: dict[str, object] = json.loads(canonical_bytes(experiment()))
    metrics = dict(data["metrics"])
    metrics.update(metric_overrides)
    data["metrics"] = metrics
    return data


def good_vectors(keys: KeyPair) -> dict[str, tuple[str, object]]:
    """name → (what it shows, record)."""
    records = all_records(keys)
    edge = experiment(
        description='unicode → ✓ 😀 "quoted" back\\slash\ttab\ncontrol\u0001 é (NFC) e\u0301 (NFD)',
        metrics=experiment().metrics.model_copy(
            update={"tokens_per_second": 1e10, "training_seconds": 1e-7, "mfu_percent": 2.2250738585072014e-308,
                    "total_tokens": 10**15}
        ),
        seed=-(2**53 - 1),
    )
    return {
        "experiment_ok": ("a kept experiment with every metric", records["experiment_ok"]),
        "experiment_crash": ("a crash: val_bpb null, status crash, error tail", records["experiment_crash"]),
        "calibration": ("a calibration record (5 reference runs, fitted curve)", records["calibration"]),
        "claim": ("a claim on (parent, child) with a 60 s lease", records["claim"]),
        "client": ("a client registration signed by the key it announces", records["client"]),
        "experiment_edge_values": (
            "RFC 8785 edge cases: raw UTF-8 incl. astral plane, escapes, NFC vs NFD kept apart, "
            "1e-7, the smallest normal double, the range maxima 1e10 and 10**15, −(2**53 − 1)",
            edge,
        ),
    }


BadVector = tuple[str, str, str, str, Callable[[], object]]


def bad_vectors(keys: KeyPair, other: KeyPair) -> list[BadVector]:
    """(name, what it catches, expected error class, verify with "test_key"|"embedded", builder)."""
    body = canonical_bytes(experiment())
    obj = json.loads(body)
    good = raw_envelope(body, keys)

    def signed(payload: bytes) -> Callable[[], object]:
        return lambda: raw_envelope(payload, keys)

    def flip_sig() -> object:
        sig = bytearray(base64.b64decode(good["signatures"][0]["sig"]))
        sig[17] ^= 0x01
        return {**good, "signatures": [{**good["signatures"][0], "sig": base64.b64encode(bytes(sig)).decode()}]}

    def tampered() -> object:
        return {**good, "payload": base64.b64encode(_replace_once(body, b'"val_bpb":1.8765', b'"val_bpb":1.8764')).decode()}

    def truncated_sig() -> object:
        sig = base64.b64decode(good["signatures"][0]["sig"])[:63]
        return {**good, "signatures": [{**good["signatures"][0], "sig": base64.b64encode(sig).decode()}]}

    reordered = json.dumps(dict(reversed(list(obj.items()))), separators=(",", ":"), ensure_ascii=False).encode()
    pretty = json.dumps(obj, indent=1, sort_keys=True, ensure_ascii=False).encode()
    ascii_escaped = json.dumps(obj, separators=(",", ":"), sort_keys=True, ensure_ascii=True).encode()
    crash = json.loads(canonical_bytes(experiment(outcome="crash", status="crash", metrics=experiment().metrics.model_copy(update={"val_bpb": None}))))
    crash["metrics"]["val_bpb"] = 0.0
    claim_body = canonical_bytes(all_records(keys)["claim"])
    extra = {**obj, "comment": "not a field"}
    ts = b'"created_at":"2026-03-14T15:09:26.535000Z"'
    if ts not in body:  # the serialiser's timestamp format is part of the canonical bytes
        raise ValueError(f"unexpected timestamp form in {body!r}")

    return [
        # -- not canonical (signature fine, bytes are not the RFC 8785 form of the record) ---------
        ("reordered_keys", "keys not in RFC 8785 order", "CanonicalError", "test_key", signed(reordered)),
        ("whitespace_payload", "pretty-printed JSON (insignificant whitespace)", "CanonicalError", "test_key", signed(pretty)),
        ("escaped_unicode", "\\uXXXX escapes where RFC 8785 wants raw UTF-8", "CanonicalError", "test_key", signed(ascii_escaped)),
        ("float_exponent_form", "a number not in ECMAScript shortest form (18.765e-1)", "CanonicalError", "test_key",
         signed(_replace_once(body, b'"val_bpb":1.8765', b'"val_bpb":18.765e-1'))),
        ("negative_zero", "-0.0 where RFC 8785 writes 0", "CanonicalError", "test_key",
         signed(_replace_once(body, b'"peak_vram_mib":0', b'"peak_vram_mib":-0.0'))),
        ("duplicate_key", "a key given twice (parsers disagree on which wins)", "CanonicalError", "test_key",
         signed(_replace_once(body, b'{"calibration_id":', b'{"calibration_id":null,"calibration_id":'))),
        # -- invalid record (signed, canonical-looking, but breaks a record rule) ------------------
        ("float_nan", "NaN in a metric", "SchemaError", "test_key",
         signed(_replace_once(body, b'"val_bpb":1.8765', b'"val_bpb":NaN'))),
        ("float_infinity", "Infinity in a metric", "SchemaError", "test_key",
         signed(_replace_once(body, b'"z":5.875', b'"z":Infinity'))),
        ("float_overflow", "1e400 (overflows to infinity)", "SchemaError", "test_key",
         signed(_replace_once(body, b'"z":5.875', b'"z":1e400'))),
        ("integer_beyond_2_53", "an integer outside ±(2**53 − 1) (RFC 8785 / I-JSON)", "SchemaError", "test_key",
         signed(_replace_once(body, b'"seed":0', b'"seed":9007199254740993'))),
        ("float_subnormal", "a subnormal metric (5e-324 MFU): no number in a record is subnormal", "SchemaError",
         "test_key", signed(canonical_json(_record_dict(mfu_percent=5e-324)))),
        ("out_of_range", "a metric beyond its valid range (1e21 tokens/s)", "SchemaError", "test_key",
         signed(canonical_json(_record_dict(tokens_per_second=1e21)))),
        ("val_bpb_zero_ok", "val_bpb 0.0 on an ok run (val_bpb must be > 0)", "SchemaError", "test_key",
         signed(canonical_json(_record_dict(val_bpb=0.0)))),
        ("crash_with_val_bpb_zero", "upstream's results.tsv 0.0 on a crash (must be null)", "SchemaError", "test_key",
         signed(canonical_json(crash))),
        ("naive_timestamp", "created_at without a timezone", "SchemaError", "test_key",
         signed(_replace_once(body, ts, b'"created_at":"2026-03-14T15:09:26.535000"'))),
        ("non_utc_timestamp", "created_at with a +02:00 offset (must be UTC)", "SchemaError", "test_key",
         signed(_replace_once(body, ts, b'"created_at":"2026-03-14T17:09:26.535000+02:00"'))),
        ("extra_field", "a field the schema does not define", "SchemaError", "test_key",
         signed(canonical_json(extra))),
        ("schema_mismatch", "a claim payload under the experiment payloadType", "SchemaError", "test_key",
         lambda: raw_envelope(claim_body, keys, ptype=EXPERIMENT_TYPE)),
        # -- signature --------------------------------------------------------------------------------
        ("wrong_payload_type", "a signature replayed under another payloadType (PAE binds the type)", "SignatureError",
         "test_key", lambda: raw_envelope(body, keys, ptype=CLAIM_TYPE, signed_type=EXPERIMENT_TYPE)),
        ("bad_signature", "one bit of the signature flipped", "SignatureError", "test_key", flip_sig),
        ("truncated_signature", "a 63-byte signature", "SignatureError", "test_key", truncated_sig),
        ("tampered_payload", "the payload changed after signing (val_bpb 1.8765 → 1.8764)", "SignatureError",
         "test_key", tampered),
        ("signed_by_other_key", "a valid signature, but by a key other than the expected one", "SignatureError",
         "test_key", lambda: raw_envelope(body, other)),
        ("embedded_key_mismatch", "publicKey is another key than the one keyid names", "SignatureError", "embedded",
         lambda: raw_envelope(body, keys, public_key=other.public_key_hex)),
        ("keyid_mismatch", "keyid names another key than the one that signed", "SignatureError", "embedded",
         lambda: raw_envelope(body, keys, keyid=other.key_id)),
        ("missing_public_key", "no publicKey embedded and none given", "SignatureError", "embedded",
         lambda: raw_envelope(body, keys, public_key=None)),
        # -- envelope ---------------------------------------------------------------------------------
        ("unknown_payload_type", "a payloadType that is no autoresearch schema", "EnvelopeError", "test_key",
         lambda: raw_envelope(body, keys, ptype="application/json")),
        ("bad_base64", "payload is not base64", "EnvelopeError", "test_key",
         lambda: {**good, "payload": "not base64!"}),
        ("extra_envelope_field", "an envelope field DSSE does not define", "EnvelopeError", "test_key",
         lambda: {**good, "signer": "me"}),
        ("no_signatures", "an envelope with an empty signature list", "EnvelopeError", "test_key",
         lambda: {**good, "signatures": []}),
        ("malformed_json", "not JSON at all (truncated file)", "EnvelopeError", "test_key",
         lambda: json.dumps(good)[:-7]),
    ]


_DEFAULT_REASONS = {
    "CanonicalError": "non_canonical",
    "SchemaError": "schema_invalid",
    "SignatureError": "bad_signature",
    "EnvelopeError": "envelope_malformed",
}
_REASONS = {
    "unknown_payload_type": "unknown_payload_type", "bad_base64": "bad_base64", "malformed_json": "malformed_json",
    "float_subnormal": "out_of_range", "out_of_range": "out_of_range", "val_bpb_zero_ok": "out_of_range",
    "integer_beyond_2_53": "out_of_range", "crash_with_val_bpb_zero": "out_of_range",
}


def _write(path: Path, content: object) -> None:
    text = content if isinstance(content, str) else json.dumps(content, indent=2, ensure_ascii=False) + "\n"
    path.write_text(text, encoding="utf-8")


def generate(out: Path) -> None:
    """Write every vector, the keys file and the manifest under ``out``."""
    keys, other = vector_keys(), other_keys()
    (out / "good").mkdir(parents=True, exist_ok=True)
    (out / "bad").mkdir(parents=True, exist_ok=True)
    _write(
        out / "test_keys.json",
        {
            "WARNING": "TEST VECTOR KEYS: published on purpose, never use them to sign real records",
            "test_key": {"seed": TEST_KEY_SEED.hex(), "public_key": keys.public_key_hex, "key_id": keys.key_id},
            "other_key": {"seed": OTHER_KEY_SEED.hex(), "public_key": other.public_key_hex, "key_id": other.key_id},
        },
    )
    manifest: dict[str, dict[str, object]] = {}
    for name, (what, record) in good_vectors(keys).items():
        env = sign(record, keys)
        _write(out / "good" / f"{name}.json", json.loads(env.to_json()))
        manifest[f"good/{name}.json"] = {
            "shows": what,
            "expect": "valid",
            "schema": record.model_dump(by_alias=True)["schema"],
            "record_id": record_id(record),
            "key_id": keys.key_id,
        }
    for name, what, error, verify_with, build in bad_vectors(keys, other):
        _write(out / "bad" / f"{name}.json", build())
        manifest[f"bad/{name}.json"] = {
            "catches": what,
            "expect": error,
            "reason": _REASONS.get(name, _DEFAULT_REASONS[error]),
            "verify_with": verify_with,
        }
    _write(out / "manifest.json", manifest)


if __name__ == "__main__":
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else VECTORS_DIR)
