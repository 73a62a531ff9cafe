"""Clients (signing keys) and bearer tokens: registration, approval and revocation, the
admin's token list, and the token reads of quotas and authorisation.

Keys arrive in verified registrations (:class:`~autoresearch.protocol.Verified`); tokens are stored
as their SHA-256 only. Revoking a key reassesses every experiment it ran
(:func:`autoresearch.hub.store.verdicts._reassess_key`).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from autoresearch.protocol import ClientRegistration, ClientView, Verified, sha256_hex, utc_now
from autoresearch.protocol.api import ClientStatus

from .. import names
from ..db import begin_write
from ..errors import Conflict, NotFound
from ..models import Client, Experiment, Token
from .verdicts import _reassess_key


def _client_view(row: Client, experiments: int = 0) -> ClientView:
    return ClientView(
        key_id=row.key_id,
        public_key=row.public_key,
        display_name=row.display_name,
        status=row.status,
        hardware_class=row.hardware_class,
        registered_at=row.registered_at,
        experiments=experiments,
    )


def get_client(session: Session, key_id: str, *, count_experiments: bool = True) -> ClientView | None:
    """The client with this key id (with its experiment count, unless ``count_experiments`` is
    False: then ``experiments`` is 0 and one statement is saved — the signer check of every
    submission needs only the key and its status), or None."""
    row = session.get(Client, key_id)
    if row is None:
        return None
    if not count_experiments:
        return _client_view(row)
    count = session.scalar(select(func.count()).select_from(Experiment).where(Experiment.key_id == key_id))
    return _client_view(row, count or 0)


def resolve_client(session: Session, key_id_or_name: str) -> str:
    """The key id named by a key id (64 hex) or by a display name as the pages show it (compared by
    look, like registration: :func:`autoresearch.hub.names.name_key`).

    Raises:
        NotFound: ``unknown_client`` — no client has that display name (a key id is returned as is:
            filtering by an unknown key id lists nothing).
    """
    if len(key_id_or_name) == 64 and all(c in "0123456789abcdef" for c in key_id_or_name):
        return key_id_or_name
    key_id = session.scalar(select(Client.key_id).where(Client.name_key == names.name_key(key_id_or_name)))
    if key_id is None:
        raise NotFound(f"no client with display name {ascii(key_id_or_name)}", code="unknown_client")
    return key_id


def list_clients(session: Session) -> list[ClientView]:
    """Every client, oldest registration first, with experiment counts."""
    counts = dict(
        session.execute(select(Experiment.key_id, func.count()).group_by(Experiment.key_id)).all()
    )
    rows = session.scalars(select(Client).order_by(Client.registered_at, Client.key_id)).all()
    return [_client_view(r, counts.get(r.key_id, 0)) for r in rows]


def register_client(
    session: Session, verified: Verified, *, status: str, envelope_json: str, enrolled_by: int | None = None
) -> tuple[ClientView, bool]:
    """Register the key of a verified :class:`ClientRegistration`; returns (client, created).

    Rules: the key is the identity. The same registration again is idempotent; the same key with a
    different display name is ``key_already_registered`` (display names are fixed; an admin can
    revoke and the volunteer re-registers under a new key); a display name is unique across keys by
    look — case and confusable characters folded (:func:`autoresearch.hub.names.name_key`) —
    (``display_name_taken``). ``enrolled_by`` is the id of the enrollment token that registered it.

    Raises:
        Conflict: ``key_already_registered`` or ``display_name_taken``.
    """
    record = verified.record
    assert isinstance(record, ClientRegistration)
    begin_write(session)
    existing = session.get(Client, verified.keyid)
    if existing is not None:
        if existing.display_name == record.display_name:
            return _client_view(existing), False
        raise Conflict(
            f"key {verified.keyid[:12]}… is already registered as {existing.display_name!r}",
            code="key_already_registered",
        )
    name_key = names.name_key(record.display_name)
    taken = session.scalar(select(Client.display_name).where(Client.name_key == name_key))
    if taken is not None:
        raise Conflict(
            f"display name {ascii(record.display_name)} is taken by another key"
            + ("" if taken == record.display_name else f" (it looks like {ascii(taken)})"),
            code="display_name_taken",
        )
    row = Client(
        key_id=verified.keyid,
        public_key=record.public_key,
        display_name=record.display_name,
        name_key=name_key,
        status=status,
        hardware_class=record.hardware_class,
        registered_at=utc_now(),
        record_id=verified.record_id,
        envelope_json=envelope_json,
        enrolled_by=enrolled_by,
    )
    session.add(row)
    try:
        session.flush()
    except IntegrityError as exc:  # a racing registration of the same key or name
        session.rollback()
        raise Conflict("a registration for this key or display name raced this one; retry", code="conflict") from exc
    return _client_view(row), True


def set_client_status(session: Session, key_id: str, status: ClientStatus) -> ClientView:
    """Approve (``active``) or revoke (``revoked``) a key. Revoking drops the key's experiments from
    the community bests (they stay stored, marked revoked).

    Raises:
        NotFound: ``unknown_client``.
    """
    begin_write(session)
    row = session.get(Client, key_id)
    if row is None:
        raise NotFound(f"no client with key id {key_id}", code="unknown_client")
    row.status = status
    row.revoked_at = utc_now() if status == "revoked" else None
    session.flush()
    _reassess_key(session, key_id)  # a revoked key's runs stop ranking and stop confirming others
    return _client_view(row)


def create_token(session: Session, kind: str, label: str) -> str:
    """A new bearer token of ``kind`` (``enroll`` or ``read``); only its SHA-256 is stored, so the
    returned plain token is shown once."""
    begin_write(session)
    token = f"ar_{kind}_{secrets.token_urlsafe(32)}"
    session.add(Token(kind=kind, token_sha256=sha256_hex(token), label=label, created_at=utc_now()))
    session.flush()
    return token


@dataclass(frozen=True)
class TokenInfo:
    """A stored token as the admin CLI lists it (never the token itself)."""

    id: int
    kind: str
    label: str
    created_at: datetime
    revoked: bool


def list_tokens(session: Session) -> list[TokenInfo]:
    rows = session.scalars(select(Token).order_by(Token.id)).all()
    return [TokenInfo(r.id, r.kind, r.label, r.created_at, r.revoked_at is not None) for r in rows]


def revoke_token(session: Session, token_id: int) -> None:
    """Revoke a token by id. Raises NotFound."""
    begin_write(session)
    row = session.get(Token, token_id)
    if row is None:
        raise NotFound(f"no token with id {token_id}")
    row.revoked_at = utc_now()


def token_kind(session: Session, token: str) -> str | None:
    """``enroll``/``read`` for a live token, None for an unknown or revoked one."""
    row = session.scalar(select(Token).where(Token.token_sha256 == sha256_hex(token)))
    if row is None or row.revoked_at is not None:
        return None
    return row.kind


def token_id(session: Session, token: str) -> int | None:
    """The id of a live stored token, None for an unknown or revoked one."""
    row = session.scalar(select(Token).where(Token.token_sha256 == sha256_hex(token)))
    return None if row is None or row.revoked_at is not None else row.id


def enrolled_by(session: Session, key_id: str) -> int | None:
    """The id of the enrollment token that registered a key (None: none did)."""
    return session.scalar(select(Client.enrolled_by).where(Client.key_id == key_id))
