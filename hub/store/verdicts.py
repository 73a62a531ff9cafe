"""The community-best rule applied to stored runs (:mod:`autoresearch.protocol.best`): the
verified calibration of a run, the track's z ceiling, the candidates of one experiment group, its
reassessment, and the ``best`` rows kept in step (conditional upserts, so racing replicas keep the
rule's pick).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence

from sqlalchemy import Select, and_, delete, func, or_, select
from sqlalchemy.orm import Session

from autoresearch.protocol import CalibrationRecord, ExperimentRecord, utc_now
from autoresearch.protocol import best as rule

from ..models import Best, Calibration, Client, Experiment
from ._common import _insert

ECM_SCOPE = "*"


def _rankable(outcome: str, status: str, seed_only: bool, directions: Sequence[str]) -> bool:
    """Whether a run may rank (carry a verdict): kept, ``ok``, and changing something beyond seeding.
    A revoked key's runs are excluded where the key's status is known (:func:`_reassess`)."""
    return outcome == "ok" and status == "keep" and not seed_only and bool(directions)


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
