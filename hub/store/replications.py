"""Replications: runs of one (track, parent canonical, child canonical) are one experiment. The
running sums per group and hardware class (``replication_groups``, ``replication_classes``), added
on ingest and read by every experiment view.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Select, and_, bindparam, or_, select
from sqlalchemy.orm import Session

from autoresearch.protocol import Replications

from ..ingest import CheckedExperiment
from ..models import Experiment, ReplicationClass, ReplicationGroup
from ._common import _insert, _positive, _spread, _union_all

REPLICATION_IDS = 20  # run ids listed per experiment view (n counts them all)


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
