"""A bounded property-based run of schemathesis against the hub's OpenAPI schema, on SQLite and
PostgreSQL: every operation, generated requests each; no 5xx, every 4xx in the one error shape with a
code of the pinned table, and no row changed (none of the generated submissions is a valid signed
record). The distinct inputs it sent are counted for docs/hub.md ("Hostile inputs")."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from autoresearch.hub.app import create_app
from autoresearch.hub.catalog import TrackCatalog
from autoresearch.hub.errors import STATUS_BY_CODE
from autoresearch.hub.settings import HubSettings
from autoresearch.protocol import ErrorBody

from . import factory
from .conftest import Hub
from .test_hostile import Counter

EXAMPLES = 8  # per operation: bounded, well under a minute per engine on 2 cores


@pytest.fixture
def api(db_url: str) -> Iterator[tuple[schemathesis.BaseSchema, Counter]]:
    track = factory.make_track()
    app = create_app(HubSettings(db_url=db_url), catalog=TrackCatalog.of([(track, lambda: factory.REFERENCE)]), pages=False)
    counter = Counter(db_url)
    yield schemathesis.openapi.from_asgi("/openapi.json", app), counter
    counter.close()
    app.state.hub.engine.dispose()


@pytest.mark.slow
def test_no_server_errors(api: tuple[schemathesis.BaseSchema, Counter]) -> None:
    schema, counts = api
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 14
    before = counts()
    inputs: set[str] = set()
    for operation in operations:

        @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(case=operation.as_strategy())
        def call(case: schemathesis.Case) -> None:
            response = case.call()
            where = f"{case.method} {case.formatted_path}"
            inputs.add(f"{where} {case.query!r} {case.headers!r} {case.body!r}")
            assert response.status_code < 500, f"{where}: {response.status_code} {response.text[:500]}"
            if response.status_code >= 400:
                error = ErrorBody.model_validate_json(response.content).error
                assert STATUS_BY_CODE.get(error.code) == response.status_code == error.status, f"{where}: {response.text[:300]}"

        call()
    assert counts() == before, "a generated request changed a row"
    print(f"schemathesis: {len(inputs)} distinct inputs over {len(operations)} operations")
    assert len(inputs) >= 5 * len(operations)


def test_schema_lists_every_submission_and_track_view(hub: Hub) -> None:
    """The schema every generated case above is drawn from lists every route of the pinned surface."""
    paths = hub.client.get("/openapi.json").json()["paths"]
    for path in ("/api/v1/clients", "/api/v1/claims", "/api/v1/experiments", "/api/v1/calibrations",
                 "/api/v1/tracks/{track}/leaderboard", "/api/v1/tracks/{track}/best",
                 "/api/v1/tracks/{track}/suggestions", "/api/v1/tracks/{track}/directions"):
        assert path in paths
