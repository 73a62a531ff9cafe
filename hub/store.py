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
- The hub's own figures: z, ECM and gain of every run come from the signer's calibration the hub
  verified (same key, track and hardware class; :func:`_verified_calibration`), computed by
  :func:`autoresearch.protocol.best.normalise`, never from the record's claim.
- One community-best rule (:mod:`autoresearch.protocol.best`): every run that may rank (kept ``ok``,
  changes something beyond seeding, key not revoked) carries the rule's verdict, recomputed for the
  whole experiment (all runs of the same track, parent and child canonical hashes) whenever one of
  its runs, a calibration of one of its runs or a revocation arrives (:func:`_reassess`). The
  ``best`` rows hold the rule's pick among ``qualified`` runs, so leaderboards, ``/best``, the
  pages and the suggestion engine read one answer. ``needs_replication`` is the verdict of the
  same name.
- Seed-only and empty changes are stored but never rank, and add no gain or z to the statistics.
- Experiments of revoked keys stay, marked ``revoked``, and leave the leaderboards and bests.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import logging
import math
import secrets
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypedDict

from pydantic import ValidationError
from sqlalchemy import Select, and_, bindparam, case, delete, func, or_, select, union_all, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, aliased

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
    Normalised,
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
from autoresearch.protocol import best as rule
from autoresearch.protocol.api import ClientStatus
from autoresearch.protocol.records import finite_or_none

from . import names
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
    QuotaUsage,
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
UNION_BRANCHES = 250  # limited selects per UNION ALL statement (SQLite allows 500 compound terms)


@dataclass(frozen=True)
class DedupSettings:
    """Thresholds of the near-duplicate rules (from :class:`~autoresearch.hub.settings.HubSettings`).
    The community-best rule has no settings: its constants live in :mod:`autoresearch.protocol.best`."""

    rel_tol: float = 0.05
    jaccard: float = 0.9


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


# --------------------------------------------------------------------------------------------------
# Sources


def get_source(session: Session, sha256: str) -> str | None:
    """The ``train.py`` text stored under this SHA-256, or None."""
    return session.scalar(select(Source.text).where(Source.sha256 == sha256))


def get_sources(session: Session, sha256s: set[str]) -> dict[str, str]:
    """The stored ``train.py`` sources with these SHA-256s (unknown ones are left out), one statement."""
    if not sha256s:
        return {}
    return dict(session.execute(select(Source.sha256, Source.text).where(Source.sha256.in_(sha256s))).all())


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


SOURCES_PER_INSERT = 500  # rows per multi-row source insert (5 bound values each; SQLite allows 32,766)


def put_sources(session: Session, sources: dict[str, tuple[str, str]]) -> None:
    """Store ``{sha256: (text, canonical sha256)}`` content-addressed in multi-row inserts
    (``ON CONFLICT DO NOTHING``: idempotent and race-safe). The caller vouches that each key is the
    SHA-256 of its text (the ingest checks did)."""
    if not sources:
        return
    begin_write(session)
    now = utc_now()
    rows = [{"sha256": sha, "canonical_sha256": canonical, "text": text, "size": len(text.encode()), "created_at": now}
            for sha, (text, canonical) in sources.items()]
    for i in range(0, len(rows), SOURCES_PER_INSERT):
        stmt = _insert(session)(Source).values(rows[i : i + SOURCES_PER_INSERT])
        session.execute(stmt.on_conflict_do_nothing(index_elements=["sha256"]))


def _source_by_canonical(session: Session, canonical_sha256: str) -> str | None:
    return session.scalar(select(Source.text).where(Source.canonical_sha256 == canonical_sha256).limit(1))


# --------------------------------------------------------------------------------------------------
# Experiments: ingest


def experiment_exists(session: Session, record_id: str) -> bool:
    return session.scalar(select(Experiment.seq).where(Experiment.id == record_id)) is not None


def add_experiment(
    session: Session, checked: CheckedExperiment, *, envelope_json: str, rules: DedupSettings
) -> tuple[str, bool]:
    """Store a checked experiment with its sources, directions, aggregates and best rows, in the
    caller's transaction. Returns (record id, created); the same record id again stores nothing.

    A fixed number of statements whatever the database holds (tests/hub/test_statement_counts.py):
    one multi-row source upsert, the near-duplicate candidates, the calibration and z ceiling where
    they apply, the row (``INSERT … ON CONFLICT (id) DO NOTHING``), its direction links, one
    aggregate upsert per direction, two replication upserts and, for an ``ok`` run, the
    reassessment of its experiment (:func:`_reassess`). No CPU work runs here: everything derived
    from the sources was computed before the write transaction (:func:`autoresearch.hub.ingest.check_experiment`).

    Raises:
        Conflict: ``conflict`` — a racing write violated another constraint; submit again.
    """
    verified, record = checked.verified, checked.record
    begin_write(session)
    put_sources(session, {
        record.parent_sha256: (checked.parent_source, record.parent_canonical_sha256),
        record.child_sha256: (checked.child_source, record.child_canonical_sha256),
    })
    near = _find_near_duplicate(
        session, record.track, record.parent_canonical_sha256, record.child_canonical_sha256,
        checked.const_changes, checked.minhash, rules,
    )
    cal = _verified_calibration(session, record, verified.keyid)
    figures = rule.normalise(cal, record.metrics.val_bpb, record.parent_val_bpb)
    rankable = _rankable(record.outcome, record.status, checked.seed_only, checked.directions)
    values = _row_values(checked, envelope_json, cal, figures, now=utc_now(), near_duplicate_of=near,
                         z_ceiling=_z_ceiling(session, record.track) if rankable else None)
    try:
        seq = session.scalar(
            _insert(session)(Experiment).values(**values).on_conflict_do_nothing(index_elements=["id"]).returning(Experiment.seq)
        )
    except IntegrityError as exc:  # another constraint, raced by another replica
        session.rollback()
        raise Conflict("a racing write conflicted with this experiment; submit it again", code="conflict") from exc
    if seq is None:  # the same record, stored already (or by a racing request)
        return verified.record_id, False
    if checked.directions:
        session.execute(_insert(session)(ExperimentDirection),
                        [{"experiment_seq": seq, "direction": key} for key in checked.directions])
    _bulk_aggregates(session, [_aggregate_of(values, checked)])
    _add_replications(session, [checked])
    if record.outcome == "ok":  # an ok run is evidence for every run of the same experiment
        _reassess(session, record.track, record.parent_canonical_sha256, record.child_canonical_sha256)
    return verified.record_id, True


