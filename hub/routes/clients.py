"""``POST /api/v1/clients`` (register a key), ``GET /api/v1/clients/{key_id}`` and its calibrations."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Path, Response

from autoresearch.protocol import CLIENT_SCHEMA, Accepted, CalibrationRecord, ClientView, utc_now

from .. import ingest, limits, quotas, store
from ..deps import (
    BodyDep,
    CallerDep,
    ReadAccessDep,
    SessionDep,
    SettingsDep,
    StateDep,
    WriteSessionDep,
)
from ..errors import AuthError, NotFound
from ..openapi import ENVELOPE_BODY, ERRORS

_logger = logging.getLogger(__name__)
router = APIRouter(prefix="/api/v1", tags=["clients"])

KeyIdPath = Annotated[str, Path(pattern=r"^[0-9a-f]{64}$", description="hex SHA-256 of the raw public key")]


@router.post("/clients", status_code=201, response_model=Accepted, responses=ERRORS, openapi_extra=ENVELOPE_BODY)
def register(body: BodyDep, session: WriteSessionDep, settings: SettingsDep, who: CallerDep, state: StateDep, response: Response) -> Accepted:
    """Register the Ed25519 key that signed a ``autoresearch/client/v1`` record (proof of possession).

    Public hub: anyone registers (``pending`` when the hub requires approval). Private hub: an enroll
    or admin token makes the key ``active``; without one the key is ``pending`` if the hub requires
    approval, else refused (``token_required``). 201 new, 200 already registered the same way.
    The display name must be plain, single-script NFC text that looks like no other key's
    (``bad_display_name``, ``display_name_taken``); registrations per enrollment token (else per
    client address) are limited per hour (429 ``rate_limited``).
    """
    verified = ingest.verify_registration(body, CLIENT_SCHEMA)
    limits.check_record(verified.record, None)  # display name and text rules
    kind = who.kind
    if kind in ("enroll", "admin"):
        status = "active"
    elif settings.require_approval:
        status = "pending"
    elif settings.private:
        raise AuthError("this hub is private: register with an enroll token", code="token_required")
    else:
        status = "active"
    now = utc_now()
    subjects = [] if kind == "admin" else quotas.of_caller(who.token_id, who.address)
    if store.get_client(session, verified.keyid) is None:  # re-registering the same way is free
        quotas.check(session, settings, subjects, "registrations", 1, now=now)
    enrolled_by = who.token_id if kind == "enroll" else None
    client, created = store.register_client(
        session, verified, status=status, envelope_json=body.decode("utf-8"), enrolled_by=enrolled_by
    )
    if created:
        quotas.charge(session, subjects, "registrations", 1, now=now)
    session.commit()
    state.metrics.records.labels("client", "created" if created else "duplicate").inc()
    if created:
        _logger.info("client registered", extra={"key_id": client.key_id, "status": client.status})
    else:
        response.status_code = 200
    return Accepted(id=client.key_id, created=created, kind="client")


@router.get("/clients/{key_id}", response_model=ClientView, responses=ERRORS)
def get_client(key_id: KeyIdPath, session: SessionDep, _: ReadAccessDep) -> ClientView:
    """A registered key: display name, status, hardware class, experiment count."""
    client = store.get_client(session, key_id)
    if client is None:
        raise NotFound(f"no client with key id {key_id}", code="unknown_client")
    return client


@router.get("/clients/{key_id}/calibrations", response_model=list[CalibrationRecord], responses=ERRORS)
def get_calibrations(key_id: KeyIdPath, session: SessionDep, _: ReadAccessDep) -> list[CalibrationRecord]:
    """A key's calibration records, newest first (the client page's calibration curves)."""
    if store.get_client(session, key_id) is None:
        raise NotFound(f"no client with key id {key_id}", code="unknown_client")
    return store.calibrations_of(session, key_id)
