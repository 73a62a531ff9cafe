"""Hub storage per experiment on PostgreSQL: bytes each table (with its indexes and TOAST) grows by.

Seeds a fresh schema with ``--experiments`` real signed records of the ``tiny`` track through the
same bulk loader as ``bench/hub_bench.py`` (``store.bulk_load``), then prints
``pg_total_relation_size`` per table divided by the experiment count, and the stored (compressed,
``pg_column_size``) size of a ``train.py`` in ``sources``. docs/scaling.md quotes the figures.

    python bench/storage_bench.py --experiments 5000 [--pg-url URL] [--json]

PostgreSQL needs ``--pg-url`` or ``AUTORESEARCH_TEST_PG_URL`` (a schema is made and dropped).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import uuid
from pathlib import Path

import sqlalchemy as sa

from autoresearch.hub.db import normalise_url
from autoresearch.hub.migrate import upgrade
from autoresearch.hub.models import Base
from autoresearch.protocol import KeyPair
from autoresearch.trainer import tracks

sys.path.insert(0, str(Path(__file__).resolve().parent))
import hub_bench  # noqa: E402  # the seeding code of the hub benchmark, reused as is


def measure(url: str, experiments: int) -> dict[str, object]:
    """Seed ``experiments`` rows into the migrated database at ``url``; sizes in bytes."""
    spec = tracks.get_track("tiny")
    keys = [KeyPair.generate() for _ in range(8)]
    engine = sa.create_engine(normalise_url(url))
    with engine.begin() as conn:
        for i, k in enumerate(keys):
            conn.execute(
                sa.text("INSERT INTO clients (key_id, public_key, display_name, name_key, status, registered_at, record_id, envelope_json) "
                        "VALUES (:k, :p, :n, :n, 'active', now(), :k, '{}')"),
                {"k": k.key_id, "p": k.public_key_hex, "n": f"bench-{i}"},
            )  # fmt: skip
    seconds = hub_bench.seed(url, spec.id, tracks.reference_source(spec), keys, experiments)
    sizes: dict[str, float] = {}
    with engine.connect() as conn:
        conn.execute(sa.text("ANALYZE"))
        for table in Base.metadata.sorted_tables:
            total = conn.scalar(sa.text(f"SELECT pg_total_relation_size('{table.name}')")) or 0
            sizes[table.name] = round(total / experiments, 1)
        source = conn.execute(sa.text("SELECT avg(size), avg(pg_column_size(text)) FROM sources")).one()
        envelope = conn.scalar(sa.text("SELECT avg(octet_length(envelope_json)) FROM experiments"))
    engine.dispose()
    return {
        "experiments": experiments,
        "seed_seconds": round(seconds, 1),
        "bytes_per_experiment_by_table": sizes,
        "bytes_per_experiment_total": round(sum(sizes.values()), 1),
        "envelope_json_bytes_avg": round(float(envelope or 0), 1),
        "source_bytes_avg": round(float(source[0] or 0), 1),
        "source_stored_bytes_avg": round(float(source[1] or 0), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiments", type=int, default=5000)
    parser.add_argument("--pg-url", default=os.environ.get("AUTORESEARCH_TEST_PG_URL"))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if not args.pg_url:
        raise SystemExit("needs --pg-url or AUTORESEARCH_TEST_PG_URL")
    schema = f"storage_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(normalise_url(args.pg_url))
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    try:
        url = sa.make_url(normalise_url(args.pg_url)).update_query_dict({"options": f"-csearch_path={schema}"})
        rendered = url.render_as_string(hide_password=False)
        upgrade(rendered)
        result = measure(rendered, args.experiments)
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{result['experiments']} experiments seeded in {result['seed_seconds']} s")
    for table, size in result["bytes_per_experiment_by_table"].items():  # type: ignore[attr-defined]
        print(f"  {table:24s} {size:10.1f} bytes per experiment")
    print(f"  {'total':24s} {result['bytes_per_experiment_total']:10.1f} bytes per experiment")
    print(f"envelope_json {result['envelope_json_bytes_avg']} bytes; train.py {result['source_bytes_avg']} bytes, "
          f"{result['source_stored_bytes_avg']} bytes stored (TOAST-compressed)")  # fmt: skip


if __name__ == "__main__":
    main()
