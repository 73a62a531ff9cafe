"""Checks a signed record must pass before the store keeps it. Pure: no SQL, no HTTP.

The route verifies the envelope under the registered key (:func:`verify_under`), then
:func:`check_experiment` re-derives everything the hub keeps about an experiment from the record and
its parent source: the child source (the diff applied to the parent), its hashes and canonical
hashes, the direction keys and near-duplicate fingerprints. The statistics (z, ECM, gain) are the
store's: it recomputes them from the signer's calibration (:mod:`autoresearch.protocol.best`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from autoresearch.protocol import (
    AST_LOCK,
    ClientRegistration,
    ExperimentRecord,
    ProtocolError,
    SchemaError,
    TrackSpec,
    Verified,
    parse_envelope,
    sha256_hex,
    source,
    verify,
)

from . import limits
from .errors import Rejected, from_protocol
from .settings import HubSettings

_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CheckedExperiment:
    """An experiment that passed every check, with what the hub derived from it."""

    verified: Verified
    record: ExperimentRecord
    parent_source: str
    child_source: str
    directions: list[str]
    seed_only: bool
    const_changes: source.ConstChanges | None
    minhash: bytes | None


def signer_key_ids(body: bytes) -> list[str]:
    """Key ids of the envelope's signatures, in order.

    Raises:
        BadRequest: ``malformed_json`` / ``envelope_malformed``.
    """
    try:
        return [s.keyid for s in parse_envelope(body).signatures]
    except ProtocolError as exc:
        raise from_protocol(exc) from exc


def verify_under(body: bytes, public_key_hex: str, schema: str) -> Verified:
    """Verify the envelope bytes under one public key, expecting ``schema``.

    Raises:
        HubError: the protocol failure mapped to its code (``bad_signature``, ``wrong_schema``,
            ``unknown_schema``, ``schema_invalid``, ``non_canonical`` …).
    """
    try:
        return verify(body, public_key_hex, expected_schema=schema)
    except ProtocolError as exc:
        raise from_protocol(exc) from exc


def verify_registration(body: bytes, schema: str) -> Verified:
    """Verify a client registration under the public key it announces (proof of possession).

    Raises:
        HubError: as :func:`verify_under`.
    """
    try:
        env = parse_envelope(body)
        unverified = verify(env, None, expected_schema=schema)  # embedded key, bound to key id
    except ProtocolError as exc:
        raise from_protocol(exc) from exc
    record = unverified.record
    if not isinstance(record, ClientRegistration):
        raise Rejected("expected a client registration", code="wrong_schema")
    return verify_under(body, record.public_key, schema)


def check_not_future(created_at: datetime, now: datetime, max_future_seconds: float) -> None:
    """Raises Rejected ``future_timestamp`` when ``created_at`` is more than the allowance ahead."""
    if created_at - now > timedelta(seconds=max_future_seconds):
        raise Rejected(
            f"created_at {created_at.isoformat()} is more than {max_future_seconds:.0f} s in the future "
            f"(hub time {now.isoformat()}); check the clock",
            code="future_timestamp",
        )


def check_experiment(
    verified: Verified,
    spec: TrackSpec,
    parent_source: str,
    *,
    now: datetime,
    max_diff_bytes: int,
    max_source_bytes: int,
    max_future_seconds: float,
    max_source_ast_nodes: int = 20_000,
    max_changed_symbols: int = 64,
) -> CheckedExperiment:
    """Every content check of an experiment record (the signature is already verified; the record's
    own bounds are :func:`autoresearch.hub.limits.check_record`'s). The cost bounds
    (:func:`autoresearch.hub.limits.check_changes`) run before any AST work.

    Raises:
        HubError: ``diff_too_large``, ``future_timestamp``, ``hash_mismatch``, ``diff_does_not_apply``,
            ``unparsable_source``, ``source_too_large``, ``source_too_complex``, ``too_many_changes``,
            ``bad_text``.
    """
    record = verified.record
    if not isinstance(record, ExperimentRecord):
        raise Rejected("expected an experiment record", code="wrong_schema")
    diff_size = len(record.diff.encode("utf-8"))
    if diff_size > max_diff_bytes:
        raise Rejected(f"diff is {diff_size} bytes; this hub takes at most {max_diff_bytes}", code="diff_too_large")
    check_not_future(record.created_at, now, max_future_seconds)
    if sha256_hex(parent_source) != record.parent_sha256:
        raise Rejected("parent source does not match parent_sha256", code="hash_mismatch")
    try:
        child = source.apply_diff(parent_source, record.diff, record.child_sha256)
    except source.PatchError as exc:
        raise Rejected(str(exc), code=exc.reason) from exc
    if len(child.encode("utf-8")) > max_source_bytes:
        raise Rejected(f"child train.py is larger than {max_source_bytes} bytes", code="source_too_large")
    limits.check_changes(parent_source, child, max_nodes=max_source_ast_nodes, max_changed=max_changed_symbols)
    with AST_LOCK:
        _check_canonical(parent_source, record.parent_canonical_sha256, "parent")
        _check_canonical(child, record.child_canonical_sha256, "child")
        keys = _directions(parent_source, child)
        changes = source.const_changes(parent_source, child, keys)
        minhash = source.minhash_signature(source.diff_tokens(parent_source, child))
    return CheckedExperiment(
        verified=verified,
        record=record,
        parent_source=parent_source,
        child_source=child,
        directions=keys,
        seed_only=source.is_seed_only(keys),
        const_changes=changes,
        minhash=minhash,
    )


def check_experiment_under(verified: Verified, spec: TrackSpec, parent_source: str, settings: HubSettings, *,
                           now: datetime) -> CheckedExperiment:
    """:func:`check_experiment` with this hub's bounds (:class:`~autoresearch.hub.settings.HubSettings`):
    the one call of ``POST /api/v1/experiments`` and of ``autoresearch hub import``. CPU only (no
    database): call it outside any write transaction. Runs on the hub's side of the trust boundary
    on untrusted text, parsed by ``ast`` (never executed).

    Raises:
        HubError: as :func:`check_experiment`.
    """
    s = settings
    return check_experiment(
        verified, spec, parent_source, now=now, max_diff_bytes=s.max_diff_bytes,
        max_source_bytes=s.max_source_bytes, max_future_seconds=s.max_future_seconds,
        max_source_ast_nodes=s.max_source_ast_nodes, max_changed_symbols=s.max_changed_symbols,
    )


def _check_canonical(text: str, expected: str, which: str) -> None:
    try:
        actual = source.canonical_sha256(text)
    except SchemaError as exc:
        raise Rejected(f"{which} train.py does not parse: {exc}", code="unparsable_source") from exc
    if actual != expected:
        raise Rejected(
            f"{which}_canonical_sha256 is {expected[:12]}…, but the {which} source's canonical hash is {actual[:12]}…",
            code="hash_mismatch",
        )


def _directions(parent: str, child: str) -> list[str]:
    try:
        keys: list[str] = source.extract_directions(parent, child)
    except SchemaError as exc:  # both sources parsed above; kept as a typed guard
        raise Rejected(str(exc), code="unparsable_source") from exc
    return keys


def source_checks(text: str, sha256: str, max_source_bytes: int, max_source_ast_nodes: int = 20_000) -> str:
    """Check an uploaded ``train.py``: size, hash, that it parses within the tree bounds
    (:func:`autoresearch.hub.limits.check_source`). Returns its canonical hash.

    Raises:
        HubError: ``source_too_large``, ``hash_mismatch``, ``unparsable_source``, ``source_too_complex``,
            ``bad_text``.
    """
    size = len(text.encode("utf-8"))
    if size > max_source_bytes:
        raise Rejected(f"train.py is {size} bytes; this hub takes at most {max_source_bytes}", code="source_too_large")
    if sha256_hex(text) != sha256:
        raise Rejected(f"body hashes to {sha256_hex(text)[:12]}…, not {sha256[:12]}…", code="hash_mismatch")
    limits.check_source(text, max_nodes=max_source_ast_nodes)
    try:
        with AST_LOCK:
            canonical: str = source.canonical_sha256(text)
        return canonical
    except SchemaError as exc:
        raise Rejected(str(exc), code="unparsable_source") from exc

