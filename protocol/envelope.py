"""DSSE envelopes: sign a record, verify the bytes as received, then parse.

Layout (https://github.com/secure-systems-lab/dsse, "Envelope")::

    {"payloadType": "application/vnd.autoresearch.experiment.v1+json",
     "payload": "<base64 of the record's RFC 8785 canonical bytes>",
     "signatures": [{"keyid": "<hex sha256 of raw public key>", "sig": "<base64 Ed25519>",
                     "publicKey": "<hex of raw public key, optional>"}]}

The signature covers DSSE's pre-authentication encoding ``PAE(payloadType, payload)``, so a signature
cannot be replayed as another record type. ``publicKey`` is an optional convenience so that anyone can
audit an envelope offline; it is bound to ``keyid`` (its SHA-256 must equal the key id), and trusting a
key id is the caller's decision.

Verification: base64-decode, check the signature over PAE of the bytes as received, parse them into
the schema's model, and require that re-canonicalising the model gives the same bytes.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Annotated

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from .canonical import canonical_bytes, sha256_hex
from .errors import CanonicalError, EnvelopeError, SchemaError, SignatureError
from .keys import KeyPair, key_id, load_public_key, verify_raw
from .records import RANGE_ERRORS, RECORD_TYPES, SignedRecord, WireModel

MAX_ENVELOPE_BYTES = 1024 * 1024  # envelope JSON, bytes (a 256 KiB diff fits with room to spare)


def payload_type(schema: str) -> str:
    """Media type of a schema: ``autoresearch/experiment/v1`` → ``application/vnd.autoresearch.experiment.v1+json``."""
    _, kind, version = schema.split("/")
    return f"application/vnd.autoresearch.{kind}.{version}+json"


PAYLOAD_TYPES: dict[str, str] = {payload_type(s): s for s in RECORD_TYPES}


def pae(payload_type_: str, payload: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding: ``"DSSEv1" SP LEN(type) SP type SP LEN(body) SP body``."""
    t = payload_type_.encode("utf-8")
    return b"DSSEv1 %d %s %d %s" % (len(t), t, len(payload), payload)


class EnvelopeSignature(BaseModel):
    """One signature of an envelope: key id (hex SHA-256 of the raw public key), base64 Ed25519
    signature (64 bytes) over PAE, and optionally the raw public key as hex (``publicKey``)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
    keyid: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
    sig: Annotated[str, StringConstraints(max_length=200)]
    public_key: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")] | None = Field(
        default=None, alias="publicKey"
    )


class Envelope(BaseModel):
    """A DSSE envelope as sent over the wire and stored by the hub.

    ``payload`` is standard base64 (RFC 4648 §4, padded) of the record's canonical bytes; at most
    ``MAX_ENVELOPE_BYTES`` characters.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
    payload_type: Annotated[str, StringConstraints(max_length=200)] = Field(alias="payloadType")
    payload: Annotated[str, StringConstraints(max_length=MAX_ENVELOPE_BYTES)]
    signatures: Annotated[list[EnvelopeSignature], Field(min_length=1, max_length=8)]

    def to_json(self) -> str:
        """The envelope as JSON text (what a hub stores and serves)."""
        return self.model_dump_json(by_alias=True, exclude_none=True)


@dataclass(frozen=True)
class Verified:
    """A verified envelope: the parsed record, its id, the signer's key id and the payload bytes."""

    record: SignedRecord
    record_id: str
    keyid: str
    payload: bytes
    envelope: Envelope


def sign(record: WireModel, keys: KeyPair, *, include_public_key: bool = True) -> Envelope:
    """Sign a record: canonical bytes → DSSE envelope with one Ed25519 signature over PAE.

    ``include_public_key`` embeds the signer's raw public key (hex) beside its key id so anyone can
    check the envelope offline; it is bound to the key id at verification.

    Raises:
        SchemaError: ``record`` is not one of the signed record types (``RECORD_TYPES``), or holds a
            value RFC 8785 cannot carry.
    """
    schema = record.model_dump(by_alias=True).get("schema")
    if schema not in RECORD_TYPES or not isinstance(record, RECORD_TYPES[schema]):
        raise SchemaError(f"{type(record).__name__} is not a signed record type; known: {', '.join(RECORD_TYPES)}")
    body = canonical_bytes(record)
    ptype = payload_type(schema)
    sig = keys.sign(pae(ptype, body))
    return Envelope(
        payloadType=ptype,
        payload=base64.b64encode(body).decode("ascii"),
        signatures=[
            EnvelopeSignature(
                keyid=keys.key_id,
                sig=base64.b64encode(sig).decode("ascii"),
                publicKey=keys.public_key_hex if include_public_key else None,
            )
        ],
    )


