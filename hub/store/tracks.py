"""Track views: the per-class and ECM leaderboards, the community best (``/best``), the rule's
candidates of a track, and the track counts of the home page and ``GET /api/v1/tracks``.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import CTE, ColumnElement, ScalarSelect, func, literal, null, select
from sqlalchemy.orm import Session, aliased

from autoresearch.protocol import (
    CommunityBest,
    Leaderboard,
    LeaderboardEntry,
    TrackSpec,
    TrackView,
    sha256_hex,
)
from autoresearch.protocol import best as rule
from autoresearch.protocol.records import finite_or_none

from ..models import Best, Client, Experiment, Source
from ._common import UNION_BRANCHES, _positive, _union_all
from .listing import _lineage, _views, _with_client
from .verdicts import ECM_SCOPE, _eligible, _group_candidates, _group_rows

LEADERBOARD_SIZE = 20


def leaderboard(session: Session, track: str, *, limit: int = LEADERBOARD_SIZE) -> Leaderboard:
    """Per hardware class the ``limit`` lowest val_bpb, and across classes the ``limit`` highest ECM,
    of the runs that may rank, each with its verdict; the community best of each board (the
    ``best`` row, the same as ``/best``) is marked, and listed even when it ranks below ``limit``.

    Two statements however many classes and runs (three when a best ranks below ``limit``): the
    boards — the track's ``best`` rows and its classes with ranking runs, one ``UNION ALL`` —, then
    every board's top ``limit`` with its client's name: one ``UNION ALL`` of limited index scans,
    a branch per class on ``(track, hardware_class, status, val_bpb)`` and one on ``(track, status,
    ecm)`` (per-group top-N as short seeks; a window over whole classes numbers every ranking run,
    see docs/scaling.md), up to :data:`UNION_BRANCHES` branches per statement."""
    classes_walk = _ranked_classes(track)
    board_keys: list[tuple[str, str | None]] = [(r[0], r[1]) for r in session.execute(_union_all([
        select(Best.scope, Best.experiment_id).where(Best.track == track),
        select(classes_walk.c.hw, null()).where(classes_walk.c.hw.is_not(None)),
    ])).all()]
    bests = {scope: best_id for scope, best_id in board_keys if best_id is not None}
    classes = sorted({scope for scope, best_id in board_keys if best_id is None})
    boards: dict[str, list[Experiment]] = {hw: [] for hw in [*classes, ECM_SCOPE]}
    names: dict[str, str] = {}
    branches = [
        _eligible(track).add_columns(literal(hw).label("board"), Client.display_name.label("client_name"))
        .where(Experiment.hardware_class == hw).order_by(Experiment.val_bpb, Experiment.id).limit(limit)
        for hw in classes
    ]
    if classes:  # an ECM board has rows only where some class has
        branches.append(
            _eligible(track).add_columns(literal(ECM_SCOPE).label("board"), Client.display_name.label("client_name"))
            .where(Experiment.ecm.is_not(None)).order_by(Experiment.ecm.desc(), Experiment.id).limit(limit)
        )
    for start in range(0, len(branches), UNION_BRANCHES):
        tops = _union_all(branches[start:start + UNION_BRANCHES]).subquery()
        ranked = aliased(Experiment, tops)
        for row, board, name in session.execute(select(ranked, tops.c.board, tops.c.client_name)).all():
            boards[board].append(row)
            names[row.key_id] = name
    for hw in classes:
        boards[hw].sort(key=_board_order)
    boards[ECM_SCOPE].sort(key=lambda r: (-(r.ecm or 0.0), r.id))  # the branch's ORDER BY (ecm is not NULL there)
    missing = {best_id for scope, best_id in bests.items() if scope in boards and all(r.id != best_id for r in boards[scope])}
    if missing:  # a best that ranks below ``limit`` (or not at all: a revoked key's, which _entries still drops)
        for row, name in session.execute(
            select(Experiment, Client.display_name).join(Client, Client.key_id == Experiment.key_id)
            .where(Experiment.id.in_(missing))
        ).all():
            names[row.key_id] = name
            for scope, best_id in bests.items():
                if best_id == row.id and scope in boards:
                    boards[scope] = [*boards[scope], row]
    by_class = {hw: _entries(names, boards[hw], bests.get(hw)) for hw in classes}
    return Leaderboard(track=track, by_hardware_class=by_class, ecm=_entries(names, boards[ECM_SCOPE], bests.get(ECM_SCOPE)))


def _ranked_classes(track: str) -> CTE:
    """The hardware classes of a track's runs that carry a verdict, as a recursive CTE (column
    ``hw``; its last row is NULL): a skip scan of the ``(track, hardware_class, status, val_bpb)``
    index, one ``ORDER BY hardware_class LIMIT 1`` seek per class past the previous one, so it costs
    the number of classes, not of runs (``SELECT DISTINCT`` read every run of the track: 0.2 s of
    the leaderboard at 100k). A verdict implies ``status = 'keep'`` (:func:`.verdicts._rankable`),
    which keeps each seek inside the index's keep range."""
    def first_after(after: ColumnElement[str] | None) -> ScalarSelect[str]:
        query = select(Experiment.hardware_class).where(
            Experiment.track == track, Experiment.status == "keep", Experiment.verdict.is_not(None)
        )
        if after is not None:
            query = query.where(Experiment.hardware_class > after)
        return query.order_by(Experiment.hardware_class).limit(1).scalar_subquery()

    walk = select(first_after(None).label("hw")).cte("ranked_classes", recursive=True)
    return walk.union_all(select(first_after(walk.c.hw)).where(walk.c.hw.is_not(None)))


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
    Seven statements however deep its lineage: the best row with its run, client and ``train.py``,
    the replications (three), the rule's evidence (the group's runs, their calibrations) and the
    lineage (one recursive statement).
    The track's reference when nothing qualifies (or the best's stored record no longer meets the
    protocol's ranges). ``candidate`` carries the evidence the rule judged, so a client can re-apply
    :func:`~autoresearch.protocol.best.assess` before adopting it."""
    found = session.execute(  # the best row, its run, client and train.py: one statement
        _with_client(select(Experiment))
        .join(Best, Best.experiment_id == Experiment.id)
        .outerjoin(Source, Source.sha256 == Experiment.child_sha256)
        .add_columns(Source.text)
        .where(Best.track == spec.id, Best.scope == (hardware_class if hardware_class is not None else ECM_SCOPE))
    ).first()
    row = found[0] if found is not None else None
    views = _views(session, [row], {row.key_id: (found[1], found[2])}) if found is not None and row is not None else []
    if found is None or row is None or not views:
        return CommunityBest(track=spec.id, hardware_class=hardware_class, train_py=reference_source,
                             sha256=sha256_hex(reference_source), ecm=1.0)
    candidate = _group_candidates(
        session, _group_rows(session, row.track, row.parent_canonical_sha256, row.child_canonical_sha256)
    ).get(row.id)
    return CommunityBest(
        track=spec.id,
        hardware_class=hardware_class,
        experiment=views[0],
        train_py=found[3] or "",
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
    """A track's spec with its experiment and client counts and best figures (one statement)."""
    return track_views(session, [spec])[0]


