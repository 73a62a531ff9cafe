"""Profile the ingest path in-process: ``POST /api/v1/experiments`` on a fresh SQLite hub, N real
signed records of the built-in ``tiny`` track (the records of :mod:`hub_bench`), sequentially
through the ASGI app (no network), under :mod:`cProfile`. Prints records/s, SQL statements per
ingest (:class:`autoresearch.hub.db.StatementCounter`) and the top functions by cumulative time.

    python bench/ingest_profile.py --records 300 --top 40
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import random
import sys
import tempfile
import time
from pathlib import Path

import fastapi.routing
from fastapi.testclient import TestClient

sys.path.insert(0, str(Path(__file__).parent))
from hub_bench import HARDWARE, child_of, record  # noqa: E402

from autoresearch.hub.app import create_app  # noqa: E402
from autoresearch.hub.db import StatementCounter  # noqa: E402
from autoresearch.hub.migrate import upgrade  # noqa: E402
from autoresearch.hub.settings import HubSettings  # noqa: E402
from autoresearch.protocol import ClientRegistration, KeyPair, sign, utc_now  # noqa: E402
from autoresearch.trainer import tracks  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=300)
    parser.add_argument("--keys", type=int, default=8)
    parser.add_argument("--top", type=int, default=35)
    parser.add_argument("--sort", default="cumulative")
    parser.add_argument("--no-profile", action="store_true", help="time only (no cProfile overhead)")
    parser.add_argument("--filter", default="hub/|protocol/|sqlalchemy/orm/session|compile|deepcopy", help="regex on function locations")
    args = parser.parse_args()
    spec = tracks.get_track("tiny")
    reference = tracks.reference_source(spec)
    rng = random.Random(1)
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/hub.db"
        upgrade(url)
        settings = HubSettings(db_url=url, quota_records_per_minute=1_000_000, quota_token_records_per_minute=1_000_000,
                               quota_source_bytes_per_day=1 << 40, quota_token_source_bytes_per_day=1 << 40)
        app = create_app(settings, pages=False)
        keys = [KeyPair.generate() for _ in range(args.keys)]
        bodies = [
            sign(record(spec.id, reference, child_of(reference, rng), rng, HARDWARE[i % len(HARDWARE)]), keys[i % len(keys)]).to_json().encode()
            for i in range(args.records)
        ]
        profile = cProfile.Profile()
        run_sync = fastapi.routing._run_sync_endpoint

        endpoint_seconds = [0.0, 0.0]  # wall, this thread's CPU

        def profiled(*a: object, **kw: object) -> object:  # sync endpoints run in a worker thread: profile there
            start, cpu = time.perf_counter(), time.thread_time()
            if not args.no_profile:
                profile.enable()
            try:
                return run_sync(*a, **kw)  # type: ignore[arg-type]
            finally:
                if not args.no_profile:
                    profile.disable()
                endpoint_seconds[0] += time.perf_counter() - start
                endpoint_seconds[1] += time.thread_time() - cpu

        with TestClient(app) as client:
            for i, k in enumerate(keys):
                reg = ClientRegistration(public_key=k.public_key_hex, display_name=f"prof-{i}", created_at=utc_now())
                client.post("/api/v1/clients", content=sign(reg, k).to_json()).raise_for_status()
            fastapi.routing._run_sync_endpoint = profiled  # type: ignore[assignment]
            with StatementCounter(app.state.hub.engine) as counter:
                start = time.perf_counter()
                for body in bodies:
                    r = client.post("/api/v1/experiments", content=body)
                    if r.status_code != 201:
                        raise SystemExit(f"ingest failed: {r.status_code} {r.text[:300]}")
                elapsed = time.perf_counter() - start
        app.state.hub.engine.dispose()
    print(f"{args.records} records in {elapsed:.2f} s: {args.records / elapsed:.1f} records/s "
          f"({'no profiler' if args.no_profile else 'endpoint under cProfile'}), "
          f"{counter.count / args.records:.1f} SQL statements per ingest; "
          f"{1000 * endpoint_seconds[0] / args.records:.1f} ms per record in the endpoint "
          f"({1000 * endpoint_seconds[1] / args.records:.1f} ms of CPU), the rest in the ASGI stack")
    if args.no_profile:
        return
    out = io.StringIO()
    with tempfile.NamedTemporaryFile(suffix=".prof") as dump:
        profile.dump_stats(dump.name)
        stats = pstats.Stats(dump.name, stream=out)
    stats.sort_stats(args.sort).print_stats(args.filter, args.top)
    print(out.getvalue())


if __name__ == "__main__":
    main()
