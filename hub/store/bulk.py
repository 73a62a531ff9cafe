"""Bulk paths: :func:`bulk_load` (benchmarks, ``autoresearch hub import``) inserts checked
experiments with multi-row statements through the same row builder as ingest
(:func:`autoresearch.hub.store.experiments._row_values`) and applies the rule in arrival order;
:func:`rederive` recomputes everything derived from stored records.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from autoresearch.protocol import ExperimentRecord, utc_now
from autoresearch.protocol import best as rule

from ..db import begin_write
from ..ingest import CheckedExperiment
from ..models import Best, DirectionAggregate, Experiment, ExperimentDirection
from ._common import _insert
from .directions import _aggregate_input, _bulk_aggregates
from .experiments import _aggregate_of, _bpb_ratio, _row_values
from .replications import _add_replications
from .sources import put_sources
from .verdicts import _rankable, _reassess, _recompute_best, _verified_calibration, _z_ceiling


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