def track_views(session: Session, specs: Sequence[TrackSpec]) -> list[TrackView]:
    """:func:`track_view` of each spec, in order: one statement however many tracks (the grouped
    counts of ``experiments``, each track's best figures read from its ``best`` rows by two
    correlated subqueries: the min val_bpb over the classes' rows, the ECM row's ecm). A track
    with no experiments has no best rows either (they reference experiments): zeros and None."""
    ids = [spec.id for spec in specs]
    if not ids:
        return []
    class_bpb = select(func.min(Best.val_bpb)).where(Best.track == Experiment.track, Best.scope != ECM_SCOPE)
    across_ecm = select(func.max(Best.ecm)).where(Best.track == Experiment.track, Best.scope == ECM_SCOPE)
    counts: dict[str, tuple[int, int]] = {}
    bests: dict[str, tuple[float | None, float | None]] = {}
    for t, n, k, bpb, ecm in session.execute(
        select(Experiment.track, func.count(), func.count(Experiment.key_id.distinct()),
               class_bpb.scalar_subquery(), across_ecm.scalar_subquery())
        .where(Experiment.track.in_(ids)).group_by(Experiment.track)
    ):
        counts[t], bests[t] = (n, k), (bpb, ecm)
    out = []
    for spec in specs:
        experiments, clients = counts.get(spec.id, (0, 0))
        best_bpb, best_ecm = bests.get(spec.id, (None, None))
        out.append(TrackView(spec=spec, experiments=experiments, clients=clients, best_val_bpb=_positive(best_bpb),
                             best_ecm=_positive(best_ecm)))
    return out
