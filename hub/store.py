"""The hub's store: the only module that writes SQL. It takes a :class:`~sqlalchemy.orm.Session` and
returns protocol models (``autoresearch.protocol.api``), never ORM rows (MLflow's row → entity
boundary).

Write functions run inside the caller's transaction (the route's session commits once); each starts
it as a write transaction (:func:`autoresearch.hub.db.begin_write`). Races between hub processes are
settled by the database: unique constraints plus ``INSERT … ON CONFLICT`` and conditional
``UPDATE … WHERE`` (claims, best rows, direction aggregates), so nothing here holds a Python lock.

Rules kept here (docs/hub.md, "Rules"):

- Replications: runs with the same (track, parent canonical, child canonical) are one experiment;
  views show n, mean and std of val_bpb over the ``ok`` runs and their hardware classes.
- ``needs_replication``: a kept run that becomes the community best of its (track, hardware class)
  with z above ``replication_z`` or without a z is flagged until an ``ok`` run of the same
  experiment from another key arrives.
- Seed-only changes (direction ``seed`` alone) are stored but never become a best, a leaderboard
  entry or a gain in the direction statistics.
- Experiments of revoked keys stay, marked ``revoked``, and leave the leaderboards and bests.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import math
import secrets
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Select, and_, delete, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from autoresearch.protocol import (
    AST_LOCK,
    Activity,
    CalibrationRecord,
    ClaimAnswer,
    ClaimRecord,
    ClientRegistration,
    ClientView,
    CommunityBest,
    DirectionByClass,
    DirectionStats,
    ExperimentDetail,
    ExperimentRecord,
    ExperimentView,
    Leaderboard,
    LeaderboardEntry,
    Page,
    Progress,
    ProgressPoint,
    Replications,
    TrackSpec,
    TrackView,
    Verified,
    canonical_source_sha256,
    sha256_hex,
    source,
    utc_now,
)

from .db import begin_write
from .errors import BadRequest, Conflict, NotFound
from .ingest import CheckedExperiment
from .models import (
    Best,
    Calibration,
    Claim,
    Client,
    DirectionAggregate,
    Experiment,
    ExperimentDirection,
    ReplicationClass,
    ReplicationGroup,
    Source,
    Token,
)
from .suggestions import counts_toward_gain

_logger = logging.getLogger(__name__)

ECM_SCOPE = "*"
LEADERBOARD_SIZE = 20
NEAR_DUPLICATE_CANDIDATES = 200
LINEAGE_DEPTH = 100
EVIDENCE_PER_DIRECTION = 5
REPLICATION_IDS = 20  # run ids listed per experiment view (n counts them all)


@dataclass(frozen=True)
class DedupSettings:
    """Thresholds of the dedup and sanity rules (from :class:`~autoresearch.hub.settings.HubSettings`)."""

    rel_tol: float = 0.05
    jaccard: float = 0.9
    replication_z: float = 6.0


def _insert(session: Session):  # type: ignore[no-untyped-def]
    """The dialect's INSERT (with ``on_conflict_do_*``): SQLite ≥ 3.24 and PostgreSQL both have it."""
    return postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert


# --------------------------------------------------------------------------------------------------
# Clients and tokens


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


def get_client(session: Session, key_id: str) -> ClientView | None:
    """The client with this key id (with its experiment count), or None."""
    row = session.get(Client, key_id)
    if row is None:
        return None
    count = session.scalar(select(func.count()).select_from(Experiment).where(Experiment.key_id == key_id))
    return _client_view(row, count or 0)


def list_clients(session: Session) -> list[ClientView]:
    """Every client, oldest registration first, with experiment counts."""
    counts = dict(
        session.execute(select(Experiment.key_id, func.count()).group_by(Experiment.key_id)).all()
    )
    rows = session.scalars(select(Client).order_by(Client.registered_at, Client.key_id)).all()
    return [_client_view(r, counts.get(r.key_id, 0)) for r in rows]


