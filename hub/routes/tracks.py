"""Track views: ``/api/v1/tracks``, ``/tracks/{track}``, its leaderboard, best, directions and
suggestions. ``{track}`` is a full track id or a built-in short name."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from autoresearch.protocol import (
    Activity,
    CommunityBest,
    DirectionStats,
    Leaderboard,
    Progress,
    SuggestionList,
    TrackView,
    utc_now,
)

from .. import store
from ..deps import ReadAccessDep, SessionDep, StateDep
from ..openapi import ERRORS

router = APIRouter(prefix="/api/v1", tags=["tracks"])

PROGRESS_MAX_POINTS = 2000  # most points of one progress chart (docs/pages.md)


@router.get("/tracks", response_model=list[TrackView], responses=ERRORS)
def list_tracks(session: SessionDep, state: StateDep, _: ReadAccessDep) -> list[TrackView]:
    """Every track this hub knows, with counts and best figures."""
    return store.track_views(session, state.catalog.all())


@router.get("/activity", response_model=Activity, responses=ERRORS)
def get_activity(
    session: SessionDep, _: ReadAccessDep,
    hours: Annotated[float, Query(gt=0, le=24 * 365, description="window, hours")] = 24.0,
) -> Activity:
    """What the hub received lately: experiments, active clients (distinct keys), experiments per hour."""
    return store.activity(session, now=utc_now(), hours=hours)


@router.get("/tracks/{track}", response_model=TrackView, responses=ERRORS)
def get_track(track: str, session: SessionDep, state: StateDep, _: ReadAccessDep) -> TrackView:
    return store.track_view(session, state.catalog.get(track))


@router.get("/tracks/{track}/leaderboard", response_model=Leaderboard, responses=ERRORS)
def get_leaderboard(track: str, session: SessionDep, state: StateDep, _: ReadAccessDep) -> Leaderboard:
    """Raw val_bpb per hardware class and ECM across classes (kept runs of non-revoked keys)."""
    return store.leaderboard(session, state.catalog.get(track).id)


@router.get("/tracks/{track}/best", response_model=CommunityBest, responses=ERRORS)
def get_best(
    track: str, session: SessionDep, state: StateDep, _: ReadAccessDep,
    hardware_class: Annotated[str | None, Query(max_length=200)] = None,
) -> CommunityBest:
    """The community best ``train.py`` (of a hardware class, else by ECM), with its lineage."""
    spec = state.catalog.get(track)
    return store.community_best(session, spec, state.catalog.reference_source(spec), hardware_class)


@router.get("/tracks/{track}/progress", response_model=Progress, responses=ERRORS)
def get_progress(
    track: str, session: SessionDep, state: StateDep, _: ReadAccessDep,
    hardware_class: Annotated[str | None, Query(max_length=200, description="default: the class of the newest experiment")] = None,
    limit: Annotated[int, Query(ge=1, le=PROGRESS_MAX_POINTS)] = PROGRESS_MAX_POINTS,
) -> Progress:
    """The newest experiments of one hardware class, oldest first: the track page's progress chart
    (without ``hardware_class``, like the other views: the class of the newest experiment)."""
    return store.progress(session, state.catalog.get(track).id, hardware_class, limit=limit)


@router.get("/tracks/{track}/directions", response_model=list[DirectionStats], responses=ERRORS)
def get_directions(track: str, session: SessionDep, state: StateDep, _: ReadAccessDep) -> list[DirectionStats]:
    """Per direction: tries, keeps, crashes, gain and z statistics, per hardware class."""
    return store.direction_stats(session, state.catalog.get(track).id)


@router.get("/tracks/{track}/suggestions", response_model=SuggestionList, responses=ERRORS)
def get_suggestions(
    track: str, session: SessionDep, state: StateDep, _: ReadAccessDep,
    hardware_class: Annotated[str | None, Query(max_length=200)] = None,
    client: Annotated[str | None, Query(pattern=r"^[0-9a-f]{64}$", description="asking key id")] = None,
) -> SuggestionList:
    """What to try next (exploit, explore, combine, replicate, avoid), from :mod:`..suggestions`."""
    from .. import suggestions

    spec = state.catalog.get(track)
    items = suggestions.for_client(
        session, spec, state.catalog.reference_source(spec), hardware_class=hardware_class, client=client, now=utc_now()
    )
    return SuggestionList(track=spec.id, hardware_class=hardware_class, items=items)