def _row_values(
    c: CheckedExperiment, envelope_json: str, cal: rule.CalibrationFacts | None, figures: Normalised, *,
    now: datetime, near_duplicate_of: str | None, z_ceiling: float | None,
) -> dict[str, Any]:
    """The ``experiments`` row of a checked experiment: the one row builder of :func:`add_experiment`
    and :func:`bulk_load` (and so of ``autoresearch hub import``). ``figures`` are the hub's own
    (:func:`autoresearch.protocol.best.normalise` of the verified calibration ``cal``)."""
    record = c.record
    return {
        "id": c.verified.record_id, "key_id": c.verified.keyid, "track": record.track,
        "parent_sha256": record.parent_sha256, "child_sha256": record.child_sha256,
        "parent_canonical_sha256": record.parent_canonical_sha256,
        "child_canonical_sha256": record.child_canonical_sha256,
        "outcome": record.outcome, "status": record.status, "val_bpb": record.metrics.val_bpb,
        "parent_val_bpb": record.parent_val_bpb, "calibration_id": cal.id if cal is not None else None,
        "normalised": figures.model_dump_json(), "z": figures.z, "ecm": figures.ecm, "gain": figures.gain,
        "bpb_ratio": _bpb_ratio(record.metrics.val_bpb, record.parent_val_bpb),
        "hardware_class": record.hardware_class, "description": record.description,
        "seed_only": c.seed_only, "verdict": None, "assessment": None, "near_duplicate_of": near_duplicate_of,
        "z_ceiling": z_ceiling,
        "directions": json.dumps(c.directions),
        "const_changes": source.dump_changes(c.const_changes) if c.const_changes else None,
        "minhash": c.minhash, "created_at": record.created_at, "received_at": now,
        "record_json": c.verified.payload.decode("utf-8"), "envelope_json": envelope_json,
    }


def _aggregate_of(values: dict[str, Any], c: CheckedExperiment) -> _AggregateInput:
    """What a new row (:func:`_row_values`) adds to the direction sums."""
    return _AggregateInput(track=values["track"], hardware_class=values["hardware_class"], directions=c.directions,
                           seed_only=c.seed_only, outcome=values["outcome"], status=values["status"], z=values["z"],
                           gain=values["gain"], bpb_ratio=values["bpb_ratio"])


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


def _rankable(outcome: str, status: str, seed_only: bool, directions: Sequence[str]) -> bool:
    """Whether a run may rank (carry a verdict): kept, ``ok``, and changing something beyond seeding.
    A revoked key's runs are excluded where the key's status is known (:func:`_reassess`)."""
    return outcome == "ok" and status == "keep" and not seed_only and bool(directions)


def _bpb_ratio(val_bpb: float | None, parent_val_bpb: float | None) -> float | None:
    """parent / child val_bpb measured on one machine (> 1 is better), or None."""
    return parent_val_bpb / val_bpb if val_bpb is not None and parent_val_bpb is not None else None


def _verified_calibration(session: Session, record: ExperimentRecord, key_id: str) -> rule.CalibrationFacts | None:
    """The calibration a record names, when the hub holds it signed by the same key for the same
    track and hardware class; else None (the run is provisional)."""
    if record.calibration_id is None:
        return None
    row = session.get(Calibration, record.calibration_id)
    if row is None or row.key_id != key_id or row.track != record.track or row.hardware_class != record.hardware_class:
        return None
    return _facts(row.id, row.record_json)


@functools.lru_cache(maxsize=1024)
def _facts(calibration_id: str, record_json: str) -> rule.CalibrationFacts:
    """What the rule reads of a stored calibration (memoised: a record is immutable per id)."""
    return rule.CalibrationFacts.of(calibration_id, CalibrationRecord.model_validate_json(record_json))


def _z_ceiling(session: Session, track: str) -> float:
    """The largest hub z of a qualified run of the track (0 when none): ``protocol.best.Candidate.z_ceiling``."""
    top = session.scalar(select(func.max(Experiment.z)).where(Experiment.track == track, Experiment.verdict == "qualified"))
    return max(0.0, float(top)) if top is not None else 0.0


def _group_rows(session: Session, track: str, parent_c: str, child_c: str) -> list[tuple[Experiment, str]]:
    """The first ``MAX_REPLICATION_RUNS`` runs of one experiment with their key's status."""
    return [
        (row, status)
        for row, status in session.execute(
            select(Experiment, Client.status)
            .join(Client, Client.key_id == Experiment.key_id)
            .where(Experiment.track == track, Experiment.parent_canonical_sha256 == parent_c,
                   Experiment.child_canonical_sha256 == child_c)
            .order_by(Experiment.seq)
            .limit(rule.MAX_REPLICATION_RUNS)
        ).all()
    ]


def _group_candidates(session: Session, rows: Sequence[tuple[Experiment, str]]) -> dict[str, rule.Candidate]:
    """The rule's candidates of one experiment: every rankable run with the other ``ok`` runs of
    non-revoked keys as its replications."""
    named = {x.calibration_id for x, _ in rows if x.calibration_id}
    cals = {
        r.id: _facts(r.id, r.record_json)
        for r in (session.scalars(select(Calibration).where(Calibration.id.in_(named))).all() if named else [])
    }
    evidence = {
        x.id: rule.Evidence(experiment_id=x.id, key_id=x.key_id, val_bpb=x.val_bpb, parent_val_bpb=x.parent_val_bpb,
                            calibration=cals.get(x.calibration_id) if x.calibration_id else None)
        for x, status in rows
        if x.outcome == "ok" and x.val_bpb is not None and status != "revoked"
    }
    out: dict[str, rule.Candidate] = {}
    for x, status in rows:
        if status == "revoked" or x.id not in evidence or not _rankable(x.outcome, x.status, x.seed_only, json.loads(x.directions)):
            continue
        out[x.id] = rule.Candidate(
            track=x.track, hardware_class=x.hardware_class, run=evidence[x.id],
            replications=[e for i, e in evidence.items() if i != x.id], z_ceiling=x.z_ceiling or 0.0,
        )
    return out