def register_client(session: Session, verified: Verified, *, status: str, envelope_json: str) -> tuple[ClientView, bool]:
    """Register the key of a verified :class:`ClientRegistration`; returns (client, created).

    Rules: the key is the identity. The same registration again is idempotent; the same key with a
    different display name is ``key_already_registered`` (display names are fixed; an admin can
    revoke and the volunteer re-registers under a new key); a display name is unique across keys,
    compared case-insensitively (``display_name_taken``).

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
    name_key = record.display_name.casefold()
    taken = session.scalar(select(Client.key_id).where(Client.name_key == name_key))
    if taken is not None:
        raise Conflict(f"display name {record.display_name!r} is taken by another key", code="display_name_taken")
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
    )
    session.add(row)
    try:
        session.flush()
    except IntegrityError as exc:  # a racing registration of the same key or name
        session.rollback()
        raise Conflict("a registration for this key or display name raced this one; retry", code="conflict") from exc
    return _client_view(row), True


def set_client_status(session: Session, key_id: str, status: str) -> ClientView:
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
    if status == "revoked":
        tracks = session.scalars(select(Experiment.track).where(Experiment.key_id == key_id).distinct()).all()
        for track in tracks:
            _recompute_best(session, track)
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


# --------------------------------------------------------------------------------------------------
# Sources


def get_source(session: Session, sha256: str) -> str | None:
    """The ``train.py`` text stored under this SHA-256, or None."""
    return session.scalar(select(Source.text).where(Source.sha256 == sha256))


def put_source(session: Session, text: str, canonical_sha256: str | None = None) -> bool:
    """Store a ``train.py`` content-addressed; returns True when it was new. Idempotent and race-safe."""
    sha = sha256_hex(text)
    if canonical_sha256 is None:
        canonical_sha256 = canonical_source_sha256(text)
    begin_write(session)
    stmt = (
        _insert(session)(Source)
        .values(sha256=sha, canonical_sha256=canonical_sha256, text=text, size=len(text.encode()), created_at=utc_now())
        .on_conflict_do_nothing(index_elements=["sha256"])
        .returning(Source.sha256)
    )
    return session.execute(stmt).first() is not None


def _source_by_canonical(session: Session, canonical_sha256: str) -> str | None:
    return session.scalar(select(Source.text).where(Source.canonical_sha256 == canonical_sha256).limit(1))


# --------------------------------------------------------------------------------------------------
# Experiments: ingest


def experiment_exists(session: Session, record_id: str) -> bool:
    return session.scalar(select(Experiment.seq).where(Experiment.id == record_id)) is not None


def add_experiment(
    session: Session, checked: CheckedExperiment, *, envelope_json: str, rules: DedupSettings
) -> tuple[ExperimentView, bool]:
    """Store a checked experiment with its sources, directions, aggregates and best rows, in the
    caller's transaction. Returns (view, created); the same record id again returns the stored one.
    """
    verified, record = checked.verified, checked.record
    begin_write(session)
    if experiment_exists(session, verified.record_id):
        return get_experiment_view(session, verified.record_id), False
    put_source(session, checked.parent_source, record.parent_canonical_sha256)
    put_source(session, checked.child_source, record.child_canonical_sha256)

    near = _find_near_duplicate(
        session, record.track, record.parent_canonical_sha256, record.child_canonical_sha256,
        checked.const_changes, checked.minhash, rules,
    )
    replicated_by_other = _confirm_replications(session, record, verified.keyid)
    eligible = record.outcome == "ok" and record.status == "keep" and not checked.seed_only
    needs_replication = False
    if eligible and not replicated_by_other:
        best = session.get(Best, (record.track, record.hardware_class))
        beats = best is None or record.metrics.val_bpb < best.val_bpb
        z = record.normalised.z
        needs_replication = beats and (z is None or z > rules.replication_z)

    row = Experiment(
        id=verified.record_id,
        key_id=verified.keyid,
        track=record.track,
        parent_sha256=record.parent_sha256,
        child_sha256=record.child_sha256,
        parent_canonical_sha256=record.parent_canonical_sha256,
        child_canonical_sha256=record.child_canonical_sha256,
        outcome=record.outcome,
        status=record.status,
        val_bpb=record.metrics.val_bpb,
        parent_val_bpb=record.parent_val_bpb,
        z=record.normalised.z,
        ecm=record.normalised.ecm,
        gain=checked.gain,
        hardware_class=record.hardware_class,
        description=record.description,
        seed_only=checked.seed_only,
        needs_replication=needs_replication,
        near_duplicate_of=near,
        directions=json.dumps(checked.directions),
        const_changes=source.dump_changes(checked.const_changes) if checked.const_changes else None,
        minhash=checked.minhash,
        created_at=record.created_at,
        received_at=utc_now(),
        record_json=verified.payload.decode("utf-8"),
        envelope_json=envelope_json,
    )
    session.add(row)
    try:
        session.flush()
    except IntegrityError as exc:  # the same record, stored by a racing request (another replica)
        session.rollback()
        if experiment_exists(session, verified.record_id):
            return get_experiment_view(session, verified.record_id), False
        raise Conflict("a racing write conflicted with this experiment; submit it again", code="conflict") from exc
    for key in checked.directions:
        session.add(ExperimentDirection(experiment_seq=row.seq, direction=key))
    _bulk_aggregates(session, [checked])
    _add_replications(session, [checked])
    if eligible:
        _offer_best(session, row)
    session.flush()
    return _views(session, [row])[0], True


def _find_near_duplicate(
    session: Session,
    track: str,
    parent_c: str,
    child_c: str,
    changes: source.ConstChanges | None,
    minhash: bytes | None,
    rules: DedupSettings,
) -> str | None:
    """Id of the earliest stored experiment of the same parent that this change near-duplicates."""
    if not changes and minhash is None:
        return None
    rows = session.execute(
        select(Experiment.id, Experiment.const_changes, Experiment.minhash)
        .where(
            Experiment.track == track,
            Experiment.parent_canonical_sha256 == parent_c,
            Experiment.child_canonical_sha256 != child_c,
            Experiment.near_duplicate_of.is_(None),
        )
        .order_by(Experiment.seq)
        .limit(NEAR_DUPLICATE_CANDIDATES)
    ).all()
    for other_id, other_changes, other_minhash in rows:
        if source.is_near_duplicate(
            changes or {}, minhash, source.load_changes(other_changes), other_minhash,
            rel_tol=rules.rel_tol, threshold=rules.jaccard,
        ):
            return str(other_id)
    return None


def _confirm_replications(session: Session, record: ExperimentRecord, key_id: str) -> bool:
    """An ``ok`` run confirms other keys' runs of the same experiment (clears their flag). Returns
    whether another key already has an ``ok`` run of it (then this one needs no replication)."""
    same = and_(
        Experiment.track == record.track,
        Experiment.parent_canonical_sha256 == record.parent_canonical_sha256,
        Experiment.child_canonical_sha256 == record.child_canonical_sha256,
        Experiment.key_id != key_id,
        Experiment.outcome == "ok",
    )
    if record.outcome == "ok":
        session.execute(update(Experiment).where(same, Experiment.needs_replication.is_(True)).values(needs_replication=False))
    return session.scalar(select(Experiment.seq).where(same).limit(1)) is not None


def _offer_best(session: Session, row: Experiment) -> None:
    """Make ``row`` the best of its hardware class (lower val_bpb) and across classes (higher ECM)
    when it beats the stored one; a conditional upsert, so racing writers keep the true best."""
    insert = _insert(session)
    now = utc_now()
    table = Best.__table__
    raw = insert(Best).values(track=row.track, scope=row.hardware_class, experiment_id=row.id,
                              val_bpb=row.val_bpb, ecm=row.ecm, updated_at=now)
    raw = raw.on_conflict_do_update(
        index_elements=["track", "scope"],
        set_={"experiment_id": raw.excluded.experiment_id, "val_bpb": raw.excluded.val_bpb,
              "ecm": raw.excluded.ecm, "updated_at": raw.excluded.updated_at},
        where=table.c.val_bpb > raw.excluded.val_bpb,
    )
    session.execute(raw)
    if row.ecm is not None:
        by_ecm = insert(Best).values(track=row.track, scope=ECM_SCOPE, experiment_id=row.id,
                                     val_bpb=row.val_bpb, ecm=row.ecm, updated_at=now)
        by_ecm = by_ecm.on_conflict_do_update(
            index_elements=["track", "scope"],
            set_={"experiment_id": by_ecm.excluded.experiment_id, "val_bpb": by_ecm.excluded.val_bpb,
                  "ecm": by_ecm.excluded.ecm, "updated_at": by_ecm.excluded.updated_at},
            where=or_(table.c.ecm.is_(None), table.c.ecm < by_ecm.excluded.ecm),
        )
        session.execute(by_ecm)


def _eligible(track: str) -> Select[Experiment]:
    """Kept ``ok`` runs of a track that may rank: not seed-only, not from a revoked key."""
    return (
        select(Experiment)
        .join(Client, Client.key_id == Experiment.key_id)
        .where(
            Experiment.track == track,
            Experiment.status == "keep",
            Experiment.outcome == "ok",
            Experiment.seed_only.is_(False),
            Client.status != "revoked",
        )
    )


def _recompute_best(session: Session, track: str) -> None:
    """Rebuild the best rows of a track from the experiments (after a revocation)."""
    session.execute(delete(Best).where(Best.track == track))
    classes = session.scalars(select(Experiment.hardware_class).where(Experiment.track == track).distinct()).all()
    for hw in classes:
        top = session.scalar(_eligible(track).where(Experiment.hardware_class == hw).order_by(Experiment.val_bpb, Experiment.seq).limit(1))
        if top is not None:
            _offer_best(session, top)
    top_ecm = session.scalar(_eligible(track).where(Experiment.ecm.is_not(None)).order_by(Experiment.ecm.desc(), Experiment.seq).limit(1))
    if top_ecm is not None:
        _offer_best(session, top_ecm)


# --------------------------------------------------------------------------------------------------
# Calibrations


def add_calibration(session: Session, verified: Verified, *, envelope_json: str) -> bool:
    """Store a verified calibration record; returns True when new (same id again: False)."""
    record = verified.record
    assert isinstance(record, CalibrationRecord)
    begin_write(session)
    stmt = (
        _insert(session)(Calibration)
        .values(
            id=verified.record_id, key_id=verified.keyid, track=record.track, hardware_class=record.hardware_class,
            sigma=record.sigma, created_at=record.created_at, received_at=utc_now(),
            record_json=verified.payload.decode("utf-8"), envelope_json=envelope_json,
        )
        .on_conflict_do_nothing(index_elements=["id"])
        .returning(Calibration.id)
    )
    return session.execute(stmt).first() is not None


def calibrations_of(session: Session, key_id: str) -> list[CalibrationRecord]:
    """A client's calibration records, newest first."""
    rows = session.scalars(select(Calibration.record_json).where(Calibration.key_id == key_id).order_by(Calibration.received_at.desc())).all()
    return [CalibrationRecord.model_validate_json(r) for r in rows]


