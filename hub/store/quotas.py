"""Quota usage reads and writes; the policy is :mod:`autoresearch.hub.quotas`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import and_, delete, or_, select
from sqlalchemy.orm import Session

from ..db import begin_write
from ..models import QuotaUsage
from ._common import _insert


def quota_used(session: Session, subject: str, kind: str, window_start: datetime) -> int:
    """What ``subject`` used of quota ``kind`` in the window starting at ``window_start``."""
    return quota_used_many(session, [(subject, kind, window_start)]).get((subject, kind), 0)


def quota_used_many(session: Session, windows: Sequence[tuple[str, str, datetime]]) -> dict[tuple[str, str], int]:
    """``{(subject, kind): used}`` in each given (subject, kind, window start), one statement;
    windows with no usage are left out."""
    if not windows:
        return {}
    rows = session.execute(
        select(QuotaUsage.subject, QuotaUsage.kind, QuotaUsage.amount).where(or_(*(
            and_(QuotaUsage.subject == subject, QuotaUsage.kind == kind, QuotaUsage.window_start == start)
            for subject, kind, start in windows
        )))
    ).all()
    return {(subject, kind): int(amount or 0) for subject, kind, amount in rows}


def quota_charge(session: Session, subject: str, kind: str, window_start: datetime, amount: int) -> None:
    """Add ``amount`` to a subject's usage in a window: :func:`quota_charge_many` of one."""
    quota_charge_many(session, [(subject, kind, window_start, amount)])


def quota_charge_many(session: Session, charges: Sequence[tuple[str, str, datetime, int]]) -> None:
    """Add each ``(subject, kind, window start, amount)`` to that usage (one multi-row upsert that
    adds, so racing replicas never lose a charge), and drop those subjects' windows of those kinds
    that ended before the charged one began (one DELETE). Charges must name distinct windows."""
    if not charges:
        return
    begin_write(session)
    stmt = _insert(session)(QuotaUsage).values([
        {"subject": subject, "kind": kind, "window_start": start, "amount": amount} for subject, kind, start, amount in charges
    ])
    session.execute(stmt.on_conflict_do_update(
        index_elements=["subject", "kind", "window_start"],
        set_={"amount": QuotaUsage.__table__.c.amount + stmt.excluded.amount},
    ))
    session.execute(delete(QuotaUsage).where(or_(*(
        and_(QuotaUsage.subject == subject, QuotaUsage.kind == kind, QuotaUsage.window_start < start)
        for subject, kind, start, _ in charges
    ))))
