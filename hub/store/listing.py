"""Experiments as served: the listing (keyset cursor), one experiment with its sources, lineage
and children, its envelope, the suggestion engine's kept runs, the progress chart and activity.

Every view is built by :func:`_views` from ORM rows in a fixed number of statements (client names,
replications); a stored record that no longer meets the protocol's ranges is not served.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from pydantic import ValidationError
from sqlalchemy import Row, Select, Text, cast, func, literal, select
from sqlalchemy.orm import Session, aliased

from autoresearch.protocol import (
    Activity,
    ExperimentDetail,
    ExperimentRecord,
    ExperimentView,
    Normalised,
    Page,
    Progress,
    ProgressPoint,
)
from autoresearch.protocol import best as rule

from ..errors import BadRequest, Conflict, NotFound
from ..models import Best, Client, Experiment
from ._common import _union_all
from .replications import _replications
from .sources import get_source

_logger = logging.getLogger(__name__)


LINEAGE_DEPTH = 100
PENDING_FOR_SUGGESTIONS = 100
"""Newest ``needs_replication`` runs handed to the suggestion engine beside the recent keeps."""


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
    """Experiments matching ``flt``, newest first, keyset-paginated by an opaque cursor. Four
    statements: the rows with their clients (one join), then the replications (:func:`_views`)."""
    query = _with_client(select(Experiment)).order_by(Experiment.seq.desc()).limit(limit + 1)
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
    rows, clients = _split_clients(session.execute(query).all())
    next_cursor = encode_cursor(rows[limit - 1].seq) if len(rows) > limit else None
    return Page[ExperimentView](items=_views(session, rows[:limit], clients), next_cursor=next_cursor)


def recent_kept(session: Session, track: str, limit: int = 50) -> list[ExperimentView]:
    """Kept ``ok`` runs of a track for the suggestion engine, newest first: the ``limit`` newest,
    plus the current bests and the newest :data:`PENDING_FOR_SUGGESTIONS` runs that need
    replication, however old (every flagged run must reach the replicators). The three sets and
    their clients in one ``UNION ALL`` (each branch a short index range), then the replications."""
    kept = select(Experiment).where(Experiment.track == track, Experiment.status == "keep", Experiment.outcome == "ok")
    sets = _union_all([
        _with_client(kept.order_by(Experiment.seq.desc()).limit(limit)),
        _with_client(kept.where(Experiment.verdict == "needs_replication").order_by(Experiment.seq.desc())
                     .limit(PENDING_FOR_SUGGESTIONS)),
        _with_client(select(Experiment).join(Best, Best.experiment_id == Experiment.id).where(Best.track == track)),
    ]).subquery()
    rows, clients = _split_clients(
        session.execute(select(aliased(Experiment, sets), sets.c.client_name, sets.c.client_status)).all()
    )
    unique = {r.id: r for r in rows}
    return _views(session, sorted(unique.values(), key=lambda r: -r.seq), clients)


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
    whose child equals their parent are never ancestors (no experiment is its own parent).

    One statement however deep (at most :data:`LINEAGE_DEPTH` steps): a recursive CTE whose each
    step is one ``(child_sha256)`` index seek (a correlated ``ORDER BY … LIMIT 1``), carrying the
    ``train.py`` hashes and run ids met so far as ``|``-delimited text (hex ids contain neither
    ``|`` nor a ``LIKE`` wildcard), so a cycle of sources stops the walk as the loop it replaces did.
    The same SQL runs on SQLite and PostgreSQL."""
    start = select(
        literal(0).label("depth"), cast(literal(row.id), Text).label("id"),
        cast(literal(row.parent_sha256), Text).label("sha"),
        cast(literal(f"|{row.child_sha256}|"), Text).label("shas"), cast(literal(f"|{row.id}|"), Text).label("ids"),
    ).cte("lineage", recursive=True)
    step, run = aliased(Experiment), aliased(Experiment)
    nearest = (  # the ancestor this walk takes from ``start.c.sha``: the loop's ``ORDER BY … LIMIT 1``
        select(step.seq)
        .where(step.track == row.track, step.child_sha256 == start.c.sha, step.status == "keep",
               step.parent_sha256 != step.child_sha256, ~start.c.ids.like("%|" + step.id + "|%"))
        .order_by((step.key_id == row.key_id).desc(), step.seq)
        .limit(1)
        .scalar_subquery()
    )
    walk = start.union_all(
        select(start.c.depth + 1, cast(run.id, Text), cast(run.parent_sha256, Text),
               start.c.shas + start.c.sha + "|", start.c.ids + run.id + "|")
        .join_from(start, run, run.seq == nearest)
        .where(start.c.depth < LINEAGE_DEPTH, ~start.c.shas.like("%|" + start.c.sha + "|%"))
    )
    return list(session.scalars(select(walk.c.id).where(walk.c.depth > 0).order_by(walk.c.depth)).all())


def _with_client(query: Select[Experiment]) -> Select[Experiment, str, str]:
    """``query`` (of experiments) with each run's client name and status (``client_name``,
    ``client_status``) joined in, so :func:`_views` needs no query of its own for them."""
    return query.join(Client, Client.key_id == Experiment.key_id).add_columns(
        Client.display_name.label("client_name"), Client.status.label("client_status")
    )


def _split_clients(rows: Sequence[Row[Experiment, str, str]]) -> tuple[list[Experiment], dict[str, tuple[str, str]]]:
    """Rows of a :func:`_with_client` query → (experiments, ``{key_id: (name, status)}``) for :func:`_views`."""
    return [r[0] for r in rows], {r[0].key_id: (r[1], r[2]) for r in rows}


def _views(
    session: Session, rows: Sequence[Experiment], clients: Mapping[str, tuple[str, str]] | None = None
) -> list[ExperimentView]:
    """ORM rows → views, with client names and revocation and replications (three statements, see
    :func:`.replications._replications`): four statements however many rows, three when the
    caller read ``clients`` (``{key_id: (display name, status)}`` of every row's key, e.g. with
    :func:`_with_client`) in its own query."""
    if not rows:
        return []
    if clients is None:
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
