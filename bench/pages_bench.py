"""Page latencies of the hub's web pages with many experiments (figures for docs/pages.md).

Builds a SQLite hub (migrated by Alembic), ingests ``--seed`` real signed experiments through the API,
then bulk-copies their rows to ``--experiments`` in total (new ids, new canonical hashes so every copy
is its own experiment, timestamps spread over the last 30 days; the copies skip ingest checks, which
this bench does not measure). Then times each page in-process (Starlette's TestClient: routing,
store queries, templates; no network) and prints the median and max of ``--repeat`` requests::

    .venv/bin/python bench/pages_bench.py --experiments 100000
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import insert, select

from autoresearch.hub import migrate
from autoresearch.hub.app import create_app
from autoresearch.hub.catalog import TrackCatalog
from autoresearch.hub.models import Experiment
from autoresearch.hub.settings import HubSettings
from autoresearch.protocol import KeyPair, utc_now

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.hub import factory as f  # noqa: E402  (the hub tests' record builders)

HARDWARE = (f.HARDWARE, "NVIDIA H100 80GB HBM3", "NVIDIA A100-SXM4-80GB")


def _seed(client: TestClient, n: int) -> None:
    """Ingest ``n`` signed experiments from three keys (one per hardware class)."""
    track = f.make_track()
    keys = [KeyPair.generate() for _ in HARDWARE]
    for i, (k, hw) in enumerate(zip(keys, HARDWARE, strict=True)):
        r = client.post("/api/v1/clients", content=f.envelope_bytes(f.registration(k, f"bench-{i}", hw), k))
        r.raise_for_status()
    t0 = utc_now() - timedelta(days=30)
    parent, parent_bpb = f.REFERENCE, 1.6
    for i in range(n):
        child = f.with_constant(parent, "WARMUP_STEPS", 11 + i)
        bpb = parent_bpb - 0.001 if i % 4 == 0 else parent_bpb + 0.002
        rec = f.experiment(track, parent, child, val_bpb=bpb, parent_val_bpb=parent_bpb, ecm=1.0 + i / n, gain=1.01,
                           hardware_class=HARDWARE[i % 3], description=f"WARMUP_STEPS → {11 + i}",
                           created_at=t0 + timedelta(minutes=i))
        r = client.post("/api/v1/experiments", content=f.envelope_bytes(rec, keys[i % 3]))
        r.raise_for_status()
        if rec.status == "keep":
            parent, parent_bpb = child, bpb


def _amplify(app_state: object, total: int) -> None:
    """Copy the stored experiment rows until there are ``total`` (bulk INSERT in chunks)."""
    sessions = app_state.sessions  # type: ignore[attr-defined]
    with sessions() as session:
        rows = [
            {c.name: getattr(r, c.name) for c in Experiment.__table__.columns if c.name != "seq"}
            for r in session.scalars(select(Experiment).order_by(Experiment.seq))
        ]
        start = rows[0]["created_at"]
        chunk: list[dict[str, object]] = []
        for i in range(total - len(rows)):
            src = rows[i % len(rows)]
            h = hashlib.sha256(f"copy-{i}".encode()).hexdigest()
            when = start + timedelta(seconds=26 * i)
            chunk.append({**src, "id": h, "parent_canonical_sha256": h, "child_canonical_sha256": h[::-1],
                          "near_duplicate_of": None, "created_at": when, "received_at": when})
            if len(chunk) == 5000:
                session.execute(insert(Experiment), chunk)
                chunk.clear()
        if chunk:
            session.execute(insert(Experiment), chunk)
        session.commit()


def _time(client: TestClient, path: str, repeat: int) -> tuple[float, float, int]:
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        r = client.get(path)
        samples.append((time.perf_counter() - start) * 1000)
        r.raise_for_status()
    return statistics.median(samples), max(samples), len(r.content)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiments", type=int, default=100_000, help="experiments in the database")
    parser.add_argument("--seed", type=int, default=300, help="experiments ingested through the API")
    parser.add_argument("--repeat", type=int, default=5, help="requests per page")
    parser.add_argument("--db", type=Path, help="keep the SQLite file here; reuse it when it exists")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db = args.db or Path(tmp) / "hub.db"
        fresh = not db.exists()
        url = f"sqlite:///{db}"
        migrate.upgrade(url)
        track = f.make_track()
        app = create_app(HubSettings(db_url=url, json_logs=False), catalog=TrackCatalog.of([(track, lambda: f.REFERENCE)]))
        with TestClient(app) as client:
            if fresh:
                t = time.perf_counter()
                _seed(client, args.seed)
                _amplify(app.state.hub, args.experiments)
                print(f"loaded {args.experiments} experiments in {time.perf_counter() - t:.0f} s")
            track_id = track.id
            key_ids = [c["key_id"] for c in client.get("/api/v1/experiments", params={"limit": 3}).json()["items"]]
            exp_id = client.get("/api/v1/experiments", params={"limit": 1}).json()["items"][0]["id"]
            cursor = client.get("/api/v1/experiments", params={"track": track_id, "limit": 25}).json()["next_cursor"]
            pages = {
                "/": "/",
                "/tracks/{track}": f"/tracks/{track_id}",
                "/tracks/{track}?cursor=": f"/tracks/{track_id}?cursor={cursor}",
                "/tracks/{track}/directions": f"/tracks/{track_id}/directions",
                "/experiments/{id}": f"/experiments/{exp_id}",
                "/clients/{key_id}": f"/clients/{key_ids[0]}",
            }
            print(f"{'page':32} {'median ms':>10} {'max ms':>8} {'KiB':>6}")
            for name, path in pages.items():
                median, worst, size = _time(client, path, args.repeat)
                print(f"{name:32} {median:10.0f} {worst:8.0f} {size / 1024:6.0f}")


if __name__ == "__main__":
    main()
