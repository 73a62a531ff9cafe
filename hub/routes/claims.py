"""``POST /api/v1/claims``: lease (track, parent, child) before running it."""

from __future__ import annotations

from fastapi import APIRouter

from autoresearch.protocol import CLAIM_SCHEMA, ClaimAnswer, ClaimRecord, utc_now

from .. import ingest, store
from ..deps import BodyDep, StateDep, WriteSessionDep, signed_by_active_key
from ..openapi import ENVELOPE_BODY, ERRORS

router = APIRouter(prefix="/api/v1", tags=["claims"])


@router.post("/claims", response_model=ClaimAnswer, responses=ERRORS, openapi_extra=ENVELOPE_BODY)
def submit_claim(body: BodyDep, session: WriteSessionDep, state: StateDep) -> ClaimAnswer:
    """``granted`` (run it until ``lease_expires_at``), ``done`` (already run, or a near-duplicate was:
    skip it) or ``held`` (another key holds the lease). Exactly one of racing claims is granted."""
    verified = signed_by_active_key(session, body, CLAIM_SCHEMA)
    record = verified.record
    assert isinstance(record, ClaimRecord)
    state.catalog.get_by_id(record.track)
    now = utc_now()
    ingest.check_not_future(record.created_at, now, state.settings.max_future_seconds)
    answer = store.claim(session, record, verified.keyid, verified.record_id, now=now, rules=state.rules)
    session.commit()
    state.metrics.records.labels("claim", answer.status).inc()
    return answer
