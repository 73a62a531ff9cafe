"""Hub test fixtures: a migrated database per test (SQLite file, or a fresh schema on PostgreSQL when
``AUTORESEARCH_TEST_PG_URL`` is set), the app on that database, and real keys."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from autoresearch.hub.app import create_app
from autoresearch.hub.catalog import TrackCatalog
from autoresearch.hub.db import normalise_url
from autoresearch.hub.migrate import upgrade
from autoresearch.hub.models import Base
from autoresearch.hub.settings import HubSettings
from autoresearch.protocol import KeyPair, TrackSpec, record_id
from autoresearch.protocol.records import WireModel

from . import factory

PG_URL = os.environ.get("AUTORESEARCH_TEST_PG_URL")


def pg_schema_url(base: str, schema: str) -> str:
    """``base`` with every connection's search_path set to ``schema``."""
    url = sa.make_url(base)
    return url.update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file migrated once per session; each test gets a copy."""
    path = tmp_path_factory.mktemp("hub-template") / "hub.db"
    upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def pg_schema() -> Iterator[str]:
    """A schema of its own on the test PostgreSQL, migrated once per session, dropped at the end."""
    if not PG_URL:
        pytest.skip("AUTORESEARCH_TEST_PG_URL is not set (see scripts/test)")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(normalise_url(PG_URL))
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    try:
        url = pg_schema_url(PG_URL, schema)
        upgrade(url)
        yield url
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, migrated, empty database: a copy of the SQLite template, or the session's PostgreSQL
    schema with every table truncated."""
    if request.param == "sqlite":
        path = tmp_path / "hub.db"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        return f"sqlite:///{path}"
    url: str = request.getfixturevalue("pg_schema")
    engine = sa.create_engine(normalise_url(url))
    try:
        with engine.begin() as conn:
            names = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
            conn.execute(sa.text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
    finally:
        engine.dispose()
    return url


@dataclass
class Hub:
    """A hub app on a test database, with helpers to post signed records."""

    client: TestClient
    track: TrackSpec
    db_url: str
    settings: HubSettings
    keys: dict[str, KeyPair] = field(default_factory=dict)

    def key(self, name: str) -> KeyPair:
        """The key pair called ``name`` (made on first use, not registered)."""
        if name not in self.keys:
            self.keys[name] = KeyPair.generate()
        return self.keys[name]

    def register(self, name: str, headers: dict[str, str] | None = None) -> httpx.Response:
        keys = self.key(name)
        return self.client.post("/api/v1/clients", content=factory.envelope_bytes(factory.registration(keys, name), keys), headers=headers)

    def post(self, path: str, record: WireModel, signer: str) -> httpx.Response:
        return self.client.post(f"/api/v1/{path}", content=factory.envelope_bytes(record, self.key(signer)))

    calibrations: dict[str, str] = field(default_factory=dict)  # who → calibration id (tests)

    def calibrate(self, name: str, *, sigma: float = 0.01, hardware_class: str = factory.HARDWARE) -> str:
        """Post a calibration signed by ``name`` (its own machine: points differ per key); its id."""
        machine = sorted(self.keys).index(name) + 1 if name in self.keys else 0
        cal = factory.calibration(self.track, hardware_class=hardware_class, sigma=sigma, machine=machine)
        response = self.post("calibrations", cal, name)
        assert response.status_code in (200, 201), response.text
        rid: str = record_id(cal)
        return rid

    def counts(self) -> dict[str, int]:
        """Row count of every table (to show a rejected request stored nothing)."""
        engine = sa.create_engine(normalise_url(self.db_url))
        try:
            with engine.connect() as conn:
                return {t.name: conn.scalar(sa.select(sa.func.count()).select_from(t)) or 0 for t in Base.metadata.sorted_tables}
        finally:
            engine.dispose()


def make_hub(db_url: str, **settings: object) -> Iterator[Hub]:
    track = factory.make_track()
    catalog = TrackCatalog.of([(track, lambda: factory.REFERENCE)])
    hub_settings = HubSettings(db_url=db_url, **settings)  # type: ignore[arg-type]
    app = create_app(hub_settings, catalog=catalog, pages=False)
    with TestClient(app) as client:
        yield Hub(client=client, track=track, db_url=db_url, settings=hub_settings)
    app.state.hub.engine.dispose()


@pytest.fixture
def hub(db_url: str) -> Iterator[Hub]:
    """A public hub on a fresh database."""
    yield from make_hub(db_url)
