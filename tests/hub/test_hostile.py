"""Hostile inputs on every route, on SQLite and PostgreSQL: each gets its documented 4xx and reason,
none a 5xx, and none changes a row.

Two sources of inputs: the corpus (``hostile_corpus.py``: a table of attacks, each with its expected
status and code) and property-based generation (hypothesis: arbitrary bytes, arbitrary JSON,
arbitrary floats in every numeric field, arbitrary text in every text field and query parameter).
The schemathesis run over the OpenAPI schema is ``test_schemathesis.py``. docs/hub.md, "Hostile
inputs", reports the counts.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from autoresearch.hub.db import normalise_url
from autoresearch.hub.limits import track_bounds
from autoresearch.hub.models import Base

from . import factory
from .conftest import Hub
from .hostile_corpus import (
    CLAIM,
    CORPUS,
    EXPERIMENT,
    MANY_CONSTANTS,
    Case,
    Ctx,
    Req,
    claim_dict,
    experiment_dict,
    payload,
    set_path,
)

SUBMIT_ROUTES = ("/api/v1/experiments", "/api/v1/calibrations", "/api/v1/claims", "/api/v1/clients")
GENERATED = settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)


class Counter:
    """Row counts of every table, on one engine kept for the whole test (cheap to ask often)."""

    def __init__(self, db_url: str) -> None:
        self.engine = sa.create_engine(normalise_url(db_url))

    def __call__(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            return {t.name: conn.scalar(sa.select(sa.func.count()).select_from(t)) or 0 for t in Base.metadata.sorted_tables}

    def close(self) -> None:
        self.engine.dispose()


@pytest.fixture
def armed(hub: Hub) -> Iterator[tuple[Hub, Ctx, Counter]]:
    """A hub with alice registered and the corpus's parent source stored."""
    assert hub.register("alice").status_code == 201
    put = hub.client.put(f"/api/v1/sources/{factory.sha256_hex(MANY_CONSTANTS)}", content=MANY_CONSTANTS.encode())
    assert put.status_code == 201, put.text
    counter = Counter(hub.db_url)
    yield hub, Ctx(track=hub.track, alice=hub.key("alice")), counter
    counter.close()


def send(hub: Hub, req: Req) -> httpx.Response:
    return hub.client.request(req.method, req.path, params=req.params, content=req.content, headers=req.headers)


def sample(cases: list[Case]) -> list[Case]:
    """One case per (family, expected code): the fast run's share of the corpus."""
    seen: set[tuple[str, str]] = set()
    out = []
    for c in cases:
        key = (c.name.split("_", 1)[0], c.code)
        if key not in seen:
            seen.add(key)
            out.append(c)
    return out


def test_corpus_sample(armed: tuple[Hub, Ctx, Counter]) -> None:
    """One case of each family and reason (fast); the whole corpus is test_corpus (slow)."""
    replay(armed, sample(CORPUS))


@pytest.mark.slow
def test_corpus(armed: tuple[Hub, Ctx, Counter]) -> None:
    """Every case of the corpus (500+ requests; about 20 s per engine on a loaded 2-core machine)."""
    assert len(CORPUS) >= 300
    assert len({c.name for c in CORPUS}) == len(CORPUS)
    replay(armed, CORPUS)


def replay(armed: tuple[Hub, Ctx, Counter], cases: list[Case]) -> None:
    """Send each case: its status and code, the one error shape, no 5xx, and no row changed."""
    hub, ctx, counts = armed
    before = counts()
    failures: list[str] = []
    for c in cases:
        response = send(hub, c.build(ctx))
        try:
            body = response.json()
            got = (response.status_code, body["error"]["code"], body["error"]["status"])
        except (ValueError, KeyError, TypeError):
            got = (response.status_code, response.text[:80], None)
        if got != (c.status, c.code, c.status) or not body["error"]["message"]:
            failures.append(f"{c.name} ({c.attack}): expected {c.status} {c.code}, got {got}")
        if response.status_code >= 500:
            failures.append(f"{c.name}: server error {response.text[:200]}")
    assert failures == [], "\n".join(failures)
    assert counts() == before, "a refused request changed a row"
    for route in ("leaderboard", "directions", "suggestions", "best", ""):
        assert hub.client.get(f"/api/v1/tracks/{hub.track.id}/{route}".rstrip("/")).status_code == 200


# --------------------------------------------------------------------------------------------------
# Generated inputs (hypothesis)


def _refused(response: httpx.Response) -> str:
    assert 400 <= response.status_code < 500, f"{response.status_code}: {response.text[:300]}"
    body = response.json()
    assert body["error"]["status"] == response.status_code
    code: str = body["error"]["code"]
    return code


