"""``PUT``/``GET /api/v1/sources/{sha256}``: ``train.py`` files, content-addressed."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response
from fastapi.responses import PlainTextResponse

from .. import ingest, store
from ..deps import BodyDep, ReadAccessDep, SessionDep, StateDep, WriteSessionDep
from ..errors import BadRequest, NotFound
from ..openapi import ERRORS, SOURCE_BODY

router = APIRouter(prefix="/api/v1", tags=["sources"])

ShaPath = Annotated[str, Path(pattern=r"^[0-9a-f]{64}$", description="hex SHA-256 of the UTF-8 text")]


@router.put("/sources/{sha256}", status_code=201, responses={**ERRORS, 200: {"description": "already stored"}}, openapi_extra=SOURCE_BODY)
def put_source(sha256: ShaPath, body: BodyDep, session: WriteSessionDep, state: StateDep, _: ReadAccessDep) -> Response:
    """Store a ``train.py`` after checking size, hash and that it parses. 201 new, 200 known."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest("body is not UTF-8 text", code="bad_request") from exc
    canonical = ingest.source_checks(text, sha256, state.settings.max_source_bytes)
    created = store.put_source(session, text, canonical)
    session.commit()
    return Response(status_code=201 if created else 200)


@router.get("/sources/{sha256}", response_class=PlainTextResponse, responses=ERRORS)
def get_source(sha256: ShaPath, session: SessionDep, state: StateDep, _: ReadAccessDep) -> PlainTextResponse:
    """A stored ``train.py`` (or a known track's reference)."""
    text = store.get_source(session, sha256)
    if text is None:
        text = state.catalog.reference_by_sha256(sha256)
    if text is None:
        raise NotFound(f"no train.py with sha256 {sha256}", code="unknown_source")
    return PlainTextResponse(text)