def _reassess(session: Session, track: str, parent_c: str, child_c: str) -> None:
    """Apply the community-best rule to every run of one experiment; keep the ``best`` rows in step
    (a run that qualifies is offered, one that stops qualifying rebuilds its track's bests)."""
    rows = _group_rows(session, track, parent_c, child_c)
    candidates = _group_candidates(session, rows)
    demoted = False
    for row, _ in rows:
        cand = candidates.get(row.id)
        assessment = rule.assess(cand) if cand is not None else None
        verdict = assessment.verdict if assessment is not None else None
        text = assessment.model_dump_json() if assessment is not None else None
        if (row.verdict, row.assessment) == (verdict, text):
            continue
        demoted = demoted or (row.verdict == "qualified" and verdict != "qualified")
        row.verdict, row.assessment = verdict, text
        session.flush()
        if verdict == "qualified":
            _offer_best(session, row)
    if demoted:
        _recompute_best(session, track)


def _offer_best(session: Session, row: Experiment) -> None:
    """Make a qualified ``row`` the best of its hardware class (lower val_bpb, then smaller id) and
    across classes (higher ECM, then smaller id) when it beats the stored one: a conditional upsert,
    so racing writers keep the rule's pick (:func:`autoresearch.protocol.best.qualified_ranking`)."""
    insert = _insert(session)
    now = utc_now()
    table = Best.__table__
    raw = insert(Best).values(track=row.track, scope=row.hardware_class, experiment_id=row.id,
                              val_bpb=row.val_bpb, ecm=row.ecm, updated_at=now)
    raw = raw.on_conflict_do_update(
        index_elements=["track", "scope"],
        set_={"experiment_id": raw.excluded.experiment_id, "val_bpb": raw.excluded.val_bpb,
              "ecm": raw.excluded.ecm, "updated_at": raw.excluded.updated_at},
        where=or_(table.c.val_bpb > raw.excluded.val_bpb,
                  and_(table.c.val_bpb == raw.excluded.val_bpb, table.c.experiment_id > raw.excluded.experiment_id)),
    )
    session.execute(raw)
    if row.ecm is not None:
        by_ecm = insert(Best).values(track=row.track, scope=ECM_SCOPE, experiment_id=row.id,
                                     val_bpb=row.val_bpb, ecm=row.ecm, updated_at=now)
        by_ecm = by_ecm.on_conflict_do_update(
            index_elements=["track", "scope"],
            set_={"experiment_id": by_ecm.excluded.experiment_id, "val_bpb": by_ecm.excluded.val_bpb,
                  "ecm": by_ecm.excluded.ecm, "updated_at": by_ecm.excluded.updated_at},
            where=or_(table.c.ecm.is_(None), table.c.ecm < by_ecm.excluded.ecm,
                      and_(table.c.ecm == by_ecm.excluded.ecm, table.c.experiment_id > by_ecm.excluded.experiment_id)),
        )
        session.execute(by_ecm)


def _eligible(track: str) -> Select[Experiment]:
    """Runs of a track that may rank (they carry a verdict), of keys that are not revoked."""
    return (
        select(Experiment)
        .join(Client, Client.key_id == Experiment.key_id)
        .where(Experiment.track == track, Experiment.verdict.is_not(None), Client.status != "revoked")
    )


def _recompute_best(session: Session, track: str) -> None:
    """Rebuild the best rows of a track from the qualified runs (after a demotion or a revocation)."""
    session.execute(delete(Best).where(Best.track == track))
    qualified = _eligible(track).where(Experiment.verdict == "qualified")
    classes = session.scalars(select(Experiment.hardware_class).where(Experiment.track == track).distinct()).all()
    for hw in classes:
        top = session.scalar(qualified.where(Experiment.hardware_class == hw).order_by(Experiment.val_bpb, Experiment.id).limit(1))
        if top is not None:
            _offer_best(session, top)
    top_ecm = session.scalar(qualified.where(Experiment.ecm.is_not(None)).order_by(Experiment.ecm.desc(), Experiment.id).limit(1))
    if top_ecm is not None:
        _offer_best(session, top_ecm)


def _reassess_key(session: Session, key_id: str) -> None:
    """Reassess every experiment a key ran (its revocation changes their evidence), then the bests."""
    groups = session.execute(
        select(Experiment.track, Experiment.parent_canonical_sha256, Experiment.child_canonical_sha256)
        .where(Experiment.key_id == key_id).distinct()
    ).all()
    for track, parent_c, child_c in groups:
        _reassess(session, track, parent_c, child_c)
    for track in {g[0] for g in groups}:
        _recompute_best(session, track)


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
    created = session.execute(stmt).first() is not None
    if created:
        _link_calibration(session, verified.keyid, verified.record_id, record)
    return created


def _link_calibration(session: Session, key_id: str, calibration_id: str, cal: CalibrationRecord) -> None:
    """A calibration that arrives after experiments naming it: give those runs the hub's figures,
    add their z and gain to the direction statistics, and reassess their experiments."""
    rows = [
        r for r in session.scalars(
            select(Experiment).where(Experiment.key_id == key_id, Experiment.track == cal.track,
                                     Experiment.hardware_class == cal.hardware_class, Experiment.calibration_id.is_(None))
        ).all()
        if ExperimentRecord.model_validate_json(r.record_json).calibration_id == calibration_id
    ]
    facts = rule.CalibrationFacts.of(calibration_id, cal)
    for r in rows:
        figures = rule.normalise(facts, r.val_bpb, r.parent_val_bpb)
        r.calibration_id, r.normalised = calibration_id, figures.model_dump_json()
        r.z, r.ecm, r.gain = figures.z, figures.ecm, figures.gain
    session.flush()
    _bulk_aggregates(session, [_aggregate_input(r, figures_only=True) for r in rows])
    for group in {(r.track, r.parent_canonical_sha256, r.child_canonical_sha256) for r in rows}:
        _reassess(session, *group)


def calibrations_of(session: Session, key_id: str) -> list[CalibrationRecord]:
    """A client's calibration records, newest first."""
    rows = session.scalars(select(Calibration.record_json).where(Calibration.key_id == key_id).order_by(Calibration.received_at.desc())).all()
    return [CalibrationRecord.model_validate_json(r) for r in rows]


# --------------------------------------------------------------------------------------------------
# Claims


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


# --------------------------------------------------------------------------------------------------
# Experiments: reads


@dataclass(frozen=True)
class ExperimentFilter:
    """Filters of ``GET /api/v1/experiments`` (None: any)."""

    track: str | None = None
    hardware_class: str | None = None
    outcome: str | None = None
    status: str | None = None
    client: str | None = None
    since: datetime | None = None