def test_arbitrary_bytes_on_every_submission_route(armed: tuple[Hub, Ctx, Counter]) -> None:
    """Attack: any bytes as the body of every POST route. Outcome: a 4xx, nothing stored."""
    hub, _, counts = armed
    before = counts()

    @GENERATED
    @given(route=st.sampled_from(SUBMIT_ROUTES), body=st.binary(max_size=2000))
    def attempt(route: str, body: bytes) -> None:
        _refused(hub.client.post(route, content=body))

    attempt()
    assert counts() == before


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=40,
)


def test_arbitrary_json_on_every_submission_route(armed: tuple[Hub, Ctx, Counter]) -> None:
    """Attack: any JSON value (huge integers, NaN, deep nesting, envelope-like dicts). Outcome: a 4xx
    (malformed, too deep, number too large or not an envelope), nothing stored."""
    hub, _, counts = armed
    before = counts()
    envelope_like = st.fixed_dictionaries(
        {"payloadType": json_values | st.just("application/vnd.autoresearch.experiment.v1+json"),
         "payload": json_values | st.binary(max_size=200).map(lambda b: __import__("base64").b64encode(b).decode()),
         "signatures": json_values},
    )

    @GENERATED
    @given(route=st.sampled_from(SUBMIT_ROUTES), value=json_values | envelope_like)
    def attempt(route: str, value: Any) -> None:
        code = _refused(hub.client.post(route, content=json.dumps(value).encode()))
        assert code in {"malformed_json", "envelope_malformed", "json_too_deep", "number_too_large", "unknown_schema",
                        "bad_base64", "unregistered_key", "bad_signature", "wrong_schema", "schema_invalid"}

    attempt()
    assert counts() == before


NUMERIC_FIELDS = [
    "metrics.val_bpb", "metrics.training_seconds", "metrics.total_seconds", "metrics.startup_seconds",
    "metrics.eval_seconds", "metrics.peak_vram_mib", "metrics.mfu_percent", "metrics.tokens_per_second",
    "parent_val_bpb", "normalised.delta_val_bpb", "normalised.sigma", "normalised.z", "normalised.ecm",
    "normalised.ecm_parent", "normalised.gain",
]
COUNT_FIELDS = ["metrics.total_tokens", "metrics.num_steps", "metrics.num_params", "metrics.depth"]


def test_any_number_in_any_field_is_stored_or_refused_and_reads_survive(armed: tuple[Hub, Ctx, Counter]) -> None:
    """Attack: any finite float (subnormals, ±1.7e308) or any integer in ±2**53 in any numeric field
    of a signed experiment. Outcome: 201, or 422 ``out_of_range`` with no row changed; and whatever
    was accepted, the leaderboard, directions, suggestions, best and track answer 200."""
    hub, ctx, counts = armed
    seen = {"accepted": 0, "refused": 0}
    numbers = st.floats(allow_nan=False, allow_infinity=False)
    counts_ = st.integers(min_value=-(2**53 - 1), max_value=2**53 - 1)

    @GENERATED
    @given(data=st.data())
    def attempt(data: st.DataObject) -> None:
        field = data.draw(st.sampled_from(NUMERIC_FIELDS + COUNT_FIELDS))
        value = data.draw(counts_ if field in COUNT_FIELDS else numbers)
        seed = data.draw(st.integers(min_value=0, max_value=2**40))  # a fresh record each time
        record = set_path(experiment_dict(ctx, seed=seed), field, value)
        before = counts()
        response = hub.client.post("/api/v1/experiments", content=ctx.signed(payload(record)))
        if response.status_code in (200, 201):
            seen["accepted"] += 1
        else:
            assert _refused(response) == "out_of_range", response.text
            assert counts() == before
            seen["refused"] += 1

    attempt()
    assert seen["accepted"] and seen["refused"]
    for route in ("leaderboard", "directions", "suggestions", "best", "", "progress?hardware_class=" + factory.HARDWARE):
        response = hub.client.get(f"/api/v1/tracks/{hub.track.id}/{route}".rstrip("/"))
        assert response.status_code == 200, (route, response.text[:300])
    assert hub.client.get("/api/v1/experiments", params={"limit": 500}).status_code == 200


