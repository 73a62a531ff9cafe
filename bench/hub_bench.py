"""Hub benchmark: ingest throughput and read latencies on SQLite and PostgreSQL.

Starts a real ``autoresearch hub serve`` (uvicorn on loopback) per engine, registers ``--clients``
keys, and has that many concurrent clients POST real signed experiment records of the built-in
``tiny`` track (``--records`` each): ingest records/s and p50/p99 latency. Then it seeds the
database up to each of ``--sizes`` experiments with the documented bulk loader
(:func:`autoresearch.hub.store.bulk_load`: real signed records, checked once per distinct child,
inserted in batches) and times the read views over HTTP (leaderboard, community best, suggestions,
listings plain, filtered and a cursor page, the home and track pages), with the SQL statements each
issues per request (counted in-process with :class:`autoresearch.hub.db.StatementCounter`).

    python bench/hub_bench.py                          # SQLite, and PostgreSQL if configured
    python bench/hub_bench.py --engines sqlite --sizes 10000 --json
    python bench/hub_bench.py --engines sqlite --records 0 --import-records 0 --sizes 2000   # reads and statements only

PostgreSQL needs ``--pg-url`` or ``AUTORESEARCH_TEST_PG_URL`` (a fresh schema is made and dropped).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import httpx
import sqlalchemy as sa

from autoresearch.hub import ingest, store
from autoresearch.hub.db import StatementCounter, make_engine, normalise_url, session_factory
from autoresearch.hub.ingest import CheckedExperiment
from autoresearch.protocol import (
    ExperimentRecord,
    KeyPair,
    Normalised,
    RunMetrics,
    SoftwareVersions,
    Verified,
    canonical_bytes,
    canonical_source_sha256,
    sha256_hex,
    sign,
    utc_now,
    verify,
)
from autoresearch.trainer import tracks

HARDWARE = ["NVIDIA H100 80GB HBM3", "NVIDIA A100-SXM4-40GB", "NVIDIA GeForce RTX 4090", "cpu:bench:2"]
CONSTANTS = ["MATRIX_LR", "EMBEDDING_LR", "UNEMBEDDING_LR", "SCALAR_LR", "WARMDOWN_RATIO"]
READS = 40
BENCH_QUOTAS = {  # the bench's clients all register from one loopback address: lift the quotas for it (the product's defaults stay)
    "AUTORESEARCH_HUB_QUOTA_REGISTRATIONS_PER_HOUR": "100000",
    "AUTORESEARCH_HUB_QUOTA_RECORDS_PER_MINUTE": "100000",
    "AUTORESEARCH_HUB_QUOTA_TOKEN_RECORDS_PER_MINUTE": "100000",
}


def child_of(reference: str, rng: random.Random) -> str:
    """The reference with one or two hyperparameters moved."""
    child = reference
    for name in rng.sample(CONSTANTS, rng.choice([1, 2])):
        child = re.sub(rf"^({name} = )[^\s#]+", lambda m: m.group(1) + repr(round(rng.uniform(0.01, 0.9), 4)), child, count=1, flags=re.M)
    return child


def record(track_id: str, parent: str, child: str, rng: random.Random, hw: str) -> ExperimentRecord:
    import difflib

    parent_bpb = 1.6
    val = round(rng.uniform(1.3, 1.8), 5)
    return ExperimentRecord(
        track=track_id,
        parent_sha256=sha256_hex(parent),
        child_sha256=sha256_hex(child),
        parent_canonical_sha256=canonical_source_sha256(parent),
        child_canonical_sha256=canonical_source_sha256(child),
        diff="".join(difflib.unified_diff(parent.splitlines(True), child.splitlines(True), "a/train.py", "b/train.py")),
        description="bench change",
        outcome="ok",
        status="keep" if val < parent_bpb else "discard",
        metrics=RunMetrics(val_bpb=val, training_seconds=5.0, num_steps=100),
        parent_val_bpb=parent_bpb,
        normalised=Normalised(delta_val_bpb=val - parent_bpb, sigma=0.01, z=(parent_bpb - val) / 0.5, ecm=round(parent_bpb / val, 5), gain=round(parent_bpb / val, 5)),
        hardware_class=hw,
        software=SoftwareVersions(python="3.11"),
        harness_version="bench",
        seed=rng.randrange(1 << 30),
        created_at=utc_now() - timedelta(seconds=rng.randrange(86_400)),
    )


def percentiles(latencies: list[float]) -> dict[str, float]:
    qs = statistics.quantiles(latencies, n=100, method="inclusive")
    return {"p50_ms": round(qs[49] * 1000, 2), "p99_ms": round(qs[98] * 1000, 2)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """``autoresearch hub serve`` in a subprocess."""

    def __init__(self, db_url: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        exe = Path(sys.executable).parent / "autoresearch"
        env = {**os.environ, "AUTORESEARCH_HUB_DB_URL": db_url, **BENCH_QUOTAS}
        self.log = Path(tempfile.gettempdir()) / f"hub_bench_serve_{self.port}.log"
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen([str(exe), "hub", "serve", "--port", str(self.port)], env=env,
                                         stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("hub serve did not start")
            time.sleep(0.3)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


def ingest_phase(url: str, track_id: str, reference: str, keys: list[KeyPair], per_client: int, server_log: Path) -> dict[str, float]:
    """Each key POSTs ``per_client`` signed experiments, all keys concurrently."""
    rng = random.Random(1)
    bodies = [
        [sign(record(track_id, reference, child_of(reference, rng), rng, HARDWARE[i % len(HARDWARE)]), k).to_json().encode()
         for _ in range(per_client)]
        for i, k in enumerate(keys)
    ]

    def run(i: int) -> list[float]:
        out = []
        with httpx.Client(timeout=120) as http:
            for body in bodies[i]:
                start = time.perf_counter()
                r = http.post(f"{url}/api/v1/experiments", content=body)
                out.append(time.perf_counter() - start)
                if r.status_code != 201:
                    raise SystemExit(f"ingest failed: {r.status_code} {r.text[:300]} (server log: {server_log})")
        return out

    start = time.perf_counter()
    with ThreadPoolExecutor(len(keys)) as pool:
        latencies = [x for chunk in pool.map(run, range(len(keys))) for x in chunk]
    elapsed = time.perf_counter() - start
    return {"records": len(latencies), "records_per_s": round(len(latencies) / elapsed, 1), **percentiles(latencies)}


def import_phase(db_url: str, track_id: str, reference: str, keys: list[KeyPair], n: int) -> dict[str, float]:
    """``n`` signed experiments (distinct children) through :mod:`autoresearch.hub.importer` — the
    code of ``autoresearch hub import`` — on the same database: every record verified and checked
    as the API does, stored in ``bulk_load`` batches."""
    from autoresearch.hub.catalog import TrackCatalog
    from autoresearch.hub.importer import import_envelopes
    from autoresearch.hub.settings import HubSettings

    rng = random.Random(7)
    bodies = [sign(record(track_id, reference, child_of(reference, rng), rng, HARDWARE[i % len(HARDWARE)]), keys[i % len(keys)]).to_json().encode()
              for i in range(n)]
    engine = make_engine(db_url)
    try:
        start = time.perf_counter()
        report = import_envelopes(session_factory(engine), HubSettings(db_url=db_url), TrackCatalog.builtin(), bodies)
        elapsed = time.perf_counter() - start
    finally:
        engine.dispose()
    if report.stored["experiment"] != n:
        raise SystemExit(f"import stored {dict(report.stored)}, refused {dict(report.refused)}")
    return {"records": n, "records_per_s": round(n / elapsed, 1)}


def seed(db_url: str, track_id: str, reference: str, keys: list[KeyPair], target: int, batch: int = 5000) -> float:
    """Bulk-load signed experiments until the track holds ``target``; returns seconds spent."""
    rng = random.Random(target)
    signer = keys[0]
    pool: list[CheckedExperiment] = []
    spec = tracks.get_track(track_id)
    for _ in range(64):  # distinct children, checked once each
        rec = record(track_id, reference, child_of(reference, rng), rng, HARDWARE[0])
        verified = verify(sign(rec, signer).to_json(), signer.public_key)
        pool.append(ingest.check_experiment(verified, spec, reference, now=utc_now(), max_diff_bytes=1 << 20,
                                            max_source_bytes=1 << 20, max_future_seconds=300))
    engine = make_engine(db_url)
    sessions = session_factory(engine)
    start = time.perf_counter()
    with sessions() as session:
        have = session.scalar(sa.text("SELECT count(*) FROM experiments")) or 0
    while have < target:
        n = min(batch, target - have)
        items, envelopes = [], []
        for _ in range(n):
            base = rng.choice(pool)
            key = rng.choice(keys)
            val = round(rng.uniform(1.3, 1.8), 5)
            rec = base.record.model_copy(update={
                "metrics": RunMetrics(val_bpb=val, training_seconds=5.0, num_steps=100),
                "status": "keep" if val < 1.6 else "discard",
                "hardware_class": rng.choice(HARDWARE),
                "seed": rng.randrange(1 << 40),
                "normalised": Normalised(z=(1.6 - val) / 0.5, ecm=round(1.6 / val, 5), gain=round(1.6 / val, 5)),
            })
            payload = canonical_bytes(rec)
            env = sign(rec, key)
            verified = Verified(record=rec, record_id=sha256_hex(payload), keyid=key.key_id, payload=payload, envelope=env)
            items.append(dataclasses.replace(base, verified=verified, record=rec))
            envelopes.append(env.to_json())
        with sessions() as session:
            store.bulk_load(session, items, envelopes)
            session.commit()
        have += n
    engine.dispose()
    return time.perf_counter() - start


def read_paths(get: Callable[[str], httpx.Response]) -> dict[str, str]:
    """The read views timed and counted: the API's leaderboard, best, suggestions, listings (plain,
    filtered, a cursor page) and the home and track pages. ``get`` fetches the first listing page, whose
    cursor the cursor page uses."""
    cursor = get("/api/v1/experiments?track=tiny&limit=50").json()["next_cursor"]
    return {
        "leaderboard": "/api/v1/tracks/tiny/leaderboard",
        "experiments": "/api/v1/experiments?track=tiny&limit=50",
        "experiments_filtered": f"/api/v1/experiments?track=tiny&hardware_class={HARDWARE[2]}&outcome=ok&limit=50",
        "experiments_page": f"/api/v1/experiments?track=tiny&limit=50&cursor={cursor}",
        "best": f"/api/v1/tracks/tiny/best?hardware_class={HARDWARE[0]}",
        "best_ecm": "/api/v1/tracks/tiny/best",
        "suggestions": "/api/v1/tracks/tiny/suggestions",
        "home": "/",
        "track_page": "/tracks/tiny",
    }


def read_phase(url: str) -> dict[str, dict[str, float]]:
    out = {}
    with httpx.Client(timeout=60) as http:
        for name, path in read_paths(lambda p: http.get(url + p)).items():
            latencies = []
            for _ in range(READS):
                start = time.perf_counter()
                r = http.get(url + path)
                latencies.append(time.perf_counter() - start)
                r.raise_for_status()
            out[name] = percentiles(latencies)
    return out


def statements_phase(db_url: str) -> dict[str, int]:
    """SQL statements per request of each read view, counted with
    :class:`~autoresearch.hub.db.StatementCounter` on an in-process app over the same database."""
    from fastapi.testclient import TestClient

    from autoresearch.hub.app import create_app
    from autoresearch.hub.settings import HubSettings

    app = create_app(HubSettings(db_url=db_url))
    out = {}
    try:
        with TestClient(app) as client:
            paths = read_paths(client.get)
            with StatementCounter(app.state.hub.engine) as counter:
                for name, path in paths.items():
                    counter.reset()
                    client.get(path).raise_for_status()
                    out[name] = counter.count
    finally:
        app.state.hub.engine.dispose()
    return out


def bench_engine(name: str, db_url: str, args: argparse.Namespace) -> dict[str, object]:
    spec = tracks.get_track("tiny")
    reference = tracks.reference_source(spec)
    server = Server(db_url)
    try:
        keys = [KeyPair.generate() for _ in range(max(args.clients))]
        run = uuid.uuid4().hex[:6]  # display names unique per run (a kept --sqlite-path holds earlier runs' keys)
        with httpx.Client(timeout=60) as http:
            for i, k in enumerate(keys):
                from autoresearch.protocol import ClientRegistration

                reg = ClientRegistration(public_key=k.public_key_hex, display_name=f"bench-{run}-{i}", created_at=utc_now())
                http.post(f"{server.url}/api/v1/clients", content=sign(reg, k).to_json()).raise_for_status()
        result: dict[str, object] = {"engine": name, "clients": args.clients}
        if args.records:
            ingest_runs = {}
            for n in args.clients:
                ingest_runs[str(n)] = ingest_phase(server.url, spec.id, reference, keys[:n], max(1, args.records // n), server.log)
                print(f"[{name}] ingest, {n} clients: {json.dumps(ingest_runs[str(n)])}", file=sys.stderr)
            result["ingest"] = ingest_runs
        if args.import_records:
            result["import"] = import_phase(db_url, spec.id, reference, keys, args.import_records)
            print(f"[{name}] import: {json.dumps(result['import'])}", file=sys.stderr)
        reads = {}
        for size in args.sizes:
            seconds = seed(db_url, spec.id, reference, keys, size)
            reads[str(size)] = {"seed_seconds": round(seconds, 1), **read_phase(server.url),
                                "statements": statements_phase(db_url)}
            print(f"[{name}] {size} experiments: {json.dumps(reads[str(size)])}", file=sys.stderr)
        result["reads"] = reads
        return result
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engines", default="sqlite,postgres")
    parser.add_argument("--clients", default="32,128", help="concurrent clients (one key each), one ingest run per figure")
    parser.add_argument("--records", type=int, default=640, help="experiments per ingest run, shared by its clients (0: skip it)")
    parser.add_argument("--import-records", type=int, default=1000, help="experiments through `hub import`'s code (0: skip it)")
    parser.add_argument("--sizes", default="10000,100000", help="database sizes for the read phase")
    parser.add_argument("--pg-url", default=os.environ.get("AUTORESEARCH_TEST_PG_URL"))
    parser.add_argument("--sqlite-path", type=Path, default=None,
                        help="SQLite file to use and keep (default: a temporary one); a file seeded by an earlier "
                             "run is topped up to each size, not seeded again, so reads can be re-timed")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    args.sizes = [int(s) for s in args.sizes.split(",") if s]
    args.clients = [int(c) for c in args.clients.split(",") if c]
    results = []
    for engine in args.engines.split(","):
        if engine == "sqlite" and args.sqlite_path is not None:
            results.append(bench_engine("sqlite", f"sqlite:///{args.sqlite_path.resolve()}", args))
        elif engine == "sqlite":
            with tempfile.TemporaryDirectory() as tmp:
                results.append(bench_engine("sqlite", f"sqlite:///{tmp}/hub.db", args))
        elif engine == "postgres":
            if not args.pg_url:
                print("skipping postgres: no --pg-url / AUTORESEARCH_TEST_PG_URL", file=sys.stderr)
                continue
            schema = f"bench_{uuid.uuid4().hex[:8]}"
            admin = sa.create_engine(normalise_url(args.pg_url))
            with admin.begin() as conn:
                conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
            try:
                url = sa.make_url(normalise_url(args.pg_url)).update_query_dict({"options": f"-csearch_path={schema}"})
                results.append(bench_engine("postgres", url.render_as_string(hide_password=False), args))
            finally:
                with admin.begin() as conn:
                    conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
                admin.dispose()
    if args.json:
        print(json.dumps({"machine": "see docs/hub.md", "results": results}, indent=2))
        return
    for r in results:
        for n, ing in r.get("ingest", {}).items():  # type: ignore[attr-defined]
            print(f"{r['engine']}: ingest {ing['records']} records from {n} clients: "
                  f"{ing['records_per_s']} records/s, p50 {ing['p50_ms']} ms, p99 {ing['p99_ms']} ms")
        if "import" in r:
            imp = r["import"]
            print(f"{r['engine']}: hub import of {imp['records']} records: {imp['records_per_s']} records/s")  # type: ignore[index]
        for size, reads in r["reads"].items():  # type: ignore[attr-defined]
            print(f"{r['engine']}, {size} experiments (seeded in {reads['seed_seconds']} s):")
            print(f"  {'view':<22} {'p50 ms':>8} {'p99 ms':>8} {'statements/request':>19}")
            for view, count in reads["statements"].items():
                print(f"  {view:<22} {reads[view]['p50_ms']:>8} {reads[view]['p99_ms']:>8} {count:>19}")


if __name__ == "__main__":
    main()
