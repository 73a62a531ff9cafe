"""Server-rendered pages for people (paths pinned in DESIGN.md): ``/``, ``/tracks/{track}``,
``/experiments/{id}``, ``/tracks/{track}/directions``, ``/clients/{key_id}``, ``/compare?a=&b=`` (two
experiments side by side), plus ``/login`` for
private hubs and ``/static/…`` for the hub's own CSS, JavaScript and the vendored chart library.

Every page calls the same store functions as the JSON routes under ``/api/v1`` (datasette's rule: a
page and its JSON come from the same function) and hands the protocol models to the templates through
the pure builders of :mod:`autoresearch.hub.views`. Pages never render unbounded lists: listings are
keyset-paginated with the API's cursors and the progress chart reads at most
:data:`~autoresearch.hub.routes.tracks.PROGRESS_MAX_POINTS` experiments.

The app wires it with ``app.include_router(pages.router)``. Its routes use :class:`PageRoute`, which
turns a :class:`~autoresearch.hub.errors.HubError` into an HTML error page with the error's status
and, on a private hub, sends a browser without a read token to ``/login``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine, Mapping
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import quote

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from jinja2 import pass_context
from sqlalchemy.orm import Session

from autoresearch.protocol import utc_now
from autoresearch.protocol.source import unified_diff

from .. import deps, store, views
from ..deps import SessionDep, SettingsDep, StateDep
from ..errors import AuthError, HubError, NotFound
from .tracks import PROGRESS_MAX_POINTS

_logger = logging.getLogger(__name__)

TOKEN_COOKIE = deps.TOKEN_COOKIE
"""Cookie holding the read token on private hubs (set by ``POST /login``)."""
TOKEN_COOKIE_MAX_AGE = 30 * 86_400  # seconds

_PACKAGE = resources.files("autoresearch.hub")
TEMPLATES_DIR = Path(str(_PACKAGE / "templates"))
STATIC_DIR = Path(str(_PACKAGE / "static"))


# --------------------------------------------------------------------------------------------------
# Templates


def make_templates() -> Jinja2Templates:
    """The Jinja2 environment of the pages: autoescaping on, the formatting helpers of
    :mod:`autoresearch.hub.views` as globals, ``static(path)`` for asset URLs."""
    templates = Jinja2Templates(directory=str(TEMPLATES_DIR))
    env = templates.env
    env.globals.update(
        fmt_bpb=views.fmt_bpb,
        fmt_signed=views.fmt_signed,
        fmt_ratio=views.fmt_ratio,
        fmt_count=views.fmt_count,
        fmt_number=views.fmt_number,
        short_hash=views.short_hash,
        reltime=views.reltime,
        abstime=views.abstime,
        static=lambda path: f"/static/{path}",
        url_for=_url_path,
    )
    env.trim_blocks = True
    env.lstrip_blocks = True
    return templates


@pass_context
def _url_path(context: Mapping[str, Any], name: str, /, **params: str) -> str:
    """``url_for`` of the templates: the route's path (not an absolute URL, so pages work behind a
    reverse proxy)."""
    return str(context["request"].app.url_path_for(name, **params))


_templates = make_templates()


def render(request: Request, name: str, context: dict[str, Any], status_code: int = 200) -> HTMLResponse:
    """Render a page template with what every page gets: ``now`` (UTC), the hub's URL and whether
    it is private and the browser logged in."""
    state = deps.get_state(request)
    base = {
        "now": datetime.now(UTC),
        "private": state.settings.private,
        "logged_in": TOKEN_COOKIE in request.cookies,
        "hub_url": str(request.base_url).rstrip("/"),
    }
    return _templates.TemplateResponse(request, name, {**base, **context}, status_code=status_code)


# --------------------------------------------------------------------------------------------------
# Route class, access


class LoginRequired(Exception):
    """A private hub's page was asked for without a read token; ``next_url`` is where to go back."""

    def __init__(self, next_url: str) -> None:
        super().__init__(next_url)
        self.next_url = next_url


