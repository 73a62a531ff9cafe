"""``POST /api/v1/experiments`` (submit a signed experiment) and the experiment reads."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, Response

from autoresearch.protocol import (
    EXPERIMENT_SCHEMA,
    OUTCOMES,
    Accepted,
    ExperimentDetail,
    ExperimentRecord,
    ExperimentView,
    Page,
    utc_now,
)

from .. import ingest, limits, quotas, store
from ..deps import (
    BodyDep,
    ReadAccessDep,
    SessionDep,
    StateDep,
    signed_by_active_key,
)
from ..errors import BadRequest, Conflict
from ..openapi import ENVELOPE_BODY, ERRORS

_logger = logging.getLogger(__name__)
router = APIRouter(prefix="/api/v1", tags=["experiments"])

IdPath = Annotated[
    str,
    Path(
        pattern=r"^[0-9a-f]{8,64}$",
        description="record id (hex SHA-256 of its canonical bytes), or a unique prefix of at least 8 hex digits",
    ),
]


@router.post("/experiments", status_code=201, response_model=Accepted, responses=ERRORS, openapi_extra=ENVELOPE_BODY)
def submit_experiment(body: BodyDep, session: SessionDep, state: StateDep, response: Response) -> Accepted:
    """Verify and store an experiment. 201 new; 200 when the same record is already stored; 409
    ``unknown_parent`` when the hub lacks the parent ``train.py`` (PUT it to /sources, then retry).

    The checks run on a read transaction; only storing takes the write transaction (on SQLite
    the database-wide write lock), so slow checks never hold other writers up. Bounds
    (:mod:`..limits`) and quotas (:mod:`..quotas`: records a minute, source bytes a day; 429 with
    ``Retry-After``) are checked before any of the slow work."""
    verified = signed_by_active_key(session, body, EXPERIMENT_SCHEMA)
    if store.experiment_exists(session, verified.record_id):
        response.status_code = 200
        state.metrics.records.labels("experiment", "duplicate").inc()
        return Accepted(id=verified.record_id, created=False, kind="experiment")
    record = verified.record
    assert isinstance(record, ExperimentRecord)
    spec = state.catalog.get_by_id(record.track)
    s = state.settings
    limits.check_record(record, spec)
    now = utc_now()
    subjects = quotas.of_key(session, verified.keyid)
    quotas.check_all(session, s, subjects, {"records": 1, "source_bytes": len(record.diff.encode("utf-8"))}, now=now)
    parent = store.get_source(session, record.parent_sha256)
    if parent is None and record.parent_sha256 == spec.reference_sha256:
        parent = state.catalog.reference_source(spec)
    if parent is None:
        raise Conflict(
            f"this hub does not know the parent train.py {record.parent_sha256}; "
            f"PUT it to /api/v1/sources/{record.parent_sha256} and submit again",
            code="unknown_parent",
        )
    session.rollback()  # end the read transaction before the slow, database-free checks
    checked = ingest.check_experiment_under(verified, spec, parent, s, now=now)
    with state.write_session() as writer:
        experiment_id, created = store.add_experiment(writer, checked, envelope_json=body.decode("utf-8"), rules=state.rules)
        if created:
            quotas.charge_all(writer, subjects, {"records": 1, "source_bytes": len(checked.child_source.encode("utf-8"))}, now=now)
        writer.commit()
    state.metrics.records.labels("experiment", record.outcome if created else "duplicate").inc()
    if not created:
        response.status_code = 200
    _logger.info("experiment stored", extra={"id": experiment_id, "track": record.track, "outcome": record.outcome})
    return Accepted(id=experiment_id, created=created, kind="experiment")


@router.get("/experiments", response_model=Page[ExperimentView], responses=ERRORS)
def list_experiments(
    session: SessionDep,
    state: StateDep,
    _: ReadAccessDep,
    track: Annotated[str | None, Query(max_length=64, description="track id or short name")] = None,
    hardware_class: Annotated[str | None, Query(max_length=200)] = None,
    outcome: Annotated[str | None, Query(max_length=16, description=", ".join(OUTCOMES))] = None,
    status: Annotated[Literal["keep", "discard", "crash"] | None, Query(description="keep, discard or crash")] = None,
    client: Annotated[str | None, Query(min_length=1, max_length=64, description="key id, or display name as the pages show it")] = None,
    since: Annotated[datetime | None, Query(description="received at or after (ISO 8601, UTC)")] = None,
    cursor: Annotated[str | None, Query(max_length=100)] = None,
    limit: Annotated[int, Query(ge=1)] = 50,
) -> Page[ExperimentView]:
    """Experiments newest first; pass ``next_cursor`` back as ``cursor`` for the next page."""
    if outcome is not None and outcome not in OUTCOMES:
        raise BadRequest(f"outcome must be one of {', '.join(OUTCOMES)}", code="bad_request")
    if since is not None and since.tzinfo is None:
        raise BadRequest("since must carry a timezone (e.g. 2026-01-01T00:00:00Z)", code="bad_request")
    track_id = state.catalog.get(track).id if track is not None else None
    key_id = store.resolve_client(session, client) if client is not None else None
    flt = store.ExperimentFilter(track=track_id, hardware_class=hardware_class, outcome=outcome, status=status, client=key_id, since=since)
    return store.list_experiments(session, flt, cursor=cursor, limit=min(limit, state.settings.page_limit_max))


@router.get("/experiments/{experiment_id}", response_model=ExperimentDetail, responses=ERRORS)
def get_experiment(experiment_id: IdPath, session: SessionDep, _: ReadAccessDep) -> ExperimentDetail:
    """One experiment: record, sources, directions, replications, lineage and children."""
    return store.get_experiment(session, experiment_id)


@router.get(
    "/experiments/{experiment_id}/envelope",
    responses={**ERRORS, 200: {"description": "the DSSE envelope JSON as received", "content": {"application/json": {}}}},
)
def get_envelope(experiment_id: IdPath, session: SessionDep, _: ReadAccessDep) -> Response:
    """The signed DSSE envelope, byte for byte as submitted (``autoresearch verify`` accepts it)."""
    return Response(store.get_envelope(session, experiment_id), media_type="application/json")
