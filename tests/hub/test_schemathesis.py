"""A bounded property-based run of schemathesis against the hub's OpenAPI schema: no 5xx."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from autoresearch.hub.app import create_app
from autoresearch.hub.catalog import TrackCatalog
from autoresearch.hub.migrate import upgrade
from autoresearch.hub.settings import HubSettings

from . import factory


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory: pytest.TempPathFactory) -> Iterator[schemathesis.BaseSchema]:
    path: Path = tmp_path_factory.mktemp("schemathesis") / "hub.db"
    url = f"sqlite:///{path}"
    upgrade(url)
    track = factory.make_track()
    app = create_app(HubSettings(db_url=url), catalog=TrackCatalog.of([(track, lambda: factory.REFERENCE)]), pages=False)
    yield schemathesis.openapi.from_asgi("/openapi.json", app)
    app.state.hub.engine.dispose()


@pytest.mark.slow
def test_no_server_errors(api_schema: schemathesis.BaseSchema) -> None:
    """Every operation, a few generated requests each (bounded: well under a minute on 2 cores)."""
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 14
    for operation in operations:

        @settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(case=operation.as_strategy())
        def call(case: schemathesis.Case) -> None:
            response = case.call()
            assert response.status_code < 500, f"{case.method} {case.formatted_path}: {response.status_code} {response.text[:500]}"

        call()