def test_any_text_in_any_field_is_stored_or_refused(armed: tuple[Hub, Ctx, Counter]) -> None:
    """Attack: any Unicode text in the description, hardware class or versions of an experiment and
    a claim. Outcome: stored, or 422 ``bad_text`` (control or bidi characters) with nothing stored;
    what is stored holds no control character and every listing reads."""
    hub, ctx, counts = armed
    fields = [(EXPERIMENT, "description"), (EXPERIMENT, "hardware_class"), (EXPERIMENT, "software.python"),
              (CLAIM, "description")]

    @GENERATED
    @given(where=st.sampled_from(fields), text=st.text(max_size=60), seed=st.integers(min_value=0, max_value=2**40))
    def attempt(where: tuple[str, str], text: str, seed: int) -> None:
        ptype, path = where
        if ptype == EXPERIMENT:
            record = set_path(experiment_dict(ctx, seed=seed), path, text)
            route = "/api/v1/experiments"
        else:
            record = set_path(claim_dict(ctx), path, text)
            route = "/api/v1/claims"
        before = counts()
        response = hub.client.post(route, content=ctx.signed(payload(record), ptype))
        if response.status_code >= 400:
            assert _refused(response) in {"bad_text", "schema_invalid"}, response.text
            assert counts() == before
        else:
            assert not any(ord(ch) < 32 or 0x7F <= ord(ch) < 0xA0 for ch in text)

    attempt()
    listing = hub.client.get("/api/v1/experiments", params={"limit": 500})
    assert listing.status_code == 200


GET_ROUTES = [
    ("/api/v1/experiments", ["track", "hardware_class", "outcome", "client", "since", "cursor", "limit"]),
    ("/api/v1/tracks/{track}/best", ["hardware_class"]),
    ("/api/v1/tracks/{track}/suggestions", ["hardware_class", "client"]),
    ("/api/v1/tracks/{track}/progress", ["hardware_class", "limit"]),
    ("/api/v1/activity", ["hours"]),
]


def test_any_query_parameter_never_breaks_a_read(armed: tuple[Hub, Ctx, Counter]) -> None:
    """Attack: any text in any query parameter and in the track path segment (NUL for PostgreSQL,
    huge numbers, odd Unicode). Outcome: 200 or a 4xx with the one error shape, never a 5xx."""
    hub, ctx, _ = armed

    @GENERATED
    @given(data=st.data())
    def attempt(data: st.DataObject) -> None:
        path, params = data.draw(st.sampled_from(GET_ROUTES))
        name = data.draw(st.sampled_from(params))
        value = data.draw(st.text(max_size=40) | st.integers().map(str) | st.floats().map(str))
        track = data.draw(st.just(ctx.track.id) | st.text(min_size=1, max_size=20).filter(lambda t: "/" not in t and t not in (".", "..")))
        response = hub.client.get(path.format(track=quote(track, safe="")), params={name: value})
        if response.status_code != 200:
            _refused(response)

    attempt()


def test_values_at_their_bounds_are_accepted_and_read(armed: tuple[Hub, Ctx, Counter]) -> None:
    """What ingest accepts, reads serve: every numeric field at the edge of its valid range (the
    protocol's and the track's), many records at the maxima at once (sums of squares of the largest
    gains included), and every aggregate answers 200 with finite figures."""
    hub, ctx, _ = armed
    from autoresearch import protocol as p

    b = track_bounds(ctx.track)
    edges: dict[str, list[Any]] = {
        "metrics.val_bpb": [p.MIN_VAL_BPB, b.max_val_bpb], "parent_val_bpb": [p.MIN_VAL_BPB, b.max_val_bpb],
        "metrics.training_seconds": [0.0, b.max_training_seconds], "metrics.total_seconds": [0.0, b.max_run_seconds],
        "metrics.startup_seconds": [0.0, b.max_run_seconds], "metrics.eval_seconds": [0.0, b.max_run_seconds],
        "metrics.peak_vram_mib": [0.0, p.MAX_VRAM_MIB], "metrics.mfu_percent": [0.0, p.MAX_MFU_PERCENT],
        "metrics.tokens_per_second": [0.0, p.MAX_TOKENS_PER_SECOND], "metrics.total_tokens": [0, b.max_tokens],
        "metrics.num_steps": [0, b.max_steps], "metrics.num_params": [0, p.MAX_PARAMS], "metrics.depth": [0, p.MAX_DEPTH],
        "normalised.delta_val_bpb": [-p.MAX_VAL_BPB, p.MAX_VAL_BPB], "normalised.sigma": [0.0, p.MAX_VAL_BPB],
        "normalised.z": [-p.MAX_ABS_Z, p.MAX_ABS_Z], "normalised.ecm": [p.MIN_ECM, p.MAX_ECM],
        "normalised.ecm_parent": [p.MIN_ECM, p.MAX_ECM], "normalised.gain": [p.MIN_GAIN, p.MAX_GAIN],
    }
    cases = [(field, value) for field, values in edges.items() for value in values]
    # the largest gain, z and val_bpb again, so the aggregates add extreme values up
    cases += [("normalised.gain", p.MAX_GAIN), ("normalised.z", p.MAX_ABS_Z), ("metrics.val_bpb", b.max_val_bpb)]
    for seed, (field, value) in enumerate(cases):
        record = set_path(experiment_dict(ctx, seed=seed), field, value)
        response = hub.client.post("/api/v1/experiments", content=ctx.signed(payload(record)))
        assert response.status_code == 201, (field, value, response.text)
    for route in ("leaderboard", "directions", "suggestions", "best", ""):
        response = hub.client.get(f"/api/v1/tracks/{hub.track.id}/{route}".rstrip("/"))
        assert response.status_code == 200, (route, response.text[:300])
        numbers = _numbers(response.json())
        assert all(math.isfinite(x) for x in numbers)
    listing = hub.client.get("/api/v1/experiments", params={"limit": 500})
    assert listing.status_code == 200 and len(listing.json()["items"]) == len(cases)
    pages_answer(hub, [item["id"] for item in listing.json()["items"][:5]])