class PageRoute(APIRoute):
    """An HTML route: a :class:`HubError` becomes an error page with the error's status (not the
    API's JSON shape), :class:`LoginRequired` a redirect to the login form."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def page_handler(request: Request) -> Response:
            try:
                return await handler(request)
            except LoginRequired as exc:
                return RedirectResponse(f"/login?next={quote(exc.next_url, safe='/')}", status_code=303)
            except HubError as exc:
                _logger.info("page error", extra={"path": request.url.path, "code": exc.code})
                return render(request, "error.html", _error_context(exc), status_code=exc.status)

        return page_handler


def _error_context(exc: HubError) -> dict[str, Any]:
    title = {404: "Not found", 400: "Bad request"}.get(exc.status, f"Error {exc.status}")
    return {"status": exc.status, "title": title, "message": exc.message, "code": exc.code}


def page_access(request: Request, session: SessionDep, settings: SettingsDep) -> None:
    """Public hub: anyone reads. Private hub: the read-token cookie (or a Bearer header) must hold a
    live read, enroll or admin token, else the browser is sent to ``/login``."""
    if not settings.private:
        return
    try:
        kind = deps.token_kind(request, session, settings)
    except AuthError:
        kind = None  # a bad Bearer header: ask for the token
    if kind is None and not deps.cookie_grants_read(request, session, settings):
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise LoginRequired(target)


router = APIRouter(include_in_schema=False, route_class=PageRoute)
_pages = APIRouter(dependencies=[Depends(page_access)], route_class=PageRoute)  # the pages behind the read token


# --------------------------------------------------------------------------------------------------
# Static files (a route, not a mount, so that ``app.include_router(pages.router)`` is all it takes)

_static = StaticFiles(directory=str(STATIC_DIR))


@router.get("/static/{path:path}", name="static")
async def static_file(path: str, request: Request) -> Response:
    """Serve ``hub/static/<path>`` (CSS, charts.js, vendored uPlot); 404 outside that folder."""
    response = await _static.get_response(path, request.scope)
    response.headers.setdefault("Cache-Control", "public, max-age=3600")
    return response


# --------------------------------------------------------------------------------------------------
# Login (private hubs)


@router.get("/login", name="page_login", response_class=HTMLResponse)
def page_login(request: Request, next: Annotated[str, Query(max_length=2000)] = "/") -> HTMLResponse:
    """The read-token form."""
    return render(request, "login.html", {"next_url": _safe_next(next), "error": None})


@router.post("/login", name="page_login_submit", response_model=None)
def page_login_submit(
    request: Request,
    session: SessionDep,
    state: StateDep,
    token: Annotated[str, Form(max_length=500)],
    next: Annotated[str, Form(max_length=2000)] = "/",
) -> Response:
    """Check the token; when the hub knows it, set the HttpOnly cookie and go back to ``next``."""
    if deps.token_kind_of(token.strip(), session, state.settings) is None:
        return render(request, "login.html", {"next_url": _safe_next(next), "error": "This hub does not know that token (or it was revoked)."}, status_code=401)
    response = RedirectResponse(_safe_next(next), status_code=303)
    response.set_cookie(
        TOKEN_COOKIE, token.strip(), max_age=TOKEN_COOKIE_MAX_AGE, httponly=True, samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


@router.get("/logout", name="page_logout")
def page_logout() -> RedirectResponse:
    """Forget the token cookie."""
    response = RedirectResponse("/", status_code=303)
    response.delete_cookie(TOKEN_COOKIE)
    return response


def _safe_next(target: str) -> str:
    """Only a path on this hub (``/…``, not ``//host``) is a place to go back to after logging in."""
    return target if target.startswith("/") and not target.startswith("//") and "\\" not in target else "/"


# --------------------------------------------------------------------------------------------------
# Pages

RECENT_PAGE_SIZE = 25
"""Experiments per page of the recent-experiments tables."""
ACTIVITY_WINDOW_HOURS = 24.0
LINEAGE_SHOWN = 12
"""Ancestors and children shown with their descriptions on an experiment page; the rest are counted."""
TOP_DIRECTIONS = 8
LATEST_SHOWN = 10


@_pages.get("/", name="page_home", response_class=HTMLResponse)
def page_home(request: Request, session: SessionDep, state: StateDep) -> HTMLResponse:
    """Tracks with their community best, activity over the last 24 h, the latest experiments."""
    tracks = store.track_views(session, state.catalog.all())
    latest = store.list_experiments(session, store.ExperimentFilter(), cursor=None, limit=LATEST_SHOWN)
    return render(request, "home.html", {
        "active_tracks": [t for t in tracks if t.experiments],
        "idle_tracks": [t for t in tracks if not t.experiments],
        "total_experiments": sum(t.experiments for t in tracks),
        "activity": store.activity(session, now=utc_now(), hours=ACTIVITY_WINDOW_HOURS),
        "recent": latest.items,
    })


@_pages.get("/tracks/{track}", name="page_track", response_class=HTMLResponse)
def page_track(
    request: Request,
    track: str,
    session: SessionDep,
    state: StateDep,
    hw: Annotated[str | None, Query(max_length=200, description="hardware class of the chart")] = None,
    status: Annotated[Literal["keep", "discard", "crash"] | None, Query(description="recent experiments: only this status")] = None,
    hardware_class: Annotated[str | None, Query(max_length=200, description="recent experiments: only this class")] = None,
    cursor: Annotated[str | None, Query(max_length=100)] = None,
) -> HTMLResponse:
    """Progress chart, ECM and raw leaderboards, top directions, recent experiments of a track
    (filtered by ``status`` and ``hardware_class`` when given)."""
    spec = state.catalog.get(track)
    leaderboard = store.leaderboard(session, spec.id)
    best = store.community_best(session, spec, state.catalog.reference_source(spec), None)
    flt = store.ExperimentFilter(track=spec.id, status=status, hardware_class=hardware_class or None)
    recent = store.list_experiments(session, flt, cursor=cursor, limit=RECENT_PAGE_SIZE)
    classes = sorted(set(leaderboard.by_hardware_class) | {e.record.hardware_class for e in recent.items})
    chart_class = hw or (best.experiment.record.hardware_class if best.experiment else None) or (classes[0] if classes else None)
    progress = store.progress(session, spec.id, chart_class, limit=PROGRESS_MAX_POINTS) if chart_class else None
    directions = store.direction_stats(session, spec.id)
    return render(request, "track.html", {
        "track": store.track_view(session, spec),
        "best": best,
        "leaderboard": leaderboard,
        "chart": views.progress_series(progress),
        "hardware_classes": classes,
        "directions": views.direction_rows(directions, TOP_DIRECTIONS),
        "direction_count": len(directions),
        "recent": recent,
        "cursor": cursor,
        "filters": {k: v for k, v in (("status", status), ("hardware_class", hardware_class)) if v},
        "experiment_url_prefix": str(request.app.url_path_for("page_experiment", experiment_id="x"))[:-1],
    })


@_pages.get("/tracks/{track}/directions", name="page_directions", response_class=HTMLResponse)
def page_directions(request: Request, track: str, session: SessionDep, state: StateDep) -> HTMLResponse:
    """Every direction of a track with tries, keeps, gain and its spread, hardware dependence."""
    spec = state.catalog.get(track)
    return render(request, "directions.html", {
        "track": store.track_view(session, spec),
        "rows": views.direction_rows(store.direction_stats(session, spec.id)),
    })


@_pages.get("/experiments/{experiment_id}", name="page_experiment", response_class=HTMLResponse)
def page_experiment(request: Request, experiment_id: str, session: SessionDep, state: StateDep) -> HTMLResponse:
    """One experiment: figures, the coloured diff, lineage, replications, signature details."""
    detail = store.get_experiment(session, experiment_id)
    record = detail.record
    try:
        spec = state.catalog.get(record.track)
        track_name, budget, reference_sha = spec.name, f"{spec.time_budget:g}", spec.reference_sha256
    except NotFound:
        track_name, budget, reference_sha = record.track, "?", None
    added, removed = views.diff_stats(record.diff)
    return render(request, "experiment.html", {
        "e": detail,
        "track_name": track_name,
        "track_budget": budget,
        "track_reference_sha": reference_sha,
        "diff": views.diff_html(record.diff),
        "added": added,
        "removed": removed,
        "ancestors": _links(session, detail.lineage[:LINEAGE_SHOWN]),
        "more_ancestors": max(0, len(detail.lineage) - LINEAGE_SHOWN),
        "children": _links(session, detail.children[:LINEAGE_SHOWN]),
        "more_children": max(0, len(detail.children) - LINEAGE_SHOWN),
        "loss": views.loss_series([(detail.id, "this run", record.loss_curve)]),
    })


ExperimentRef = Annotated[str, Query(pattern=r"^[0-9a-f]{8,64}$", description="record id or a unique prefix (≥ 8 hex digits)")]


@_pages.get("/compare", name="page_compare", response_class=HTMLResponse)
def page_compare(request: Request, a: ExperimentRef, b: ExperimentRef, session: SessionDep) -> HTMLResponse:
    """Two experiments side by side: figures, throughput, loss curves and the diff from ``a``'s
    ``train.py`` to ``b``'s (typically a parent and its child)."""
    left, right = store.get_experiment(session, a), store.get_experiment(session, b)
    if left.child_source is not None and right.child_source is not None:
        diff = unified_diff(left.child_source, right.child_source)
    else:
        diff = None  # a source the hub does not hold (never uploaded)
    added, removed = views.diff_stats(diff or "")
    return render(request, "compare.html", {
        "a": left,
        "b": right,
        "rows": views.compare_rows(left, right),
        "diff": views.diff_html(diff) if diff else None,
        "diff_missing": diff is None,
        "added": added,
        "removed": removed,
        "loss": views.loss_series([(left.id, "a · " + left.record.description, left.record.loss_curve),
                                   (right.id, "b · " + right.record.description, right.record.loss_curve)]),
    })


def _links(session: Session, ids: list[str]) -> list[views.ExperimentLink]:
    return [views.ExperimentLink.of(store.get_experiment_view(session, i)) for i in ids]


@_pages.get("/clients/{key_id}", name="page_client", response_class=HTMLResponse)
def page_client(
    request: Request,
    key_id: str,
    session: SessionDep,
    cursor: Annotated[str | None, Query(max_length=100)] = None,
) -> HTMLResponse:
    """A key: its hardware, calibration curves and experiments."""
    client = store.get_client(session, key_id)
    if client is None:
        raise NotFound(f"no client with key id {key_id}", code="unknown_client")
    recent = store.list_experiments(session, store.ExperimentFilter(client=key_id), cursor=cursor, limit=RECENT_PAGE_SIZE)
    return render(request, "client.html", {
        "client": client,
        "calibrations": views.latest_calibrations(store.calibrations_of(session, key_id)),
        "recent": recent,
        "cursor": cursor,
    })


router.include_router(_pages)
