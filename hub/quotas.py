"""Quotas: how much one key, one enrollment token or one anonymous address may ask of the hub.

The limits are hub settings (``AUTORESEARCH_HUB_QUOTA_*``, docs/private-hub.md "Quotas"); a spent
quota is a 429 (:class:`~autoresearch.hub.errors.TooManyRequests`) with ``Retry-After``, checked
before the request costs anything, and nothing is stored. Subjects:

- ``key:<key id>`` — the signer of a record; and ``token:<id>`` — the enrollment token that
  registered it, whose limits cover all the keys it enrolled (so one token cannot multiply its
  quota by registering keys);
- ``token:<id>`` of the bearer token of an upload or a registration, else ``addr:<client address>``
  (a public hub's anonymous uploads and registrations). The admin token has no quota.

Quotas (fixed windows in ``quota_usage``, UTC):

============================  ===========================================  =====================
what                          counts                                       window
============================  ===========================================  =====================
``records``                   signed experiments, claims, calibrations     minute
``source_bytes``              train.py bytes stored: uploads and the        UTC day
                              children of experiments
``registrations``             keys registered                              hour
live claims                   unexpired claims not yet followed by the     at once (read from
                              key's experiment                             ``claims``)
============================  ===========================================  =====================

Usage is charged only for what was stored (the route charges in its write transaction), so a
refused request leaves every table as it was; a check reads the usage so far and refuses when the
request would go past the limit (racing replicas may overshoot by the requests in flight).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from . import store
from .errors import TooManyRequests
from .settings import HubSettings

_WINDOWS = {"records": timedelta(minutes=1), "source_bytes": timedelta(days=1), "registrations": timedelta(hours=1)}
_UNITS = {"records": "signed records a minute", "source_bytes": "train.py bytes a day", "registrations": "registrations an hour"}


@dataclass(frozen=True)
class Subject:
    """Who a quota is charged to: ``key:…``, ``token:…`` or ``addr:…``."""

    name: str

    @property
    def is_token(self) -> bool:
        return self.name.startswith("token:")


def of_key(session: Session, key_id: str) -> list[Subject]:
    """A signer and the enrollment token that registered it (if any)."""
    token = store.enrolled_by(session, key_id)
    return [Subject(f"key:{key_id}")] + ([Subject(f"token:{token}")] if token is not None else [])


def of_caller(token_id: int | None, address: str | None) -> list[Subject]:
    """An unsigned request (upload, registration): its stored bearer token, else its address."""
    if token_id is not None:
        return [Subject(f"token:{token_id}")]
    return [Subject(f"addr:{address or 'unknown'}")]


def limit(settings: HubSettings, kind: str, subject: Subject) -> int:
    """The limit of quota ``kind`` for ``subject`` (tokens have their own, larger limits)."""
    if kind == "records":
        return settings.quota_token_records_per_minute if subject.is_token else settings.quota_records_per_minute
    if kind == "source_bytes":
        return settings.quota_token_source_bytes_per_day if subject.is_token else settings.quota_source_bytes_per_day
    if kind == "registrations":
        return settings.quota_registrations_per_hour
    raise ValueError(f"unknown quota {kind!r}")


def window(kind: str, now: datetime) -> tuple[datetime, datetime]:
    """(start, end) of the fixed window of quota ``kind`` that holds ``now`` (UTC-aligned)."""
    size = _WINDOWS[kind]
    epoch = datetime(2000, 1, 1, tzinfo=now.tzinfo)
    start = epoch + size * ((now - epoch) // size)
    return start, start + size


def check(session: Session, settings: HubSettings, subjects: list[Subject], kind: str, amount: int, *, now: datetime) -> None:
    """Refuse when ``amount`` more would take any subject past its limit of ``kind``: :func:`check_all`
    of one kind.

    Raises:
        TooManyRequests: as :func:`check_all`.
    """
    check_all(session, settings, subjects, {kind: amount}, now=now)


def check_all(session: Session, settings: HubSettings, subjects: list[Subject], amounts: Mapping[str, int], *,
              now: datetime) -> None:
    """Refuse when any amount (``{kind: amount}``) would take any subject past its limit of that kind.
    Reads every subject's usage of every kind in one statement.

    Raises:
        TooManyRequests: ``rate_limited`` (records, registrations) or ``quota_exceeded`` (bytes),
            with ``retry_after`` = seconds until the window ends.
    """
    windows = {kind: window(kind, now) for kind in amounts}
    used = store.quota_used_many(session, [(subject.name, kind, windows[kind][0]) for kind in amounts for subject in subjects])
    for kind, amount in amounts.items():
        start, end = windows[kind]
        for subject in subjects:
            cap = limit(settings, kind, subject)
            spent = used.get((subject.name, kind), 0)
            if spent + amount > cap:
                retry = math.ceil((end - now).total_seconds())
                raise TooManyRequests(
                    f"{subject.name.split(':', 1)[0]} {subject.name.split(':', 1)[1][:12]} used {spent} of its "
                    f"{cap} {_UNITS[kind]}; retry in {retry} s",
                    retry_after=retry, code="quota_exceeded" if kind == "source_bytes" else "rate_limited",
                )


def charge(session: Session, subjects: list[Subject], kind: str, amount: int, *, now: datetime) -> None:
    """Add ``amount`` of ``kind`` to every subject's usage (in the caller's write transaction)."""
    charge_all(session, subjects, {kind: amount}, now=now)


def charge_all(session: Session, subjects: list[Subject], amounts: Mapping[str, int], *, now: datetime) -> None:
    """Add every amount (``{kind: amount}``) to every subject's usage, in two statements (in the
    caller's write transaction)."""
    store.quota_charge_many(session, [
        (subject.name, kind, window(kind, now)[0], amount) for kind, amount in amounts.items() for subject in subjects
    ])


def check_live_claims(
    session: Session, settings: HubSettings, key_id: str, *, now: datetime, besides: tuple[str, str, str]
) -> None:
    """Refuse a new lease when the key (or its enrollment token's keys) already holds the most live
    claims allowed; renewing the claim on ``besides`` is never refused.

    Raises:
        TooManyRequests: ``quota_exceeded``, retry when the earliest live lease ends.
    """
    token = store.enrolled_by(session, key_id)
    scopes: list[tuple[str, dict[str, object], int]] = [("key", {"key_id": key_id}, settings.quota_live_claims)]
    if token is not None:
        scopes.append(("enrollment token", {"token": token}, settings.quota_token_live_claims))
    for who, where, cap in scopes:
        held, earliest = store.live_claims(session, now=now, besides=besides, **where)  # type: ignore[arg-type]
        if held >= cap:
            retry = math.ceil((earliest - now).total_seconds()) if earliest is not None else 60
            raise TooManyRequests(
                f"this {who} holds {held} live claims, the most this hub allows at once ({cap}); "
                f"finish or let one expire (retry in {retry} s)",
                retry_after=retry, code="quota_exceeded",
            )