def pages_answer(hub: Hub, ids: list[str]) -> None:
    """The web pages of the track, its directions, the home page and the given experiments answer 200
    (an app with pages on the same database)."""
    from fastapi.testclient import TestClient

    from autoresearch.hub.app import create_app
    from autoresearch.hub.catalog import TrackCatalog

    app = create_app(hub.settings, catalog=TrackCatalog.of([(hub.track, lambda: factory.REFERENCE)]))
    try:
        with TestClient(app) as client:
            for path in ["/", f"/tracks/{hub.track.id}", f"/tracks/{hub.track.id}/directions",
                         *(f"/experiments/{i}" for i in ids)]:
                response = client.get(path)
                assert response.status_code == 200, (path, response.text[:300])
    finally:
        app.state.hub.engine.dispose()


def _numbers(value: Any) -> Iterator[float]:
    if isinstance(value, bool):
        return
    if isinstance(value, (int, float)):
        yield float(value)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _numbers(v)
    elif isinstance(value, list):
        for v in value:
            yield from _numbers(v)


def test_rows_stored_before_the_ranges_never_break_a_read(armed: tuple[Hub, Ctx, Counter]) -> None:
    """Attack (on a hub that ran an older version): a stored record with a subnormal val_bpb and a
    gain near the float maximum, and direction sums that overflowed to infinity. Outcome: every read
    and aggregate answers 200 with finite figures; the broken record is left out of listings."""
    hub, ctx, counts = armed
    good = hub.post("experiments", factory.experiment(hub.track, factory.REFERENCE, factory.with_constant(factory.REFERENCE, "EMBED_LR", 0.7)), "alice")
    bad = hub.post("experiments", factory.experiment(hub.track, factory.REFERENCE, factory.with_constant(factory.REFERENCE, "MATRIX_LR", 0.05)), "alice")
    assert good.status_code == bad.status_code == 201
    poisoned = experiment_dict(ctx)
    poisoned["metrics"]["val_bpb"] = 5e-324
    poisoned["normalised"]["gain"] = 1.7e308
    with counts.engine.begin() as conn:
        conn.execute(sa.text("UPDATE experiments SET val_bpb = :v, gain = :g, ecm = :g, record_json = :r WHERE id = :id"),
                     {"v": 5e-324, "g": 1.7e308, "r": json.dumps(poisoned), "id": bad.json()["id"]})
        conn.execute(sa.text("UPDATE direction_aggregates SET gain_sum = :s, gain_sumsq = :inf, z_sum = :s"),
                     {"s": 1.7e308, "inf": float("inf")})
        conn.execute(sa.text("UPDATE best SET val_bpb = :v, ecm = :g"), {"v": 5e-324, "g": float("inf")})
        conn.execute(sa.text("UPDATE replication_groups SET bpb_sum = :inf, bpb_sumsq = :inf"), {"inf": float("inf")})
    for route in ("leaderboard", "directions", "suggestions", "best", "", "progress?hardware_class=" + factory.HARDWARE):
        response = hub.client.get(f"/api/v1/tracks/{hub.track.id}/{route}".rstrip("/"))
        assert response.status_code == 200, (route, response.text[:300])
        assert all(math.isfinite(x) for x in _numbers(response.json()))
    listing = hub.client.get("/api/v1/experiments")
    assert listing.status_code == 200
    assert [item["id"] for item in listing.json()["items"]] == [good.json()["id"]]
    gone = hub.client.get(f"/api/v1/experiments/{bad.json()['id']}")
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "unknown_experiment"
    assert hub.client.get(f"/api/v1/experiments/{good.json()['id']}").status_code == 200
    pages_answer(hub, [good.json()["id"]])