# --------------------------------------------------------------------------------------------------
# Claims


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
    base = {
        "track": record.track,
        "parent_canonical_sha256": record.parent_canonical_sha256,
        "child_canonical_sha256": record.child_canonical_sha256,
    }
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
        return _views(session, [exact])[0], None
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


# --------------------------------------------------------------------------------------------------
# Experiments: reads


@dataclass(frozen=True)
class ExperimentFilter:
    """Filters of ``GET /api/v1/experiments`` (None: any)."""

    track: str | None = None
    hardware_class: str | None = None
    outcome: str | None = None
    client: str | None = None
    since: datetime | None = None


def encode_cursor(seq: int) -> str:
    """Opaque keyset cursor for the rows after ``seq`` (newest first)."""
    return base64.urlsafe_b64encode(f"s{seq}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    """Inverse of :func:`encode_cursor`. Raises BadRequest ``bad_cursor``."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
        if not raw.startswith("s"):
            raise ValueError("no prefix")
        return int(raw[1:])
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise BadRequest(f"cursor {cursor[:40]!r} is not one this hub issued", code="bad_cursor") from exc


def list_experiments(session: Session, flt: ExperimentFilter, *, cursor: str | None, limit: int) -> Page[ExperimentView]:
    """Experiments matching ``flt``, newest first, keyset-paginated by an opaque cursor."""
    query = select(Experiment).order_by(Experiment.seq.desc()).limit(limit + 1)
    if flt.track is not None:
        query = query.where(Experiment.track == flt.track)
    if flt.hardware_class is not None:
        query = query.where(Experiment.hardware_class == flt.hardware_class)
    if flt.outcome is not None:
        query = query.where(Experiment.outcome == flt.outcome)
    if flt.client is not None:
        query = query.where(Experiment.key_id == flt.client)
    if flt.since is not None:
        query = query.where(Experiment.received_at >= flt.since)
    if cursor is not None:
        query = query.where(Experiment.seq < decode_cursor(cursor))
    rows = list(session.scalars(query).all())
    next_cursor = encode_cursor(rows[limit - 1].seq) if len(rows) > limit else None
    return Page[ExperimentView](items=_views(session, rows[:limit]), next_cursor=next_cursor)


def recent_kept(session: Session, track: str, limit: int = 50) -> list[ExperimentView]:
    """The most recent kept ``ok`` runs of a track (for the suggestion engine), newest first."""
    rows = session.scalars(
        select(Experiment)
        .where(Experiment.track == track, Experiment.status == "keep", Experiment.outcome == "ok")
        .order_by(Experiment.seq.desc())
        .limit(limit)
    ).all()
    return _views(session, list(rows))


def activity(session: Session, *, now: datetime, hours: float) -> Activity:
    """Experiments received in the ``hours`` before ``now`` and their distinct keys (one aggregate)."""
    since = now - timedelta(hours=hours)
    experiments, clients = session.execute(
        select(func.count(), func.count(Experiment.key_id.distinct())).where(Experiment.received_at >= since)
    ).one()
    return Activity(since=since, hours=hours, experiments=experiments, clients=clients, per_hour=experiments / hours)


def progress(session: Session, track: str, hardware_class: str, *, limit: int) -> Progress:
    """The newest ``limit`` experiments of a (track, hardware class), oldest first, as chart points.

    Reads only the columns the chart draws (no record JSON), so a few thousand points stay cheap.
    """
    rows = session.execute(
        select(Experiment.id, Experiment.created_at, Experiment.status, Experiment.outcome, Experiment.val_bpb,
               Experiment.description)
        .where(Experiment.track == track, Experiment.hardware_class == hardware_class)
        .order_by(Experiment.seq.desc())
        .limit(limit + 1)
    ).all()
    points = [
        ProgressPoint(id=i, created_at=at, status=st, outcome=oc, val_bpb=bpb, description=d)
        for i, at, st, oc, bpb, d in reversed(rows[:limit])
    ]
    return Progress(track=track, hardware_class=hardware_class, points=points, truncated=len(rows) > limit)


def get_experiment_view(session: Session, experiment_id: str) -> ExperimentView:
    """One experiment as listed. Raises NotFound ``unknown_experiment``."""
    return _views(session, [_experiment_row(session, experiment_id)])[0]


def get_experiment(session: Session, experiment_id: str) -> ExperimentDetail:
    """One experiment with sources, lineage (ancestors, nearest first) and children.

    Raises:
        NotFound: ``unknown_experiment``.
    """
    row = _experiment_row(session, experiment_id)
    view = _views(session, [row])[0]
    children = session.scalars(
        select(Experiment.id).where(Experiment.parent_sha256 == row.child_sha256).order_by(Experiment.seq).limit(100)
    ).all()
    return ExperimentDetail(
        **view.model_dump(),
        parent_source=get_source(session, row.parent_sha256),
        child_source=get_source(session, row.child_sha256),
        lineage=_lineage(session, row.parent_sha256),
        children=list(children),
    )


def get_envelope(session: Session, experiment_id: str) -> str:
    """The DSSE envelope JSON of an experiment, exactly as received. Raises NotFound, Conflict."""
    return _experiment_row(session, experiment_id).envelope_json


def _experiment_row(session: Session, experiment_id: str) -> Experiment:
    """The experiment with this id, or with this unique id prefix (the 12 hex digits tables show).

    Raises:
        NotFound: ``unknown_experiment``.
        Conflict: ``ambiguous_id`` — the prefix matches several experiments.
    """
    if len(experiment_id) == 64:
        rows = [session.scalar(select(Experiment).where(Experiment.id == experiment_id))]
    else:  # ids are lowercase hex (checked by the route), so LIKE needs no escaping
        rows = list(session.scalars(select(Experiment).where(Experiment.id.like(f"{experiment_id}%")).limit(2)))
    if not rows or rows[0] is None:
        raise NotFound(f"no experiment {experiment_id}", code="unknown_experiment")
    if len(rows) > 1:
        raise Conflict(f"{experiment_id} is the prefix of several experiments; give more digits", code="ambiguous_id")
    return rows[0]


def _lineage(session: Session, parent_sha256: str) -> list[str]:
    """Ancestor experiment ids, nearest first: the earliest kept run whose child is each parent."""
    ids: list[str] = []
    seen: set[str] = set()
    sha = parent_sha256
    while len(ids) < LINEAGE_DEPTH and sha not in seen:
        seen.add(sha)
        row = session.execute(
            select(Experiment.id, Experiment.parent_sha256)
            .where(Experiment.child_sha256 == sha, Experiment.status == "keep")
            .order_by(Experiment.seq)
            .limit(1)
        ).first()
        if row is None:
            break
        ids.append(row[0])
        sha = row[1]
    return ids


def _views(session: Session, rows: Sequence[Experiment]) -> list[ExperimentView]:
    """ORM rows → views, with client names, revocation and replications in three queries."""
    if not rows:
        return []
    key_ids = {r.key_id for r in rows}
    clients = {
        k: (name, status)
        for k, name, status in session.execute(
            select(Client.key_id, Client.display_name, Client.status).where(Client.key_id.in_(key_ids))
        )
    }
    groups = {(r.track, r.parent_canonical_sha256, r.child_canonical_sha256) for r in rows}
    reps = _replications(session, groups)
    return [
        ExperimentView(
            id=r.id,
            key_id=r.key_id,
            client_name=clients[r.key_id][0],
            received_at=r.received_at,
            record=ExperimentRecord.model_validate_json(r.record_json),
            directions=json.loads(r.directions),
            replications=reps[(r.track, r.parent_canonical_sha256, r.child_canonical_sha256)],
            needs_replication=r.needs_replication,
            near_duplicate_of=r.near_duplicate_of,
            revoked=clients[r.key_id][1] == "revoked",
        )
        for r in rows
    ]


def _replications(session: Session, groups: set[tuple[str, str, str]]) -> dict[tuple[str, str, str], Replications]:
    """n, mean and population std of val_bpb over the ``ok`` runs of each experiment group, its
    hardware classes and its first :data:`REPLICATION_IDS` run ids. Reads the running sums of
    ``replication_groups``/``replication_classes`` (one row per group and class) and one short
    index range per group, so a view costs the same however often the experiment was replicated."""

    def in_groups(table: type[ReplicationGroup] | type[ReplicationClass] | type[Experiment]):  # type: ignore[no-untyped-def]
        return or_(  # an OR of equalities: both engines answer it from the primary key / index
            *(
                and_(table.track == t, table.parent_canonical_sha256 == p, table.child_canonical_sha256 == c)
                for t, p, c in groups
            )
        )

    sums = {
        (r.track, r.parent_canonical_sha256, r.child_canonical_sha256): r
        for r in session.scalars(select(ReplicationGroup).where(in_groups(ReplicationGroup))).all()
    }
    classes: dict[tuple[str, str, str], list[str]] = defaultdict(list)
    for r in session.scalars(select(ReplicationClass).where(in_groups(ReplicationClass))).all():
        classes[(r.track, r.parent_canonical_sha256, r.child_canonical_sha256)].append(r.hardware_class)
    out: dict[tuple[str, str, str], Replications] = {}
    for group in groups:
        t, p, c = group
        ids = session.scalars(
            select(Experiment.id)
            .where(Experiment.track == t, Experiment.parent_canonical_sha256 == p, Experiment.child_canonical_sha256 == c)
            .order_by(Experiment.seq)
            .limit(REPLICATION_IDS)
        ).all()
        row = sums.get(group)
        mean = row.bpb_sum / row.ok_runs if row is not None and row.ok_runs else None
        std = math.sqrt(max(0.0, row.bpb_sumsq / row.ok_runs - mean * mean)) if row is not None and mean is not None else None
        out[group] = Replications(
            n=row.runs if row is not None else 0, val_bpb_mean=mean, val_bpb_std=std,
            hardware_classes=sorted(classes[group]), experiment_ids=list(ids),
        )
    return out


def _add_replications(session: Session, items: Sequence[CheckedExperiment]) -> None:
    """Add runs to the per-experiment running sums (upserts; racing writers add, never overwrite)."""
    groups: dict[tuple[str, str, str], list[float]] = defaultdict(lambda: [0, 0, 0.0, 0.0])
    classes: dict[tuple[str, str, str, str], int] = defaultdict(int)
    for c in items:
        r = c.record
        key = (r.track, r.parent_canonical_sha256, r.child_canonical_sha256)
        acc = groups[key]
        acc[0] += 1
        if r.outcome == "ok" and r.metrics.val_bpb is not None:
            acc[1] += 1
            acc[2] += r.metrics.val_bpb
            acc[3] += r.metrics.val_bpb**2
        classes[(*key, r.hardware_class)] += 1
    insert = _insert(session)
    names = ("track", "parent_canonical_sha256", "child_canonical_sha256")
    g = ReplicationGroup.__table__
    for (t, p, ch), (runs, ok_runs, total, total_sq) in groups.items():
        stmt = insert(ReplicationGroup).values(
            track=t, parent_canonical_sha256=p, child_canonical_sha256=ch,
            runs=int(runs), ok_runs=int(ok_runs), bpb_sum=total, bpb_sumsq=total_sq,
        )
        session.execute(stmt.on_conflict_do_update(
            index_elements=list(names),
            set_={n: g.c[n] + stmt.excluded[n] for n in ("runs", "ok_runs", "bpb_sum", "bpb_sumsq")},
        ))
    k = ReplicationClass.__table__
    for (t, p, ch, hw), runs in classes.items():
        stmt = insert(ReplicationClass).values(
            track=t, parent_canonical_sha256=p, child_canonical_sha256=ch, hardware_class=hw, runs=runs
        )
        session.execute(stmt.on_conflict_do_update(
            index_elements=[*names, "hardware_class"], set_={"runs": k.c.runs + stmt.excluded.runs}
        ))


# --------------------------------------------------------------------------------------------------
# Track views


def leaderboard(session: Session, track: str, *, limit: int = LEADERBOARD_SIZE) -> Leaderboard:
    """Per hardware class the ``limit`` lowest val_bpb, and across classes the ``limit`` highest ECM."""
    classes = session.scalars(
        select(Best.scope).where(Best.track == track, Best.scope != ECM_SCOPE).order_by(Best.scope)
    ).all()
    by_class: dict[str, list[LeaderboardEntry]] = {}
    for hw in classes:
        rows = session.scalars(
            _eligible(track).where(Experiment.hardware_class == hw).order_by(Experiment.val_bpb, Experiment.seq).limit(limit)
        ).all()
        by_class[hw] = _entries(session, list(rows))
    ecm_rows = session.scalars(
        _eligible(track).where(Experiment.ecm.is_not(None)).order_by(Experiment.ecm.desc(), Experiment.seq).limit(limit)
    ).all()
    return Leaderboard(track=track, by_hardware_class=by_class, ecm=_entries(session, list(ecm_rows)))


def _entries(session: Session, rows: list[Experiment]) -> list[LeaderboardEntry]:
    names = dict(
        session.execute(select(Client.key_id, Client.display_name).where(Client.key_id.in_({r.key_id for r in rows}))).all()
    )
    return [
        LeaderboardEntry(
            rank=i + 1,
            experiment_id=r.id,
            key_id=r.key_id,
            client_name=names[r.key_id],
            hardware_class=r.hardware_class,
            val_bpb=r.val_bpb,
            ecm=r.ecm,
            gain=r.gain,
            description=r.description,
            created_at=r.created_at,
            needs_replication=r.needs_replication,
        )
        for i, r in enumerate(rows)
    ]


def community_best(session: Session, spec: TrackSpec, reference_source: str, hardware_class: str | None) -> CommunityBest:
    """The best kept ``train.py`` of a track: of one hardware class (lowest val_bpb), or across
    classes (highest ECM; without any calibrated run, the lowest val_bpb of any class). The track's
    reference when nothing qualifies."""
    if hardware_class is not None:
        best = session.get(Best, (spec.id, hardware_class))
    else:
        best = session.get(Best, (spec.id, ECM_SCOPE)) or session.scalar(
            select(Best).where(Best.track == spec.id).order_by(Best.val_bpb).limit(1)
        )
    if best is None:
        return CommunityBest(track=spec.id, hardware_class=hardware_class, train_py=reference_source,
                             sha256=sha256_hex(reference_source), ecm=1.0)
    row = _experiment_row(session, best.experiment_id)
    return CommunityBest(
        track=spec.id,
        hardware_class=hardware_class,
        experiment=_views(session, [row])[0],
        train_py=get_source(session, row.child_sha256) or "",
        sha256=row.child_sha256,
        val_bpb=row.val_bpb,
        ecm=row.ecm,
        lineage=[row.id, *_lineage(session, row.parent_sha256)],
    )


def track_view(session: Session, spec: TrackSpec) -> TrackView:
    """A track's spec with its experiment and client counts and best figures."""
    experiments, clients = session.execute(
        select(func.count(), func.count(Experiment.key_id.distinct())).where(Experiment.track == spec.id)
    ).one()
    best_bpb = session.scalar(select(func.min(Best.val_bpb)).where(Best.track == spec.id, Best.scope != ECM_SCOPE))
    best_ecm = session.scalar(select(Best.ecm).where(Best.track == spec.id, Best.scope == ECM_SCOPE))
    return TrackView(spec=spec, experiments=experiments, clients=clients, best_val_bpb=best_bpb, best_ecm=best_ecm)


def direction_stats(session: Session, track: str) -> list[DirectionStats]:
    """Per direction of a track: tries, keeps, crashes, gain mean/std and z mean over all hardware
    classes, the per-class split, and up to five recent kept experiments as evidence. Sorted by tries.

    ``hardware_dependent``: at least two classes with two or more gains each, one with mean gain
    above 1 and another below 1.
    """
    rows = session.scalars(select(DirectionAggregate).where(DirectionAggregate.track == track)).all()
    per: dict[str, list[DirectionAggregate]] = defaultdict(list)
    for r in rows:
        per[r.direction].append(r)
    evidence = _evidence(session, track)
    out = []
    for key, aggs in per.items():
        gain_n = sum(a.gain_n for a in aggs)
        z_n = sum(a.z_n for a in aggs)
        mean_gain = sum(a.gain_sum for a in aggs) / gain_n if gain_n else None
        std_gain = (
            math.sqrt(max(0.0, sum(a.gain_sumsq for a in aggs) / gain_n - mean_gain**2)) if mean_gain is not None else None
        )
        by_class = {
            a.hardware_class: DirectionByClass(
                tries=a.tries, keeps=a.keeps, mean_gain=a.gain_sum / a.gain_n if a.gain_n else None
            )
            for a in aggs
        }
        means = [a.gain_sum / a.gain_n for a in aggs if a.gain_n >= 2]
        out.append(
            DirectionStats(
                direction=key,
                tries=sum(a.tries for a in aggs),
                keeps=sum(a.keeps for a in aggs),
                crashes=sum(a.crashes for a in aggs),
                mean_gain=mean_gain,
                std_gain=std_gain,
                mean_z=sum(a.z_sum for a in aggs) / z_n if z_n else None,
                by_hardware_class=by_class,
                hardware_dependent=bool(means) and max(means) > 1.0 > min(means),
                evidence=evidence.get(key, []),
            )
        )
    return sorted(out, key=lambda s: (-s.tries, s.direction))


def _evidence(session: Session, track: str) -> dict[str, list[str]]:
    rows = session.execute(
        select(ExperimentDirection.direction, Experiment.id)
        .join(Experiment, Experiment.seq == ExperimentDirection.experiment_seq)
        .where(Experiment.track == track, Experiment.status == "keep")
        .order_by(Experiment.seq.desc())
        .limit(2000)
    ).all()
    out: dict[str, list[str]] = defaultdict(list)
    for key, eid in rows:
        if len(out[key]) < EVIDENCE_PER_DIRECTION:
            out[key].append(eid)
    return out



def ping(session: Session) -> None:
    """One trivial query; raises the driver's error when the database does not answer."""
    session.execute(select(1))


def bulk_load(session: Session, items: Sequence[CheckedExperiment], envelope_jsons: Sequence[str]) -> int:
    """Insert already-checked experiments in bulk (benchmarks, imports from another hub): one
    multi-row INSERT per table, aggregates summed in Python, best rows rebuilt at the end.

    Unlike :func:`add_experiment` it runs no near-duplicate search and no ``needs_replication``
    rule, and it expects record ids that are not stored yet (a duplicate raises IntegrityError).
    Returns the number of experiments inserted.
    """
    begin_write(session)
    sources: dict[str, tuple[str, str]] = {}
    for c in items:
        sources[c.record.parent_sha256] = (c.parent_source, c.record.parent_canonical_sha256)
        sources[c.record.child_sha256] = (c.child_source, c.record.child_canonical_sha256)
    for text, canonical in sources.values():
        put_source(session, text, canonical)
    now = utc_now()
    rows = [
        {
            "id": c.verified.record_id, "key_id": c.verified.keyid, "track": c.record.track,
            "parent_sha256": c.record.parent_sha256, "child_sha256": c.record.child_sha256,
            "parent_canonical_sha256": c.record.parent_canonical_sha256,
            "child_canonical_sha256": c.record.child_canonical_sha256,
            "outcome": c.record.outcome, "status": c.record.status, "val_bpb": c.record.metrics.val_bpb,
            "parent_val_bpb": c.record.parent_val_bpb, "z": c.record.normalised.z, "ecm": c.record.normalised.ecm,
            "gain": c.gain, "hardware_class": c.record.hardware_class, "description": c.record.description,
            "seed_only": c.seed_only, "needs_replication": False, "near_duplicate_of": None,
            "directions": json.dumps(c.directions),
            "const_changes": source.dump_changes(c.const_changes) if c.const_changes else None,
            "minhash": c.minhash, "created_at": c.record.created_at, "received_at": now,
            "record_json": c.verified.payload.decode("utf-8"), "envelope_json": envelope,
        }
        for c, envelope in zip(items, envelope_jsons, strict=True)
    ]
    session.execute(_insert(session)(Experiment), rows)
    ids = [r["id"] for r in rows]
    seqs = dict(session.execute(select(Experiment.id, Experiment.seq).where(Experiment.id.in_(ids))).all())
    links = [{"experiment_seq": seqs[c.verified.record_id], "direction": key} for c in items for key in c.directions]
    if links:
        session.execute(_insert(session)(ExperimentDirection), links)
    _bulk_aggregates(session, items)
    _add_replications(session, items)
    for track in {c.record.track for c in items}:
        _recompute_best(session, track)
    return len(rows)


def _bulk_aggregates(session: Session, items: Sequence[CheckedExperiment]) -> None:
    """Add runs to the (track, direction, hardware class) running sums: one upsert per key.

    Every run counts as a try (and a keep or crash) of each direction it touches; only a run that
    isolates one direction adds its gain and z (``suggestions.counts_toward_gain``), so a passenger
    change never shares in another change's gain. Seed-only runs and crashes add no gain or z."""
    sums: dict[tuple[str, str, str], dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for c in items:
        crashed = c.record.outcome != "ok"
        isolated = counts_toward_gain(c.directions) and not c.seed_only and not crashed
        gain = c.gain if isolated else None
        z = c.record.normalised.z if isolated else None
        for key in c.directions:
            acc = sums[(c.record.track, key, c.record.hardware_class)]
            acc["tries"] += 1
            acc["keeps"] += c.record.status == "keep"
            acc["crashes"] += crashed
            if gain is not None:
                acc["gain_n"] += 1
                acc["gain_sum"] += gain
                acc["gain_sumsq"] += gain * gain
            if z is not None:
                acc["z_n"] += 1
                acc["z_sum"] += z
                acc["z_sumsq"] += z * z
    table = DirectionAggregate.__table__
    names = ["tries", "keeps", "crashes", "gain_n", "gain_sum", "gain_sumsq", "z_n", "z_sum", "z_sumsq"]
    integer = {"tries", "keeps", "crashes", "gain_n", "z_n"}
    for (track, key, hw), acc in sums.items():
        values = {n: int(acc[n]) if n in integer else float(acc[n]) for n in names}
        stmt = _insert(session)(DirectionAggregate).values(track=track, direction=key, hardware_class=hw, **values)
        stmt = stmt.on_conflict_do_update(
            index_elements=["track", "direction", "hardware_class"],
            set_={n: table.c[n] + stmt.excluded[n] for n in names},
        )
        session.execute(stmt)
