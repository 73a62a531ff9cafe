"""``POST /api/v1/calibrations``: store a client's signed calibration record."""

from __future__ import annotations

from fastapi import APIRouter, Response

from autoresearch.protocol import CALIBRATION_SCHEMA, Accepted, CalibrationRecord, utc_now

from .. import ingest, limits, quotas, store
from ..deps import BodyDep, StateDep, WriteSessionDep, signed_by_active_key
from ..openapi import ENVELOPE_BODY, ERRORS

router = APIRouter(prefix="/api/v1", tags=["calibrations"])


@router.post("/calibrations", status_code=201, response_model=Accepted, responses=ERRORS, openapi_extra=ENVELOPE_BODY)
def submit_calibration(body: BodyDep, session: WriteSessionDep, state: StateDep, response: Response) -> Accepted:
    """Verify and store a calibration (known track, no future timestamp). 201 new, 200 stored before."""
    verified = signed_by_active_key(session, body, CALIBRATION_SCHEMA)
    record = verified.record
    assert isinstance(record, CalibrationRecord)
    spec = state.catalog.get_by_id(record.track)
    limits.check_record(record, spec)
    now = utc_now()
    ingest.check_not_future(record.created_at, now, state.settings.max_future_seconds)
    subjects = quotas.of_key(session, verified.keyid)
    quotas.check(session, state.settings, subjects, "records", 1, now=now)
    created = store.add_calibration(session, verified, envelope_json=body.decode("utf-8"))
    if created:
        quotas.charge(session, subjects, "records", 1, now=now)
    session.commit()
    state.metrics.records.labels("calibration", "created" if created else "duplicate").inc()
    if not created:
        response.status_code = 200
    return Accepted(id=verified.record_id, created=created, kind="calibration")
