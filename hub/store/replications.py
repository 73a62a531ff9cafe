"""Replications: runs of one (track, parent canonical, child canonical) are one experiment. The
running sums per group and hardware class (``replication_groups``, ``replication_classes``), added
on ingest and read by every experiment view.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from autoresearch.protocol import Replications

from ..ingest import CheckedExperiment
from ..models import Experiment, ReplicationClass, ReplicationGroup
from ._common import UNION_BRANCHES, _insert, _positive, _spread, _union_all

REPLICATION_IDS = 20  # run ids listed per experiment view (n counts them all)


def _replications(session: Session, groups: set[tuple[str, str, str]]) -> dict[tuple[str, str, str], Replications]:
    """n, mean and population std of val_bpb over the ``ok`` runs of each experiment group, its
    hardware classes and its first :data:`REPLICATION_IDS` run ids. Reads the running sums of
    ``replication_groups``/``replication_classes`` (one row per group and class) and one short
    ``UNION ALL`` of one short index range per group (``… order by seq limit``) for the ids: three
    statements for up to :data:`UNION_BRANCHES` groups (a listing page), and a view costs the same
    however often the experiment was replicated."""

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
    ids: dict[tuple[str, str, str], list[str]] = defaultdict(list)
    ordered = sorted(groups)
    for start in range(0, len(ordered), UNION_BRANCHES):  # one statement per UNION_BRANCHES groups
        branches = [
            select(Experiment.track, Experiment.parent_canonical_sha256, Experiment.child_canonical_sha256,
                   Experiment.id, Experiment.seq)
            .where(Experiment.track == t, Experiment.parent_canonical_sha256 == p, Experiment.child_canonical_sha256 == c)
            .order_by(Experiment.seq)
            .limit(REPLICATION_IDS)
            for t, p, c in ordered[start:start + UNION_BRANCHES]
        ]
        for t, p, c, i, _seq in sorted(session.execute(_union_all(branches)).all(), key=lambda r: r[4]):
            ids[(t, p, c)].append(i)
    out: dict[tuple[str, str, str], Replications] = {}
    for group in groups:
        row = sums.get(group)
        mean = _positive(row.bpb_sum / row.ok_runs) if row is not None and row.ok_runs else None
        std = _spread(row.bpb_sumsq / row.ok_runs, mean) if row is not None and mean is not None else None
        out[group] = Replications(
            n=row.runs if row is not None else 0, val_bpb_mean=mean, val_bpb_std=std,
            hardware_classes=sorted(classes[group]), experiment_ids=ids[group],
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
