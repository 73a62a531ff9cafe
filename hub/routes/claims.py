"""``POST /api/v1/claims``: lease (track, parent, child) before running it."""

from __future__ import annotations

from fastapi import APIRouter

from autoresearch.protocol import CLAIM_SCHEMA, ClaimAnswer, ClaimRecord, utc_now

from .. import ingest, limits, quotas, store
from ..deps import BodyDep, StateDep, WriteSessionDep, signed_by_active_key
from ..openapi import ENVELOPE_BODY, ERRORS

router = APIRouter(prefix="/api/v1", tags=["claims"])


@router.post("/claims", response_model=ClaimAnswer, responses=ERRORS, openapi_extra=ENVELOPE_BODY)
def submit_claim(body: BodyDep, session: WriteSessionDep, state: StateDep) -> ClaimAnswer:
    """``granted`` (run it until ``lease_expires_at``), ``done`` (already run, or a near-duplicate was:
    skip it) or ``held`` (another key holds the lease). Exactly one of racing claims is granted.
    The lease is at most 2 × the track's budget + ``lease_margin_seconds`` (``lease_too_long``); a key
    holds at most ``quota_live_claims`` live claims (429 ``quota_exceeded``)."""
    verified = signed_by_active_key(session, body, CLAIM_SCHEMA)
    record = verified.record
    assert isinstance(record, ClaimRecord)
    spec = state.catalog.get_by_id(record.track)
    s = state.settings
    limits.check_record(record, spec, lease_margin_seconds=s.lease_margin_seconds)
    now = utc_now()
    ingest.check_not_future(record.created_at, now, s.max_future_seconds)
    subjects = quotas.of_key(session, verified.keyid)
    quotas.check(session, s, subjects, "records", 1, now=now)
    triple = (record.track, record.parent_canonical_sha256, record.child_canonical_sha256)
    quotas.check_live_claims(session, s, verified.keyid, now=now, besides=triple)
    answer = store.claim(session, record, verified.keyid, verified.record_id, now=now, rules=state.rules)
    quotas.charge(session, subjects, "records", 1, now=now)
    session.commit()
    state.metrics.records.labels("claim", answer.status).inc()
    return answer
