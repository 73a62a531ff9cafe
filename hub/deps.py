"""FastAPI dependencies as named ``Annotated`` aliases, and the per-app state they read.

Authorisation lives here, never in a route body: :data:`ReadAccessDep` (a private hub needs a read,
enroll or admin token for every read), :data:`AdminDep`, and :func:`signed_by_active_key` (a
submission's signer must be registered, active and the signature must verify under its key).
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Annotated, Literal

from fastapi import Depends, Request
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from autoresearch.protocol import Verified

from . import ingest, limits, store
from .catalog import TrackCatalog
from .db import begin_write
from .errors import AuthError, BadRequest
from .metrics import HubMetrics
from .settings import HubSettings
from .store import DedupSettings

_logger = logging.getLogger(__name__)

TokenKind = Literal["admin", "enroll", "read"]
TOKEN_COOKIE = "autoresearch_token"
"""Cookie a browser keeps its read token in on a private hub (set by the pages' login form)."""


@dataclass
class HubState:
    """Everything a request may need, built once by ``create_app`` and kept on ``app.state.hub``."""

    settings: HubSettings
    engine: Engine
    sessions: sessionmaker[Session]
    catalog: TrackCatalog
    metrics: HubMetrics = field(default_factory=HubMetrics)

    @contextmanager
    def write_session(self) -> Iterator[Session]:
        """A session in a write transaction, for a route that must do work before it writes."""
        with self.sessions() as session:
            begin_write(session)
            try:
                yield session
            finally:
                session.rollback()

    @property
    def rules(self) -> DedupSettings:
        s = self.settings
        return DedupSettings(rel_tol=s.near_duplicate_rel_tol, jaccard=s.near_duplicate_jaccard)


def get_state(request: Request) -> HubState:
    return request.app.state.hub  # type: ignore[no-any-return]


StateDep = Annotated[HubState, Depends(get_state)]


def get_settings(state: StateDep) -> HubSettings:
    return state.settings


SettingsDep = Annotated[HubSettings, Depends(get_settings)]


def get_catalog(state: StateDep) -> TrackCatalog:
    return state.catalog


CatalogDep = Annotated[TrackCatalog, Depends(get_catalog)]


def get_session(state: StateDep) -> Iterator[Session]:
    """A session per request; rolled back and closed at the end (routes commit their writes)."""
    with state.sessions() as session:
        try:
            yield session
        finally:
            session.rollback()


SessionDep = Annotated[Session, Depends(get_session)]


def get_write_session(state: StateDep) -> Iterator[Session]:
    """A session whose transaction is a write transaction from its first statement (SQLite:
    ``BEGIN IMMEDIATE``), so a submission's reads and writes never race another writer."""
    with state.write_session() as session:
        yield session


WriteSessionDep = Annotated[Session, Depends(get_write_session)]


def bearer_token(request: Request) -> str | None:
    """The ``Authorization: Bearer …`` token, or None when the header is absent.

    Raises:
        AuthError: ``bad_token`` for another scheme or an empty token.
    """
    header = request.headers.get("authorization")
    if header is None:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthError("Authorization must be 'Bearer <token>'", code="bad_token")
    return token.strip()


def token_kind(request: Request, session: SessionDep, settings: SettingsDep) -> TokenKind | None:
    """What the request's token grants (None: no token).

    Raises:
        AuthError: ``bad_token`` for a token the hub does not know (or revoked).
    """
    token = bearer_token(request)
    if token is None:
        return None
    kind = token_kind_of(token, session, settings)
    if kind is None:
        raise AuthError("unknown or revoked token", code="bad_token")
    return kind


def token_kind_of(token: str, session: Session, settings: HubSettings) -> TokenKind | None:
    """What a token grants: ``admin`` (the settings' admin token), ``enroll``/``read`` (a live
    stored token), or None for an unknown or revoked one."""
    admin = settings.admin_token.get_secret_value() if settings.admin_token else None
    if admin and hmac.compare_digest(token.encode(), admin.encode()):
        return "admin"
    return store.token_kind(session, token)  # type: ignore[return-value]


def cookie_grants_read(request: Request, session: Session, settings: HubSettings) -> bool:
    """True when the request's :data:`TOKEN_COOKIE` holds a live token (of any kind)."""
    token = request.cookies.get(TOKEN_COOKIE)
    return bool(token) and token_kind_of(token, session, settings) is not None  # type: ignore[arg-type]


TokenKindDep = Annotated[TokenKind | None, Depends(token_kind)]


def read_access(request: Request, session: SessionDep, settings: SettingsDep, kind: TokenKindDep) -> None:
    """Public hub: anyone reads. Private hub: a read, enroll or admin token is required (Bearer
    header, or the pages' login cookie :data:`TOKEN_COOKIE`).

    Raises:
        AuthError: ``token_required``.
    """
    if settings.private and kind is None and not cookie_grants_read(request, session, settings):
        raise AuthError("this hub is private: send 'Authorization: Bearer <read token>'", code="token_required")


ReadAccessDep = Annotated[None, Depends(read_access)]


def admin_access(kind: TokenKindDep) -> None:
    """Raises AuthError ``admin_required`` unless the request carries the admin token."""
    if kind != "admin":
        raise AuthError("this needs the hub's admin token", code="admin_required")


AdminDep = Annotated[None, Depends(admin_access)]


async def raw_body(request: Request, settings: SettingsDep) -> bytes:
    """The raw request body, as received, at most ``max_body_bytes`` (read in chunks: a body that
    grows past the limit is refused without being held whole).

    Raises:
        BadRequest: ``body_too_large``.
    """
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and (len(declared) > 18 or int(declared) > settings.max_body_bytes):
        raise BadRequest(f"body is {declared[:20]} bytes; this hub takes at most {settings.max_body_bytes}", code="body_too_large")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > settings.max_body_bytes:
            raise BadRequest(f"body is larger than {settings.max_body_bytes} bytes", code="body_too_large")
        chunks.append(chunk)
    return b"".join(chunks)


RawBodyDep = Annotated[bytes, Depends(raw_body)]


async def envelope_body(body: RawBodyDep) -> bytes:
    """The raw body of a submission (a DSSE envelope), checked to be plain, shallow JSON
    (:func:`autoresearch.hub.limits.check_json_body`) before anything parses it.

    Raises:
        BadRequest: ``body_too_large``, ``not_utf8``, ``malformed_json``, ``json_too_deep``,
            ``number_too_large``.
    """
    limits.check_json_body(body)
    return body


BodyDep = Annotated[bytes, Depends(envelope_body)]


@dataclass(frozen=True)
class Caller:
    """Who sent an unsigned request: what its bearer token grants and the stored token's id (None
    for none or the admin token), and the client address (for anonymous quotas)."""

    kind: TokenKind | None
    token_id: int | None
    address: str | None


def caller(request: Request, session: SessionDep, kind: TokenKindDep) -> Caller:
    token = bearer_token(request) if kind in ("enroll", "read") else None
    token_id = store.token_id(session, token) if token is not None else None
    return Caller(kind=kind, token_id=token_id, address=request.client.host if request.client else None)


CallerDep = Annotated[Caller, Depends(caller)]


def upload_access(settings: SettingsDep, who: CallerDep) -> Caller:
    """Who may store a ``train.py``: anyone on a public hub; an enroll or admin token on a private one
    (a read token only reads).

    Raises:
        AuthError: ``token_required``, ``read_only_token``.
    """
    if settings.private and who.kind is None:
        raise AuthError("this hub is private: uploads need an enroll token", code="token_required")
    if settings.private and who.kind == "read":
        raise AuthError("a read token cannot upload; use an enroll token", code="read_only_token")
    return who


UploadDep = Annotated[Caller, Depends(upload_access)]


def signed_by_active_key(session: Session, body: bytes, schema: str) -> Verified:
    """Verify a submission: its signer must be a registered, active key, and the signature must verify
    under that key (the first signature whose key id is registered is used).

    Raises:
        HubError: ``malformed_json``/``envelope_malformed``, ``unregistered_key``, ``key_revoked``,
            ``key_pending``, or the protocol failure (``bad_signature``, ``wrong_schema`` …).
    """
    for keyid in ingest.signer_key_ids(body):
        client = store.get_client(session, keyid, count_experiments=False)
        if client is None:
            continue
        if client.status == "revoked":
            raise AuthError(f"key {keyid[:12]}… was revoked; its new records are refused", code="key_revoked")
        if client.status == "pending":
            raise AuthError(f"key {keyid[:12]}… is waiting for an admin's approval", code="key_pending")
        return ingest.verify_under(body, client.public_key, schema)
    raise AuthError(
        "the signing key is not registered on this hub; register it first (POST /api/v1/clients)",
        code="unregistered_key",
    )