def parse_envelope(data: bytes | str | dict[str, object] | Envelope) -> Envelope:
    """Parse envelope JSON (bytes, text, or an already-decoded dict).

    Raises:
        EnvelopeError: not JSON, too large, or not the DSSE layout.
    """
    if isinstance(data, Envelope):
        return data
    try:
        if isinstance(data, (bytes, str)):
            if len(data) > MAX_ENVELOPE_BYTES:
                raise EnvelopeError(f"envelope is larger than {MAX_ENVELOPE_BYTES} bytes", reason="too_large")
            data = json.loads(data)
        return Envelope.model_validate(data)
    except ValidationError as exc:
        raise EnvelopeError(f"not a DSSE envelope: {_first_error(exc)}") from exc
    except (ValueError, RecursionError) as exc:  # not JSON, not UTF-8, too deep, a huge integer
        raise EnvelopeError(f"envelope is not JSON: {str(exc)[:200]}", reason="malformed_json") from exc


def verify(
    data: bytes | str | dict[str, object] | Envelope,
    public_key: Ed25519PublicKey | bytes | str | None = None,
    *,
    expected_schema: str | None = None,
) -> Verified:
    """Verify an envelope and return its record.

    ``public_key`` (object, raw bytes or hex) is the key to verify under; when None, the envelope's
    embedded ``publicKey`` is used (bound to its key id). Trusting that key id is the caller's job.

    Raises:
        EnvelopeError: malformed envelope or unknown payloadType.
        SignatureError: no signature verifies under the key (or the key does not match the key id).
        SchemaError: payload is not a valid record, or not of ``expected_schema``.
        CanonicalError: payload bytes are not the canonical bytes of the record they decode to.
    """
    env = parse_envelope(data)
    schema = PAYLOAD_TYPES.get(env.payload_type)
    if schema is None:
        raise EnvelopeError(f"unknown payloadType {env.payload_type!r}", reason="unknown_payload_type")
    if expected_schema is not None and schema != expected_schema:
        raise SchemaError(f"expected a {expected_schema} record, got {schema}", reason="wrong_schema")
    try:
        body = base64.b64decode(env.payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise EnvelopeError(f"payload is not base64: {exc}", reason="bad_base64") from exc

    keyid = _check_signatures(env, body, public_key)
    record = _parse_record(schema, body)
    canonical = canonical_bytes(record)
    if canonical != body:
        raise CanonicalError(_describe_mismatch(body, canonical))
    return Verified(record=record, record_id=sha256_hex(body), keyid=keyid, payload=body, envelope=env)


def _check_signatures(env: Envelope, body: bytes, public_key: Ed25519PublicKey | bytes | str | None) -> str:
    message = pae(env.payload_type, body)
    errors: list[str] = []
    for entry in env.signatures:
        key = public_key if public_key is not None else entry.public_key
        if key is None:
            errors.append(f"{entry.keyid[:12]}: no public key given or embedded")
            continue
        pub = key if isinstance(key, Ed25519PublicKey) else load_public_key(key)
        if key_id(pub) != entry.keyid:
            errors.append(f"{entry.keyid[:12]}: public key does not match key id")
            continue
        try:
            sig = base64.b64decode(entry.sig, validate=True)
            verify_raw(pub, sig, message)
        except (binascii.Error, ValueError, SignatureError):
            errors.append(f"{entry.keyid[:12]}: signature does not verify")
            continue
        return entry.keyid
    raise SignatureError("no valid signature: " + "; ".join(errors))


def _parse_record(schema: str, body: bytes) -> SignedRecord:
    model = RECORD_TYPES[schema]
    try:
        record = model.model_validate_json(body)
    except ValidationError as exc:
        reason = "out_of_range" if exc.errors()[0]["type"] in RANGE_ERRORS else "schema_invalid"
        raise SchemaError(f"invalid {schema} record: {_first_error(exc)}", reason=reason) from exc
    return record  # type: ignore[return-value]


def _describe_mismatch(body: bytes, canonical: bytes) -> str:
    """One line saying where ``body`` first departs from its canonical form, with both excerpts."""
    at = next((i for i, (a, b) in enumerate(zip(body, canonical, strict=False)) if a != b), min(len(body), len(canonical)))
    lo = max(0, at - 20)
    return (
        "payload is not the RFC 8785 canonical form of the record it decodes to "
        f"(first difference at byte {at}: got {body[lo:at + 20]!r}, canonical {canonical[lo:at + 20]!r}); "
        "sign the canonical bytes, never re-serialised JSON"
    )


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err.get("loc", ())) or "(root)"
    more = f" (+{exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{loc}: {err.get('msg')}{more}"


def parse_record(data: bytes | str) -> SignedRecord:
    """Parse record JSON (any signed schema, chosen by its ``schema`` field).

    Raises:
        SchemaError: not JSON, no or unknown ``schema``, or invalid fields.
    """
    try:
        obj = json.loads(data)
    except json.JSONDecodeError as exc:
        raise SchemaError(f"record is not JSON: {exc}", reason="malformed_json") from exc
    schema = obj.get("schema") if isinstance(obj, dict) else None
    if schema not in RECORD_TYPES:
        raise SchemaError(f"unknown schema {schema!r}; known: {', '.join(RECORD_TYPES)}", reason="unknown_schema")
    return _parse_record(schema, data.encode() if isinstance(data, str) else data)
