"""``/healthz`` (the database answers), ``/metrics`` (Prometheus text exposition) and ``/api/v1/``
(what the API serves: a person or a script that opens the API's root finds its way, not a 404)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel

from .. import store
from ..deps import SessionDep, StateDep

router = APIRouter(tags=["ops"])


class Health(BaseModel):
    status: str
    database: str


class ApiIndex(BaseModel):
    """``GET /api/v1/``: the hub's name, API version, where the OpenAPI document is, and each route
    as ``"METHOD /path"`` (sorted; read from the app's OpenAPI document, so it lists what is served)."""

    name: str
    version: str
    openapi: str
    routes: list[str]


@router.get("/api/v1/", response_model=ApiIndex)
@router.get("/api/v1", response_model=ApiIndex, include_in_schema=False)
def api_index(request: Request) -> ApiIndex:
    """What the API serves (no database access)."""
    app = request.app
    paths: dict[str, dict[str, object]] = app.openapi()["paths"]  # built once, then cached by FastAPI
    routes = sorted(
        f"{method.upper()} {path}"
        for path, operations in paths.items()
        if path.startswith("/api/v1/") and path != "/api/v1/"
        for method in operations
    )
    return ApiIndex(name=app.title, version=app.version, openapi=app.openapi_url or "", routes=routes)


@router.get("/healthz", response_model=Health)
def healthz(session: SessionDep, state: StateDep) -> Health:
    """200 when the database answers a query."""
    store.ping(session)
    return Health(status="ok", database=state.engine.dialect.name)


@router.get("/metrics", response_class=Response)
def metrics(state: StateDep) -> Response:
    return Response(state.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
