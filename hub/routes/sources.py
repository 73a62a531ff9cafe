"""``PUT``/``GET /api/v1/sources/{sha256}``: ``train.py`` files, content-addressed."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response
from fastapi.responses import PlainTextResponse

from autoresearch.protocol import utc_now

from .. import ingest, quotas, store
from ..deps import RawBodyDep, ReadAccessDep, SessionDep, StateDep, UploadDep, WriteSessionDep
from ..errors import BadRequest, NotFound
from ..openapi import ERRORS, SOURCE_BODY

router = APIRouter(prefix="/api/v1", tags=["sources"])

ShaPath = Annotated[str, Path(pattern=r"^[0-9a-f]{64}$", description="hex SHA-256 of the UTF-8 text")]


@router.put("/sources/{sha256}", status_code=201, responses={**ERRORS, 200: {"description": "already stored"}}, openapi_extra=SOURCE_BODY)
def put_source(sha256: ShaPath, body: RawBodyDep, session: WriteSessionDep, state: StateDep, who: UploadDep) -> Response:
    """Store a ``train.py`` after checking size, hash and that it parses within the tree bounds.
    201 new, 200 known. A private hub takes uploads with an enroll or admin token only (a read token
    is ``read_only_token``); bytes stored count against the uploader's daily quota (its token, else
    its address; 429 ``quota_exceeded``)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest(f"body is not UTF-8 text (byte {exc.start})", code="not_utf8") from exc
    s = state.settings
    now = utc_now()
    subjects = [] if who.kind == "admin" else quotas.of_caller(who.token_id, who.address)
    known = store.get_source(session, sha256) is not None
    if not known:
        quotas.check(session, s, subjects, "source_bytes", len(body), now=now)
    canonical = ingest.source_checks(text, sha256, s.max_source_bytes, s.max_source_ast_nodes)
    created = store.put_source(session, text, canonical)
    if created:
        quotas.charge(session, subjects, "source_bytes", len(body), now=now)
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
