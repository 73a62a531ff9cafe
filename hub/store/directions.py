"""Directions' running sums per (track, direction, hardware class) (``direction_aggregates``)
and the direction statistics served from them, with recent kept runs as evidence.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from autoresearch.protocol import DirectionByClass, DirectionStats
from autoresearch.protocol.records import finite_or_none

from ..models import DirectionAggregate, Experiment, ExperimentDirection
from ..suggestions import counts_toward_gain
from ._common import _insert, _spread

EVIDENCE_PER_DIRECTION = 5


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
