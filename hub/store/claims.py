"""Claims on (track, parent canonical, child canonical): the lease race settled by the unique
constraint and a conditional update, the ``done`` answer (exact or near-duplicate), and the live
claims that quotas count.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TypedDict

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import Session

from autoresearch.protocol import AST_LOCK, ClaimAnswer, ClaimRecord, ExperimentView, source

from ..db import begin_write
from ..models import Claim, Client, Experiment
from ._common import _insert
from .experiments import DedupSettings, _find_near_duplicate
from .listing import _view, get_experiment_view
from .sources import _source_by_canonical


class _ClaimKey(TypedDict):
    """What identifies a claim: the track and the (parent, child) canonical hashes."""

    track: str
    parent_canonical_sha256: str
    child_canonical_sha256: str


def claim(
    session: Session, record: ClaimRecord, key_id: str, record_id: str, *, now: datetime, rules: DedupSettings
) -> ClaimAnswer:
    """Answer a claim on (track, parent canonical, child canonical).

    ``done`` when the experiment (or, if the hub knows both sources, a near-duplicate of it) is
    already stored; else ``granted`` to exactly one claimant: the first insert wins through the
    unique constraint, and an expired lease (or the holder's own renewal) is taken over by a
    conditional update; everyone else gets ``held`` with the holder and lease end.
    """
    begin_write(session)
    base = _ClaimKey(
        track=record.track,
        parent_canonical_sha256=record.parent_canonical_sha256,
        child_canonical_sha256=record.child_canonical_sha256,
    )
    done = _done_answer(session, record, rules)
    if done is not None:
        return ClaimAnswer(status="done", **base, experiment=done[0], near_duplicate_of=done[1])

    expires = now + timedelta(seconds=record.lease_seconds)
    stmt = (
        _insert(session)(Claim)
        .values(**base, key_id=key_id, record_id=record_id, lease_expires_at=expires, created_at=now)
        .on_conflict_do_nothing(index_elements=list(base))
        .returning(Claim.seq)
    )
    if session.execute(stmt).first() is not None:
        return ClaimAnswer(status="granted", **base, lease_expires_at=expires, holder_key_id=key_id)
    taken = session.execute(
        update(Claim)
        .where(*(getattr(Claim, k) == v for k, v in base.items()),
               or_(Claim.lease_expires_at < now, Claim.key_id == key_id))
        .values(key_id=key_id, record_id=record_id, lease_expires_at=expires, created_at=now)
    )
    if taken.rowcount:  # type: ignore[attr-defined]
        return ClaimAnswer(status="granted", **base, lease_expires_at=expires, holder_key_id=key_id)
    holder = session.execute(
        select(Claim.key_id, Claim.lease_expires_at).where(*(getattr(Claim, k) == v for k, v in base.items()))
    ).one()
    return ClaimAnswer(status="held", **base, lease_expires_at=holder[1], holder_key_id=holder[0])


def _done_answer(session: Session, record: ClaimRecord, rules: DedupSettings) -> tuple[ExperimentView, str | None] | None:
    exact = session.scalar(
        select(Experiment)
        .where(
            Experiment.track == record.track,
            Experiment.parent_canonical_sha256 == record.parent_canonical_sha256,
            Experiment.child_canonical_sha256 == record.child_canonical_sha256,
        )
        .order_by((Experiment.outcome == "ok").desc(), Experiment.seq)
        .limit(1)
    )
    if exact is not None:
        return _view(session, exact), None
    parent = _source_by_canonical(session, record.parent_canonical_sha256)
    child = _source_by_canonical(session, record.child_canonical_sha256)
    if parent is None or child is None:
        return None
    with AST_LOCK:
        keys = source.extract_directions(parent, child)
        changes = source.const_changes(parent, child, keys)
        minhash = source.minhash_signature(source.diff_tokens(parent, child))
    near = _find_near_duplicate(
        session, record.track, record.parent_canonical_sha256, record.child_canonical_sha256, changes, minhash, rules
    )
    if near is None:
        return None
    return get_experiment_view(session, near), near


def live_claims(
    session: Session, *, now: datetime, key_id: str | None = None, token: int | None = None,
    besides: tuple[str, str, str] | None = None,
) -> tuple[int, datetime | None]:
    """Unexpired claims of one key (or of every key enrolled by ``token``) whose experiment that key
    has not stored yet, leaving out the claim on ``besides`` (track, parent, child canonical); with
    the earliest lease end among them."""
    query = select(func.count(), func.min(Claim.lease_expires_at)).where(Claim.lease_expires_at > now)
    if key_id is not None:
        query = query.where(Claim.key_id == key_id)
    if token is not None:
        query = query.where(Claim.key_id.in_(select(Client.key_id).where(Client.enrolled_by == token)))
    if besides is not None:
        query = query.where(~and_(
            Claim.track == besides[0], Claim.parent_canonical_sha256 == besides[1], Claim.child_canonical_sha256 == besides[2]
        ))
    done = (
        select(Experiment.seq)
        .where(
            Experiment.track == Claim.track,
            Experiment.parent_canonical_sha256 == Claim.parent_canonical_sha256,
            Experiment.child_canonical_sha256 == Claim.child_canonical_sha256,
            Experiment.key_id == Claim.key_id,
        )
        .exists()
    )
    count, earliest = session.execute(query.where(~done)).one()
    return int(count or 0), earliest
