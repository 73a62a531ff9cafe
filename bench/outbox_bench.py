"""Outbox figures: what publishing costs the loop, and how fast a backlog drains to a real hub.

Prints JSON: sign + enqueue latency per record (ms, p50/p99; each enqueue is an fsync'd SQLite
transaction) and delivery throughput (records/s) of a backlog to the real hub (uvicorn on loopback,
SQLite), as after a hub outage. Usage: ``python bench/outbox_bench.py [--records N]``.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import tempfile
import time
from pathlib import Path

from autoresearch.client.demo import HubServer, quiet_libraries
from autoresearch.client.hubclient import HubClient
from autoresearch.client.join import register_key
from autoresearch.client.outbox import Outbox
from autoresearch.protocol import (
    ExperimentRecord,
    KeyPair,
    RunMetrics,
    SoftwareVersions,
    canonical_source_sha256,
    sha256_hex,
    sign,
    utc_now,
)
from autoresearch.protocol.source import unified_diff
from autoresearch.trainer import tracks


def _record(track, reference: str, i: int) -> ExperimentRecord:  # type: ignore[no-untyped-def]
    child = re.sub(r"^MATRIX_LR = [^#\n]*", f"MATRIX_LR = {0.05 + i * 1e-4:.4f}  ", reference, count=1, flags=re.M)
    return ExperimentRecord(
        track=track.id,
        parent_sha256=sha256_hex(reference),
        child_sha256=sha256_hex(child),
        parent_canonical_sha256=canonical_source_sha256(reference),
        child_canonical_sha256=canonical_source_sha256(child),
        diff=unified_diff(reference, child),
        description=f"MATRIX_LR → {0.05 + i * 1e-4:.4f}",
        outcome="ok",
        status="discard",
        metrics=RunMetrics(val_bpb=4.0 + i * 1e-3),
        hardware_class="cpu:bench:2",
        software=SoftwareVersions(python="3.11"),
        harness_version=track.harness_version,
        created_at=utc_now(),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=200)
    args = parser.parse_args()
    quiet_libraries()
    track = tracks.get_track("tiny")
    reference = tracks.reference_source(track)
    keys = KeyPair.generate()
    with tempfile.TemporaryDirectory() as tmp:
        outbox = Outbox(Path(tmp) / "outbox.sqlite")
        records = [_record(track, reference, i) for i in range(args.records)]
        latencies = []
        for record in records:
            start = time.perf_counter()
            outbox.enqueue("experiment", sign(record, keys))
            latencies.append((time.perf_counter() - start) * 1000)
        with HubServer(f"sqlite:///{Path(tmp) / 'hub.db'}") as server, HubClient(server.url) as hub:
            register_key(hub, outbox, keys, "bench", "cpu:bench:2")
            start = time.perf_counter()
            report = outbox.send_pending(hub, force=True)
            drain = time.perf_counter() - start
    latencies.sort()
    print(
        json.dumps(
            {
                "machine": "see docs/federation.md",
                "records": args.records,
                "sign_and_enqueue_ms": {
                    "p50": round(statistics.median(latencies), 2),
                    "p99": round(latencies[int(0.99 * (len(latencies) - 1))], 2),
                },
                "drain_records_per_second": round(report.sent / drain, 1),
                "delivered": report.sent,
                "pending_after": report.pending,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