def encode_cursor(seq: int) -> str:
    """Opaque keyset cursor for the rows after ``seq`` (newest first)."""
    return base64.urlsafe_b64encode(f"s{seq}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    """Inverse of :func:`encode_cursor`. Raises BadRequest ``bad_cursor``."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
        if not raw.startswith("s") or not raw[1:].isdigit() or len(raw) > 20:
            raise ValueError("not s<digits>")
        seq = int(raw[1:])
        if seq >= 2**63:  # beyond every engine's BIGINT
            raise ValueError("beyond 64 bits")
        return seq
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
    if flt.status is not None:
        query = query.where(Experiment.status == flt.status)
    if flt.client is not None:
        query = query.where(Experiment.key_id == flt.client)
    if flt.since is not None:
        query = query.where(Experiment.received_at >= flt.since)
    if cursor is not None:
        query = query.where(Experiment.seq < decode_cursor(cursor))
    rows = list(session.scalars(query).all())
    next_cursor = encode_cursor(rows[limit - 1].seq) if len(rows) > limit else None
    return Page[ExperimentView](items=_views(session, rows[:limit]), next_cursor=next_cursor)


PENDING_FOR_SUGGESTIONS = 100
"""Newest ``needs_replication`` runs handed to the suggestion engine beside the recent keeps."""


def recent_kept(session: Session, track: str, limit: int = 50) -> list[ExperimentView]:
    """Kept ``ok`` runs of a track for the suggestion engine, newest first: the ``limit`` newest,
    plus the current bests and the newest :data:`PENDING_FOR_SUGGESTIONS` runs that need
    replication, however old (every flagged run must reach the replicators)."""
    kept = select(Experiment).where(Experiment.track == track, Experiment.status == "keep", Experiment.outcome == "ok")
    rows = list(session.scalars(kept.order_by(Experiment.seq.desc()).limit(limit)).all())
    rows += session.scalars(
        kept.where(Experiment.verdict == "needs_replication").order_by(Experiment.seq.desc()).limit(PENDING_FOR_SUGGESTIONS)
    ).all()
    rows += session.scalars(select(Experiment).join(Best, Best.experiment_id == Experiment.id).where(Best.track == track)).all()
    unique = {r.id: r for r in rows}
    return _views(session, sorted(unique.values(), key=lambda r: -r.seq))


def activity(session: Session, *, now: datetime, hours: float) -> Activity:
    """Experiments received in the ``hours`` before ``now`` and their distinct keys (one aggregate)."""
    since = now - timedelta(hours=hours)
    experiments, clients = session.execute(
        select(func.count(), func.count(Experiment.key_id.distinct())).where(Experiment.received_at >= since)
    ).one()
    return Activity(since=since, hours=hours, experiments=experiments, clients=clients, per_hour=experiments / hours)


def progress(session: Session, track: str, hardware_class: str | None, *, limit: int) -> Progress:
    """The newest ``limit`` experiments of a (track, hardware class), oldest first, as chart points;
    ``hardware_class`` None: the class of the track's newest experiment (one more statement).

    Reads only the columns the chart draws (no record JSON), so a few thousand points stay cheap.
    """
    if hardware_class is None:
        hardware_class = session.scalar(
            select(Experiment.hardware_class).where(Experiment.track == track).order_by(Experiment.seq.desc()).limit(1)
        )
        if hardware_class is None:
            return Progress(track=track, hardware_class=None, points=[])
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
    return _view(session, _experiment_row(session, experiment_id))


def get_experiment(session: Session, experiment_id: str) -> ExperimentDetail:
    """One experiment with sources, lineage (ancestors, nearest first) and children.

    Raises:
        NotFound: ``unknown_experiment``.
    """
    row = _experiment_row(session, experiment_id)
    view = _view(session, row)
    children = session.scalars(  # runs on top of this one's train.py (never this train.py itself)
        select(Experiment.id)
        .where(Experiment.track == row.track, Experiment.parent_sha256 == row.child_sha256,
               Experiment.child_sha256 != row.child_sha256, Experiment.id != row.id)
        .order_by(Experiment.seq)
        .limit(100)
    ).all()
    return ExperimentDetail(
        **view.model_dump(),
        parent_source=get_source(session, row.parent_sha256),
        child_source=get_source(session, row.child_sha256),
        lineage=_lineage(session, row),
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


def _lineage(session: Session, row: Experiment) -> list[str]:
    """Ancestor experiment ids of ``row``, nearest first; the first is the experiment that made the
    parent ``train.py`` it was measured against (kept or discarded alike). Each step takes a kept
    run of the same track whose child is that ``train.py`` and that changed it, preferring the
    signer's own (its line of work), then the earliest; the run itself, runs already listed and runs
    whose child equals their parent are never ancestors (no experiment is its own parent)."""
    ids: list[str] = []
    seen = {row.id}
    sha = row.parent_sha256
    shas = {row.child_sha256}
    while len(ids) < LINEAGE_DEPTH and sha not in shas:
        shas.add(sha)
        step = session.execute(
            select(Experiment.id, Experiment.parent_sha256)
            .where(Experiment.track == row.track, Experiment.child_sha256 == sha, Experiment.status == "keep",
                   Experiment.parent_sha256 != Experiment.child_sha256, Experiment.id.not_in(seen))
            .order_by((Experiment.key_id == row.key_id).desc(), Experiment.seq)
            .limit(1)
        ).first()
        if step is None:
            break
        ids.append(step[0])
        seen.add(step[0])
        sha = step[1]
    return ids


def _views(session: Session, rows: Sequence[Experiment]) -> list[ExperimentView]:
    """ORM rows → views, with client names and revocation (one query) and replications (three, see
    :func:`_replications`): four statements however many rows."""
    if not rows:
        return []
    key_ids = {r.key_id for r in rows}
    clients = {
        k: (name, status)
        for k, name, status in session.execute(
            select(Client.key_id, Client.display_name, Client.status).where(Client.key_id.in_(key_ids))
        )
    }
    records = {r.id: rec for r in rows if (rec := _stored_record(r)) is not None}
    rows = [r for r in rows if r.id in records]
    if not rows:
        return []
    groups = {(r.track, r.parent_canonical_sha256, r.child_canonical_sha256) for r in rows}
    reps = _replications(session, groups)
    return [
        ExperimentView(
            id=r.id,
            key_id=r.key_id,
            client_name=clients[r.key_id][0],
            received_at=r.received_at,
            record=records[r.id],
            directions=json.loads(r.directions),
            replications=reps[(r.track, r.parent_canonical_sha256, r.child_canonical_sha256)],
            normalised=Normalised.model_validate_json(r.normalised) if r.normalised else Normalised(),
            calibration_id=r.calibration_id,
            verdict=r.verdict,
            assessment=rule.Assessment.model_validate_json(r.assessment) if r.assessment else None,
            needs_replication=r.verdict == "needs_replication",
            provisional=r.calibration_id is None,
            near_duplicate_of=r.near_duplicate_of,
            revoked=clients[r.key_id][1] == "revoked",
        )
        for r in rows
    ]


def _stored_record(row: Experiment) -> ExperimentRecord | None:
    """The stored record, or None (with a warning) when it no longer meets the protocol's valid ranges
    (stored before they existed): it is not served, so one old record cannot break a page."""
    try:
        return ExperimentRecord.model_validate_json(row.record_json)
    except ValidationError as exc:
        _logger.warning("experiment %s breaks the valid ranges; not served: %s", row.id, exc.errors()[0].get("msg"))
        return None


def _view(session: Session, row: Experiment) -> ExperimentView:
    """One row as a view. Raises NotFound ``unknown_experiment`` when its record is no longer served."""
    views = _views(session, [row])
    if not views:
        raise NotFound(f"experiment {row.id} breaks the valid ranges and is not served", code="unknown_experiment")
    return views[0]


def _replications(session: Session, groups: set[tuple[str, str, str]]) -> dict[tuple[str, str, str], Replications]:
    """n, mean and population std of val_bpb over the ``ok`` runs of each experiment group, its
    hardware classes and its first :data:`REPLICATION_IDS` run ids. Reads the running sums of
    ``replication_groups``/``replication_classes`` (one row per group and class) and one short
    ``UNION ALL`` of one short index range per group (``… order by seq limit``) for the ids: three
    statements per :data:`GROUP_CHUNK` groups (a listing page: one chunk), and a view costs the same
    however often the experiment was replicated.

    The statements are prepared once per chunk shape (:func:`_group_statements`) and take the groups
    as bound parameters, so SQLAlchemy neither rebuilds nor recompiles them per call (rebuilding the
    OR/UNION of a few hundred groups cost ≈ 60 ms a call; bench/suggestions_bench.py)."""
    sums: dict[tuple[str, str, str], ReplicationGroup] = {}
    classes: dict[tuple[str, str, str], list[str]] = defaultdict(list)
    ids: dict[tuple[str, str, str], list[tuple[int, str]]] = defaultdict(list)
    for chunk in _group_chunks(groups):
        in_sums, in_classes, id_union = _group_statements(len(chunk))
        params = {f"{k}{i}": v for i, group in enumerate(chunk) for k, v in zip("tpc", group, strict=True)}
        for r in session.scalars(in_sums, params).all():
            sums[(r.track, r.parent_canonical_sha256, r.child_canonical_sha256)] = r
        for rc in session.scalars(in_classes, params).all():
            classes[(rc.track, rc.parent_canonical_sha256, rc.child_canonical_sha256)].append(rc.hardware_class)
        for t, p, c, i, seq in session.execute(id_union, params).all():
            ids[(t, p, c)].append((seq, i))
    out: dict[tuple[str, str, str], Replications] = {}
    for group in groups:
        row = sums.get(group)
        mean = _positive(row.bpb_sum / row.ok_runs) if row is not None and row.ok_runs else None
        std = _spread(row.bpb_sumsq / row.ok_runs, mean) if row is not None and mean is not None else None
        out[group] = Replications(
            n=row.runs if row is not None else 0, val_bpb_mean=mean, val_bpb_std=std,
            hardware_classes=sorted(classes[group]), experiment_ids=[i for _seq, i in sorted(ids[group])],
        )
    return out


GROUP_CHUNK = 128
"""Most experiment groups per statement of :func:`_replications` (a power of two ≤ :data:`UNION_BRANCHES`)."""
_NO_GROUP = ("", "", "")  # pads a chunk: no track has an empty id, so it matches no row


def _group_chunks(groups: set[tuple[str, str, str]]) -> list[list[tuple[str, str, str]]]:
    """``groups`` sorted, in chunks of :data:`GROUP_CHUNK`, the last one padded with
    :data:`_NO_GROUP` to the next power of two: at most eight chunk shapes ever (1, 2, 4, …, 128)."""
    ordered = sorted(groups)
    chunks = [ordered[k:k + GROUP_CHUNK] for k in range(0, len(ordered), GROUP_CHUNK)]
    if chunks:
        last = chunks[-1]
        last += [_NO_GROUP] * ((1 << (len(last) - 1).bit_length()) - len(last))
    return chunks


@functools.cache
def _group_statements(
    size: int,
) -> tuple[Select[ReplicationGroup], Select[ReplicationClass], Select[*tuple[Any, ...]]]:
    """The three statements of :func:`_replications` for ``size`` groups bound as ``t{i}``, ``p{i}``,
    ``c{i}`` (track, parent and child canonical sha256): the groups' running sums, their classes, and
    the UNION ALL of their first :data:`REPLICATION_IDS` (track, parent, child, id, seq) rows. Built
    once per size and process: the statement object memoises its cache key, so every later call is a
    hit of the engine's compiled cache (an OR of equalities and short index ranges: both engines
    answer them from the primary key / index)."""

    def in_groups(table: type[ReplicationGroup] | type[ReplicationClass]):  # type: ignore[no-untyped-def]
        return or_(
            *(
                and_(table.track == bindparam(f"t{i}"), table.parent_canonical_sha256 == bindparam(f"p{i}"),
                     table.child_canonical_sha256 == bindparam(f"c{i}"))
                for i in range(size)
            )
        )

    branches = [
        select(Experiment.track, Experiment.parent_canonical_sha256, Experiment.child_canonical_sha256,
               Experiment.id, Experiment.seq)
        .where(Experiment.track == bindparam(f"t{i}"), Experiment.parent_canonical_sha256 == bindparam(f"p{i}"),
               Experiment.child_canonical_sha256 == bindparam(f"c{i}"))
        .order_by(Experiment.seq)
        .limit(REPLICATION_IDS)
        for i in range(size)
    ]
    return (select(ReplicationGroup).where(in_groups(ReplicationGroup)),
            select(ReplicationClass).where(in_groups(ReplicationClass)), _union_all(branches))


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
    """Per hardware class the ``limit`` lowest val_bpb, and across classes the ``limit`` highest ECM,
    of the runs that may rank, each with its verdict; the community best of each board (the
    ``best`` row, the same as ``/best``) is marked, and listed even when it ranks below ``limit``.

    At most six statements however many classes: the best rows, the classes, every class's top ``limit`` in
    one ``UNION ALL`` of limited index scans, the ECM top, the best runs that rank below ``limit``
    (only when some does), and the client names."""
    bests = dict(session.execute(select(Best.scope, Best.experiment_id).where(Best.track == track)).all())
    classes = session.scalars(
        select(Experiment.hardware_class).where(Experiment.track == track, Experiment.verdict.is_not(None))
        .distinct().order_by(Experiment.hardware_class)
    ).all()
    tops: dict[str, list[Experiment]] = defaultdict(list)
    if classes:  # every class's top ``limit`` from the (track, class, status, val_bpb) index, one statement
        numbered = _union_all([
            _eligible(track).where(Experiment.hardware_class == hw).order_by(Experiment.val_bpb, Experiment.id).limit(limit)
            for hw in classes
        ]).subquery()
        ranked = aliased(Experiment, numbered)
        for row in session.scalars(select(ranked)):
            tops[row.hardware_class].append(row)
        for rows in tops.values():
            rows.sort(key=_board_order)
    ecm_rows = list(session.scalars(
        _eligible(track).where(Experiment.ecm.is_not(None)).order_by(Experiment.ecm.desc(), Experiment.id).limit(limit)
    ).all())
    boards = {hw: tops[hw] for hw in classes}
    boards[ECM_SCOPE] = ecm_rows
    missing = {best_id for scope, best_id in bests.items() if scope in boards and all(r.id != best_id for r in boards[scope])}
    extra = {r.id: r for r in session.scalars(select(Experiment).where(Experiment.id.in_(missing)))} if missing else {}
    for scope, best_id in bests.items():
        if best_id in extra:
            boards[scope] = [*boards[scope], extra[best_id]]
    key_ids = {r.key_id for rows in boards.values() for r in rows}
    names = dict(session.execute(select(Client.key_id, Client.display_name).where(Client.key_id.in_(key_ids))).all()) if key_ids else {}
    by_class = {hw: _entries(names, boards[hw], bests.get(hw)) for hw in classes}
    best_ecm = bests.get(ECM_SCOPE)
    return Leaderboard(track=track, by_hardware_class=by_class, ecm=_entries(names, boards[ECM_SCOPE], best_ecm))


def _union_all(branches: Sequence[Select[*tuple[Any, ...]]]) -> Select[*tuple[Any, ...]]:
    """One statement of ``branches``, each keeping its own ``ORDER BY … LIMIT`` (wrapped in a
    subquery, which SQLite needs), so every branch is a short index scan (per-group top-N on both
    engines without a window over whole groups). Row order across branches is not defined."""
    wrapped = [b.subquery().select() for b in branches]
    return wrapped[0] if len(wrapped) == 1 else union_all(*wrapped)  # type: ignore[return-value]


def _board_order(row: Experiment) -> tuple[bool, float, str]:
    """A class board's order: val_bpb, then id (NULL last; :func:`_entries` drops those anyway)."""
    return (False, row.val_bpb, row.id) if row.val_bpb is not None else (True, 0.0, row.id)


def _entries(names: dict[str, str], rows: list[Experiment], best_id: str | None) -> list[LeaderboardEntry]:
    ranked = [(r, bpb) for r in rows if (bpb := _positive(r.val_bpb)) is not None]
    return [
        LeaderboardEntry(
            rank=i + 1,
            experiment_id=r.id,
            key_id=r.key_id,
            client_name=names[r.key_id],
            hardware_class=r.hardware_class,
            val_bpb=bpb,
            ecm=_positive(r.ecm),
            gain=_positive(r.gain),
            description=r.description,
            created_at=r.created_at,
            z=r.z,
            verdict=r.verdict,
            needs_replication=r.verdict == "needs_replication",
            provisional=r.calibration_id is None,
            community_best=r.id == best_id,
        )
        for i, (r, bpb) in enumerate(ranked)
    ]


def community_best(session: Session, spec: TrackSpec, reference_source: str, hardware_class: str | None) -> CommunityBest:
    """The community best ``train.py`` of a track by the one rule (:mod:`autoresearch.protocol.best`):
    of one hardware class (lowest val_bpb among qualified runs), or across classes (highest ECM).
    The track's reference when nothing qualifies (or the best's stored record no longer meets the
    protocol's ranges). ``candidate`` carries the evidence the rule judged, so a client can re-apply
    :func:`~autoresearch.protocol.best.assess` before adopting it."""
    best = session.get(Best, (spec.id, hardware_class if hardware_class is not None else ECM_SCOPE))
    row = _experiment_row(session, best.experiment_id) if best is not None else None
    views = _views(session, [row]) if row is not None else []
    if row is None or not views:
        return CommunityBest(track=spec.id, hardware_class=hardware_class, train_py=reference_source,
                             sha256=sha256_hex(reference_source), ecm=1.0)
    candidate = _group_candidates(
        session, _group_rows(session, row.track, row.parent_canonical_sha256, row.child_canonical_sha256)
    ).get(row.id)
    return CommunityBest(
        track=spec.id,
        hardware_class=hardware_class,
        experiment=views[0],
        train_py=get_source(session, row.child_sha256) or "",
        sha256=row.child_sha256,
        val_bpb=finite_or_none(row.val_bpb),
        ecm=finite_or_none(row.ecm),
        lineage=[row.id, *_lineage(session, row)],
        candidate=candidate,
    )


def best_experiment_id(session: Session, track: str, hardware_class: str | None) -> str | None:
    """Id of the community best of a track (of ``hardware_class``, else across classes by ECM), or
    None: the row :func:`community_best` starts from, for callers that poll for a change (the
    research simulator)."""
    best = session.get(Best, (track, hardware_class if hardware_class is not None else ECM_SCOPE))
    return best.experiment_id if best is not None else None


def candidates(session: Session, track: str) -> list[rule.Candidate]:
    """Every candidate of a track as the rule sees it (tests and audits: ``protocol.best.community_best``
    over these is what the ``best`` rows hold)."""
    groups = session.execute(
        select(Experiment.parent_canonical_sha256, Experiment.child_canonical_sha256)
        .where(Experiment.track == track, Experiment.verdict.is_not(None)).distinct()
    ).all()
    out: list[rule.Candidate] = []
    for parent_c, child_c in groups:
        out.extend(_group_candidates(session, _group_rows(session, track, parent_c, child_c)).values())
    return out


def track_view(session: Session, spec: TrackSpec) -> TrackView:
    """A track's spec with its experiment and client counts and best figures (two statements)."""
    return track_views(session, [spec])[0]


def track_views(session: Session, specs: Sequence[TrackSpec]) -> list[TrackView]:
    """:func:`track_view` of each spec, in order: two statements however many tracks (one grouped
    count, one grouped read of the best rows)."""
    ids = [spec.id for spec in specs]
    if not ids:
        return []
    counts = {
        t: (n, k)
        for t, n, k in session.execute(
            select(Experiment.track, func.count(), func.count(Experiment.key_id.distinct()))
            .where(Experiment.track.in_(ids)).group_by(Experiment.track)
        )
    }
    bests = {
        t: (bpb, ecm)
        for t, bpb, ecm in session.execute(  # min over the classes' rows, the ECM row's ecm
            select(Best.track, func.min(case((Best.scope != ECM_SCOPE, Best.val_bpb))),
                   func.max(case((Best.scope == ECM_SCOPE, Best.ecm))))
            .where(Best.track.in_(ids)).group_by(Best.track)
        )
    }
    out = []
    for spec in specs:
        experiments, clients = counts.get(spec.id, (0, 0))
        best_bpb, best_ecm = bests.get(spec.id, (None, None))
        out.append(TrackView(spec=spec, experiments=experiments, clients=clients, best_val_bpb=_positive(best_bpb),
                             best_ecm=_positive(best_ecm)))
    return out


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
        gain_mean, gain_std, gain_n = _moments(aggs, "gain")
        ratio_mean, ratio_std, ratio_n = _moments(aggs, "ratio")
        z_mean, _, _ = _moments(aggs, "z")
        by_class = {
            a.hardware_class: DirectionByClass(
                tries=a.tries, keeps=a.keeps, mean_gain=_moments([a], "gain")[0], mean_bpb_ratio=_moments([a], "ratio")[0]
            )
            for a in aggs
        }
        # hardware dependence on ECM gains where the classes have them, else on val_bpb ratios
        means = [m for a in aggs if (m := _class_gain(a)) is not None]
        out.append(
            DirectionStats(
                direction=key,
                tries=sum(a.tries for a in aggs),
                keeps=sum(a.keeps for a in aggs),
                crashes=sum(a.crashes for a in aggs),
                mean_gain=gain_mean,
                std_gain=gain_std,
                gain_n=gain_n,
                mean_bpb_ratio=ratio_mean,
                std_bpb_ratio=ratio_std,
                bpb_ratio_n=ratio_n,
                mean_z=z_mean,
                by_hardware_class=by_class,
                hardware_dependent=bool(means) and max(means) > 1.0 > min(means),
                evidence=evidence.get(key, []),
            )
        )
    return sorted(out, key=lambda s: (-s.tries, s.direction))


def _moments(aggs: Sequence[DirectionAggregate], name: str) -> tuple[float | None, float | None, int]:
    """(mean, population std, n) of the ``gain`` / ``ratio`` / ``z`` sums of some aggregate rows."""
    n = sum(getattr(a, f"{name}_n") for a in aggs)
    if not n:
        return None, None, 0
    mean = finite_or_none(math.fsum(getattr(a, f"{name}_sum") for a in aggs) / n)
    if mean is None:  # sums that overflowed (served as null, never a 500)
        return None, None, n
    return mean, _spread(math.fsum(getattr(a, f"{name}_sumsq") for a in aggs) / n, mean), n


def _class_gain(agg: DirectionAggregate) -> float | None:
    """A class's mean gain for the hardware-dependence test (two or more runs): ECM ratio, else val_bpb ratio."""
    if agg.gain_n >= 2:
        return agg.gain_sum / agg.gain_n
    if agg.ratio_n >= 2:
        return agg.ratio_sum / agg.ratio_n
    return None


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



def _positive(value: float | None) -> float | None:
    """``value`` when it is a finite number > 0 (what the served models accept), else None."""
    value = finite_or_none(value)
    return value if value is not None and value > 0 else None


def _spread(mean_square: float, mean: float | None) -> float | None:
    """Population std from E[x²] and E[x]; None when either is not finite (a sum that overflowed)."""
    if mean is None or not math.isfinite(mean_square):
        return None
    std: float | None = finite_or_none(math.sqrt(max(0.0, mean_square - mean * mean)))
    return std


def ping(session: Session) -> None:
    """One trivial query; raises the driver's error when the database does not answer."""
    session.execute(select(1))


def bulk_load(session: Session, items: Sequence[CheckedExperiment], envelope_jsons: Sequence[str]) -> int:
    """Insert already-checked experiments in bulk (benchmarks, imports from another hub): one
    multi-row INSERT per table, aggregates summed in Python, best rows rebuilt at the end.

    Unlike :func:`add_experiment` it runs no near-duplicate search, and it expects record ids that
    are not stored yet (a duplicate raises IntegrityError). The hub's figures and the community-best
    rule are applied as in :func:`add_experiment` (the rule once per distinct experiment, at the end).
    Returns the number of experiments inserted.
    """
    begin_write(session)
    sources: dict[str, tuple[str, str]] = {}
    for c in items:
        sources[c.record.parent_sha256] = (c.parent_source, c.record.parent_canonical_sha256)
        sources[c.record.child_sha256] = (c.child_source, c.record.child_canonical_sha256)
    put_sources(session, sources)
    now = utc_now()
    cals = [_verified_calibration(session, c.record, c.verified.keyid) for c in items]
    figures = [rule.normalise(cal, c.record.metrics.val_bpb, c.record.parent_val_bpb) for c, cal in zip(items, cals, strict=True)]
    ceilings = {track: _z_ceiling(session, track) for track in {c.record.track for c in items}}
    rows = [
        _row_values(c, envelope, cal, fig, now=now, near_duplicate_of=None,
                    z_ceiling=ceilings[c.record.track] if _rankable(c.record.outcome, c.record.status, c.seed_only, c.directions) else None)
        for c, envelope, cal, fig in zip(items, envelope_jsons, cals, figures, strict=True)
    ]
    session.execute(_insert(session)(Experiment), rows)
    ids = [r["id"] for r in rows]
    seqs = dict(session.execute(select(Experiment.id, Experiment.seq).where(Experiment.id.in_(ids))).all())
    links = [{"experiment_seq": seqs[c.verified.record_id], "direction": key} for c in items for key in c.directions]
    if links:
        session.execute(_insert(session)(ExperimentDirection), links)
    _bulk_aggregates(session, [_aggregate_of(r, c) for c, r in zip(items, rows, strict=True)])
    _add_replications(session, items)
    _assess_in_order(session, items, seqs)
    for track in {c.record.track for c in items}:
        _recompute_best(session, track)
    return len(rows)


def _assess_in_order(session: Session, items: Sequence[CheckedExperiment], seqs: dict[str, int]) -> None:
    """The rule's verdicts of bulk-loaded runs as one-by-one ingest would give them: in arrival
    order, each rankable run gets the track's z ceiling of its time (``protocol.best.Candidate.z_ceiling``:
    the largest z qualified before it), and each ``ok`` run reassesses its experiment. One
    difference remains: a run's replications later in the same batch are already stored when it is
    assessed, so it may qualify earlier than one-by-one (which can only raise later ceilings)."""
    last_ok: dict[tuple[str, str, str], int] = {}
    for i, c in enumerate(items):
        if c.record.outcome == "ok":
            last_ok[(c.record.track, c.record.parent_canonical_sha256, c.record.child_canonical_sha256)] = i
    for i, c in enumerate(items):
        r = c.record
        group = (r.track, r.parent_canonical_sha256, r.child_canonical_sha256)
        if _rankable(r.outcome, r.status, c.seed_only, c.directions):
            session.execute(update(Experiment).where(Experiment.seq == seqs[c.verified.record_id])
                            .values(z_ceiling=_z_ceiling(session, r.track)))
            _reassess(session, *group)
        elif r.outcome == "ok" and last_ok[group] == i:  # evidence for the group's rankable runs
            _reassess(session, *group)


@dataclass(frozen=True)
class _AggregateInput:
    """What one run adds to the direction sums (the hub's own z, ECM gain and val_bpb ratio)."""

    track: str
    hardware_class: str
    directions: list[str]
    seed_only: bool
    outcome: str
    status: str
    z: float | None
    gain: float | None
    bpb_ratio: float | None
    figures_only: bool = False  # a calibration linked late: add z and gain, not another try


def _aggregate_input(row: Experiment, *, figures_only: bool = False) -> _AggregateInput:
    return _AggregateInput(
        track=row.track, hardware_class=row.hardware_class, directions=json.loads(row.directions),
        seed_only=row.seed_only, outcome=row.outcome, status=row.status, z=row.z, gain=row.gain,
        bpb_ratio=None if figures_only else row.bpb_ratio, figures_only=figures_only,
    )


def _bulk_aggregates(session: Session, items: Sequence[_AggregateInput]) -> None:
    """Add runs to the (track, direction, hardware class) running sums: one upsert per key.

    Every run counts as a try (and a keep or crash) of each direction it touches; only a run that
    isolates one direction adds its z, ECM gain and val_bpb ratio (``suggestions.counts_toward_gain``),
    so a passenger change never shares in another change's gain. Seed-only runs and crashes add none."""
    sums: dict[tuple[str, str, str], dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for c in items:
        crashed = c.outcome != "ok"
        isolated = counts_toward_gain(c.directions) and not c.seed_only and not crashed
        figures = {"gain": c.gain, "z": c.z, "ratio": c.bpb_ratio} if isolated else {}
        for key in c.directions:
            acc = sums[(c.track, key, c.hardware_class)]
            if not c.figures_only:
                acc["tries"] += 1
                acc["keeps"] += c.status == "keep"
                acc["crashes"] += crashed
            for name, value in figures.items():
                if value is not None:
                    acc[f"{name}_n"] += 1
                    acc[f"{name}_sum"] += value
                    acc[f"{name}_sumsq"] += value * value
    table = DirectionAggregate.__table__
    names = ["tries", "keeps", "crashes", *(f"{f}_{p}" for f in ("gain", "z", "ratio") for p in ("n", "sum", "sumsq"))]
    integer = {"tries", "keeps", "crashes", "gain_n", "z_n", "ratio_n"}
    for (track, key, hw), acc in sums.items():
        values = {n: int(acc[n]) if n in integer else float(acc[n]) for n in names}
        stmt = _insert(session)(DirectionAggregate).values(track=track, direction=key, hardware_class=hw, **values)
        stmt = stmt.on_conflict_do_update(
            index_elements=["track", "direction", "hardware_class"],
            set_={n: table.c[n] + stmt.excluded[n] for n in names},
        )
        session.execute(stmt)


# --------------------------------------------------------------------------------------------------
# Quotas (the policy is hub/quotas.py; these are its reads and writes)


def token_id(session: Session, token: str) -> int | None:
    """The id of a live stored token, None for an unknown or revoked one."""
    row = session.scalar(select(Token).where(Token.token_sha256 == sha256_hex(token)))
    return None if row is None or row.revoked_at is not None else row.id


def enrolled_by(session: Session, key_id: str) -> int | None:
    """The id of the enrollment token that registered a key (None: none did)."""
    return session.scalar(select(Client.enrolled_by).where(Client.key_id == key_id))


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


def rederive(session: Session, track: str | None = None) -> int:
    """Recompute from the stored records and calibrations everything the hub derives about runs:
    the verified calibration and the hub's figures, the direction aggregates, the rule's verdicts
    (in arrival order, each run meeting the track's z ceiling of its time) and the best rows.
    ``autoresearch hub admin rederive`` runs it (after migration 0005, or to audit a hub).
    Returns the number of runs rederived."""
    begin_write(session)
    query = select(Experiment).order_by(Experiment.seq)
    if track is not None:
        query = query.where(Experiment.track == track)
    rows = list(session.scalars(query).all())
    for r in rows:
        record = ExperimentRecord.model_validate_json(r.record_json)
        cal = _verified_calibration(session, record, r.key_id)
        figures = rule.normalise(cal, r.val_bpb, r.parent_val_bpb)
        r.calibration_id, r.normalised = (cal.id if cal is not None else None), figures.model_dump_json()
        r.z, r.ecm, r.gain = figures.z, figures.ecm, figures.gain
        r.bpb_ratio = _bpb_ratio(r.val_bpb, r.parent_val_bpb)
        r.verdict = r.assessment = r.z_ceiling = None
    tracks = {r.track for r in rows}
    session.execute(delete(DirectionAggregate).where(DirectionAggregate.track.in_(tracks)))
    session.execute(delete(Best).where(Best.track.in_(tracks)))
    session.flush()
    _bulk_aggregates(session, [_aggregate_input(r) for r in rows])
    for r in rows:
        if _rankable(r.outcome, r.status, r.seed_only, json.loads(r.directions)):
            r.z_ceiling = _z_ceiling(session, r.track)
            session.flush()
            _reassess(session, r.track, r.parent_canonical_sha256, r.child_canonical_sha256)
    for t in tracks:
        _recompute_best(session, t)
    return len(rows)
