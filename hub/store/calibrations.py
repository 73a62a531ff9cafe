"""Calibration records: storing a verified one, linking it to the runs that named it before it
arrived (their hub figures, direction sums and verdicts), and a client's list.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from autoresearch.protocol import CalibrationRecord, ExperimentRecord, Verified, utc_now
from autoresearch.protocol import best as rule

from ..db import begin_write
from ..models import Calibration, Experiment
from ._common import _insert
from .directions import _aggregate_input, _bulk_aggregates
from .verdicts import _reassess


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
