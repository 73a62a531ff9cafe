"""Experiment ingest: one checked experiment into its row, direction links, running sums and
the rule's verdicts, in a fixed number of statements; plus :func:`_row_values`, the one row builder
that :func:`add_experiment` and :func:`autoresearch.hub.store.bulk.bulk_load` share, so an imported
row and an ingested row are the same row.

Everything that trusts a number here reads it from a record whose signature the hub verified
(:mod:`autoresearch.hub.ingest`); the hub's own figures come from the verified calibration
(:func:`autoresearch.hub.store.verdicts._verified_calibration`), never from the record's claim.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from autoresearch.protocol import Normalised, source, utc_now
from autoresearch.protocol import best as rule

from ..db import begin_write
from ..errors import Conflict
from ..ingest import CheckedExperiment
from ..models import Experiment, ExperimentDirection
from ._common import _insert
from .directions import _AggregateInput, _bulk_aggregates
from .replications import _add_replications
from .sources import put_sources
from .verdicts import _rankable, _reassess, _verified_calibration, _z_ceiling

NEAR_DUPLICATE_CANDIDATES = 200


@dataclass(frozen=True)
class DedupSettings:
    """Thresholds of the near-duplicate rules (from :class:`~autoresearch.hub.settings.HubSettings`).
    The community-best rule has no settings: its constants live in :mod:`autoresearch.protocol.best`."""

    rel_tol: float = 0.05
    jaccard: float = 0.9


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
    reassessment of its experiment (:func:`.verdicts._reassess`). No CPU work runs here: everything derived
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


def _bpb_ratio(val_bpb: float | None, parent_val_bpb: float | None) -> float | None:
    """parent / child val_bpb measured on one machine (> 1 is better), or None."""
    return parent_val_bpb / val_bpb if val_bpb is not None and parent_val_bpb is not None else None
