"""``create_app(settings)``: the hub's FastAPI application. Nothing is built at import time.

The app holds one :class:`~autoresearch.hub.deps.HubState` (engine, session factory, track catalog,
metrics) on ``app.state.hub``. Every error leaves as the one JSON shape of :mod:`.errors`; request
counts and latencies go to the app's Prometheus registry and one structured log line per request.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from . import limits
from .catalog import TrackCatalog
from .db import make_engine, session_factory
from .deps import HubState
from .errors import STATUS_BY_CODE, HubError, TooManyRequests, error_body
from .metrics import HubMetrics
from .settings import HubSettings

_logger = logging.getLogger(__name__)

API_VERSION = "v1"
_HTTP_CODES = {400: "bad_request", 401: "token_required", 403: "admin_required", 404: "not_found",
               405: "method_not_allowed", 413: "body_too_large", 415: "unsupported_media_type"}


def create_app(settings: HubSettings | None = None, *, catalog: TrackCatalog | None = None, pages: bool = True) -> FastAPI:
    """Build the hub app for ``settings`` (default: from the environment).

    The database schema must already be migrated (``autoresearch hub migrate``, or
    :func:`autoresearch.hub.migrate.upgrade`; ``hub serve`` does it on start). ``catalog`` defaults
    to the built-in tracks; ``pages=False`` leaves out the HTML pages (API only).
    """
    settings = settings or HubSettings()
    engine = make_engine(settings.db_url)
    state = HubState(
        settings=settings,
        engine=engine,
        sessions=session_factory(engine),
        catalog=catalog or TrackCatalog.builtin(),
        metrics=HubMetrics(),
    )
    app = FastAPI(
        title="autoresearch hub",
        version=API_VERSION,
        description="Signed, calibrated, deduplicated results of federated autonomous ML research.",
    )
    app.state.hub = state
    _install_error_handlers(app, state)
    _install_request_log(app, state)
    from .routes import admin, calibrations, claims, clients, experiments, ops, sources, tracks

    for module in (clients, experiments, calibrations, claims, tracks, sources, admin, ops):
        app.include_router(module.router)
    if pages:
        _include_pages(app)
    return app


def _include_pages(app: FastAPI) -> None:
    """Mount the web pages when their module is present (they are optional for API-only hubs)."""
    try:
        from .routes import pages
    except ImportError as exc:  # pages need jinja2; an API-only install still serves JSON
        _logger.warning("web pages disabled: %s", exc)
        return
    app.include_router(pages.router)


def _respond(state: HubState, request: Request, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """The one JSON error shape, counted as a verification failure when a submission is refused."""
    status = STATUS_BY_CODE[code]
    if request.method in ("POST", "PUT") and 400 <= status < 500:
        state.metrics.verification_failures.labels(code).inc()
    return JSONResponse(error_body(code, message).model_dump(), status_code=status, headers=headers)


def _hub_error_response(state: HubState, request: Request, exc: HubError) -> JSONResponse:
    headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, TooManyRequests) else None
    return _respond(state, request, exc.code, exc.message, headers)


def _install_error_handlers(app: FastAPI, state: HubState) -> None:
    def respond(request: Request, code: str, message: str) -> JSONResponse:
        return _respond(state, request, code, message)

    @app.exception_handler(HubError)
    async def _hub_error(request: Request, exc: HubError) -> JSONResponse:
        return _hub_error_response(state, request, exc)

    @app.exception_handler(MemoryError)
    async def _memory(request: Request, exc: MemoryError) -> JSONResponse:
        # what a request asks for decides this (a huge or pathological body): refuse it, keep serving
        _logger.warning("request needed more memory than available", extra={"path": request.url.path})
        return respond(request, "body_too_large", "the request needs more memory than this hub gives one request")

    @app.exception_handler(RecursionError)
    async def _recursion(request: Request, exc: RecursionError) -> JSONResponse:
        _logger.warning("request nested too deeply", extra={"path": request.url.path})
        return respond(request, "json_too_deep", "the request nests too deeply to process")

    @app.exception_handler(DataError)
    async def _data_error(request: Request, exc: DataError) -> JSONResponse:
        # a value the database cannot hold (the edge checks should have refused it first)
        _logger.warning("database refused a value: %s", exc.orig)
        return respond(request, "bad_parameter", "a value of the request cannot be stored or searched for")

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return respond(request, "invalid_request", f"{where}: {first.get('msg', 'invalid')}")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "bad_request")
        return respond(request, code, str(exc.detail))

    @app.exception_handler(OperationalError)
    async def _db_down(request: Request, exc: OperationalError) -> JSONResponse:
        _logger.error("database error: %s", exc.orig)
        return respond(request, "database_unavailable", "the database is unavailable; retry later")


def _install_request_log(app: FastAPI, state: HubState) -> None:
    @app.middleware("http")
    async def _observe(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        start = time.perf_counter()
        try:
            limits.check_parameters(request)  # before any route: no NUL or control character reaches SQL
            response = await call_next(request)
        except HubError as exc:
            response = _hub_error_response(state, request, exc)
        except Exception:
            _logger.exception("unhandled error", extra={"method": request.method, "path": request.url.path})
            response = JSONResponse(error_body("internal_error", "internal error").model_dump(), status_code=500)
        elapsed = time.perf_counter() - start
        route = request.scope.get("route")
        name = getattr(route, "path", "unmatched")
        state.metrics.requests.labels(request.method, name, str(response.status_code)).inc()
        state.metrics.latency.labels(request.method, name).observe(elapsed)
        _logger.info(
            "request",
            extra={"method": request.method, "path": request.url.path, "status": response.status_code, "ms": round(elapsed * 1000, 2)},
        )
        return response
