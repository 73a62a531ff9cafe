"""``/healthz`` (the database answers) and ``/metrics`` (Prometheus text exposition)."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel

from .. import store
from ..deps import SessionDep, StateDep

router = APIRouter(tags=["ops"])


class Health(BaseModel):
    status: str
    database: str


@router.get("/healthz", response_model=Health)
def healthz(session: SessionDep, state: StateDep) -> Health:
    """200 when the database answers a query."""
    store.ping(session)
    return Health(status="ok", database=state.engine.dialect.name)


@router.get("/metrics", response_class=Response)
def metrics(state: StateDep) -> Response:
    return Response(state.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
