"""Migrations agree with the ORM; /healthz and /metrics."""

from __future__ import annotations

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from autoresearch.hub.db import make_engine
from autoresearch.hub.migrate import upgrade
from autoresearch.hub.models import Base

from . import factory
from .conftest import Hub


def test_migrations_match_the_orm(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True, "compare_server_default": True})
            assert compare_metadata(context, Base.metadata) == []
            assert context.get_current_revision() == "0005"
    finally:
        engine.dispose()


def test_migrating_twice_is_a_no_op(db_url: str) -> None:
    upgrade(db_url)
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            assert set(sa.inspect(conn).get_table_names()) >= {t.name for t in Base.metadata.sorted_tables}
    finally:
        engine.dispose()


def test_the_api_root_says_what_it_serves(hub: Hub) -> None:
    """``GET /api/v1/`` was a 404; now it lists the routes the app serves, read from the app."""
    for path in ("/api/v1/", "/api/v1"):
        index = hub.client.get(path, follow_redirects=False)
        assert index.status_code == 200, (path, index.text)
        body = index.json()
        assert body["openapi"] == "/openapi.json" and body["name"] == "autoresearch hub"
        assert {"POST /api/v1/experiments", "GET /api/v1/experiments/{experiment_id}", "GET /api/v1/tracks/{track}/best"} <= set(body["routes"])
        assert all(r.split(" ", 1)[1].startswith("/api/v1/") for r in body["routes"])


def test_healthz_and_metrics(hub: Hub) -> None:
    health = hub.client.get("/healthz")
    assert health.status_code == 200
    assert health.json()["status"] == "ok"
    hub.register("alice")
    hub.post("experiments", factory.experiment(hub.track, factory.REFERENCE, factory.with_constant(factory.REFERENCE, "MATRIX_LR", 0.05)), "alice")
    hub.post("experiments", factory.experiment(hub.track, factory.REFERENCE, factory.with_constant(factory.REFERENCE, "MATRIX_LR", 0.06), outcome="nan", val_bpb=None), "alice")
    text = hub.client.get("/metrics").text
    assert 'autoresearch_hub_records_total{kind="experiment",outcome="ok"} 1.0' in text
    assert 'autoresearch_hub_records_total{kind="experiment",outcome="nan"} 1.0' in text
    assert 'autoresearch_hub_records_total{kind="client",outcome="created"} 1.0' in text
    assert 'autoresearch_hub_requests_total{method="POST",route="/api/v1/experiments",status="201"} 2.0' in text
    assert 'autoresearch_hub_requests_total{method="GET",route="/healthz",status="200"} 1.0' in text
