"""SQL statements per request stay constant as the database grows (issue 16: few statements per
request), so an N+1 query cannot come back unnoticed.

Each view is asked on a hub seeded with 5 experiments and again on one seeded with 60 (several
clients, hardware classes and experiment groups, posted through the API like any client's); the
statement count, read with :class:`~autoresearch.hub.db.StatementCounter`, must be the same at both
sizes and at most the bound stated per view. Each hub also has a line of kept runs, each on the
previous one's ``train.py`` (1 long on the small hub, 12 on the large), so the experiment page's
lineage walk is deeper on the larger hub: one statement per ancestor would show (it did: 9 → 20).
The same holds for ingest: one more calibrated, kept
experiment (a new child) posted on each hub, and the same record posted again (the idempotent 200).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from autoresearch.hub.app import create_app
from autoresearch.hub.catalog import TrackCatalog
from autoresearch.hub.db import StatementCounter
from autoresearch.hub.settings import HubSettings
from autoresearch.protocol import KeyPair, TrackSpec, record_id

from . import factory

CLIENTS = ("ada", "bob", "cy")
CLASSES = (factory.HARDWARE, "cpu:other-cpu:4", "NVIDIA H100 80GB HBM3")


VIEWS: dict[str, tuple[str, int]] = {  # name → (path, most statements allowed)
    "leaderboard": ("/api/v1/tracks/tiny/leaderboard", 2),
    "best": (f"/api/v1/tracks/tiny/best?hardware_class={factory.HARDWARE}", 7),
    "best_ecm": ("/api/v1/tracks/tiny/best", 7),
    "suggestions": ("/api/v1/tracks/tiny/suggestions", 14),
    "experiments": ("/api/v1/experiments?limit=50", 4),
    "experiments_filtered": (f"/api/v1/experiments?track=tiny&hardware_class={factory.HARDWARE}&outcome=ok&limit=50", 4),
    "experiments_page": ("/api/v1/experiments?limit=3&cursor={cursor}", 4),
    "experiment": ("/api/v1/experiments/{deep}", 9),  # the end of a line of kept runs, deeper on the larger hub
    "home": ("/", 6),
    "track_page": ("/tracks/tiny", 17),
}
INGEST_BOUNDS = {"ingest": 21, "ingest_again": 2}  # POST /api/v1/experiments: a new record; the same one again


def _seed(client: TestClient, track: TrackSpec, n: int) -> tuple[dict[str, KeyPair], dict[tuple[str, str], str], str]:
    keys = {f"{name}-{n}": KeyPair.generate() for name in CLIENTS}
    for name, k in keys.items():
        r = client.post("/api/v1/clients", content=factory.envelope_bytes(factory.registration(k, name), k))
        assert r.status_code in (200, 201), r.text
    classes = CLASSES if n > 10 else CLASSES[:1]  # the larger hub has more boards, too
    cals = {}
    for m, (name, k) in enumerate(keys.items()):
        for hw in classes:
            cal = factory.calibration(track, hardware_class=hw, machine=m)
            r = client.post("/api/v1/calibrations", content=factory.envelope_bytes(cal, k))
            assert r.status_code in (200, 201), r.text
            cals[name, hw] = record_id(cal)
    for i in range(n):
        signer, hw = f"{CLIENTS[i % len(CLIENTS)]}-{n}", classes[i % len(classes)]
        child = factory.with_constant(factory.REFERENCE, "MATRIX_LR", round(0.05 + 0.001 * (i % max(2, n // 5)), 4))
        record = factory.experiment(
            track, factory.REFERENCE, child, val_bpb=round(2.17 - 0.002 * (i % 17), 4), parent_val_bpb=2.2, seed=i,
            hardware_class=hw, calibration_id=cals[signer, hw],
        )
        r = client.post("/api/v1/experiments", content=factory.envelope_bytes(record, keys[signer]))
        assert r.status_code in (200, 201), r.text
    parent, deep = factory.REFERENCE, ""  # a line of n // 5 kept runs, each on the previous one's train.py
    for step in range(max(1, n // 5)):
        signer = f"{CLIENTS[step % len(CLIENTS)]}-{n}"
        child = factory.with_constant(parent, "EMBED_LR", round(0.5 + 0.01 * step, 3))  # not 0.3: ingest posts that
        record = factory.experiment(track, parent, child, val_bpb=2.15 - 0.001 * step, parent_val_bpb=2.16 - 0.001 * step,
                                    seed=10_000 + step, status="keep", hardware_class=classes[0], calibration_id=cals[signer, classes[0]])
        r = client.post("/api/v1/experiments", content=factory.envelope_bytes(record, keys[signer]))
        assert r.status_code in (200, 201), r.text
        parent, deep = child, r.json()["id"]
    lineage = client.get(f"/api/v1/experiments/{deep}").json()["lineage"]
    assert len(lineage) == max(1, n // 5) - 1, lineage  # the walk really is as deep as the line
    return keys, cals, deep


def _counts(db_url: str, n: int) -> dict[str, int]:
    track = factory.make_track()
    catalog = TrackCatalog.of([(track, lambda: factory.REFERENCE)])
    app = create_app(HubSettings(db_url=db_url), catalog=catalog, pages=True)
    try:
        with TestClient(app) as client:
            keys, cals, deep = _seed(client, track, n)
            cursor = client.get("/api/v1/experiments?limit=3").json()["next_cursor"]
            assert cursor is not None
            out = {}
            with StatementCounter(app.state.hub.engine) as counter:
                for name, (path, _) in VIEWS.items():
                    counter.reset()
                    r = client.get(path.format(cursor=cursor, deep=deep))
                    assert r.status_code == 200, (name, r.text)
                    out[name] = counter.count
                signer = f"{CLIENTS[0]}-{n}"
                child = factory.with_constant(factory.REFERENCE, "EMBED_LR", 0.3)  # a child no seeded run has
                record = factory.experiment(track, factory.REFERENCE, child, val_bpb=2.15, parent_val_bpb=2.2, seed=999,
                                            hardware_class=factory.HARDWARE, calibration_id=cals[signer, factory.HARDWARE])
                body = factory.envelope_bytes(record, keys[signer])
                for name, status in (("ingest", 201), ("ingest_again", 200)):
                    counter.reset()
                    r = client.post("/api/v1/experiments", content=body)
                    assert r.status_code == status, (name, r.text)
                    out[name] = counter.count
            return out
    finally:
        app.state.hub.engine.dispose()


@pytest.fixture
def counts(db_url: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[dict[str, int], dict[str, int]]]:
    small = _counts(db_url, 5)
    if db_url.startswith("sqlite"):  # a fresh copy of the migrated template
        shutil.copyfile(request.getfixturevalue("sqlite_template"), tmp_path / "large.db")
        large_url = f"sqlite:///{tmp_path / 'large.db'}"
    else:
        large_url = db_url  # PostgreSQL: seed more on top (the counts must not grow either way)
    yield small, _counts(large_url, 60)


def test_statements_per_view_do_not_grow_with_the_database(counts: tuple[dict[str, int], dict[str, int]]) -> None:
    small, large = counts
    print({name: (small[name], large[name]) for name in small})
    assert large == small
    bounds = {name: most for name, (_, most) in VIEWS.items()} | INGEST_BOUNDS
    assert {name: n for name, n in large.items() if n > bounds[name]} == {}
