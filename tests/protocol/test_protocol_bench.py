"""Smoke test of bench/protocol_bench.py: it runs and reports every figure (no timing assertions)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "protocol_bench.py"


def test_bench_reports_every_figure_for_a_3_kib_diff() -> None:
    spec = importlib.util.spec_from_file_location("protocol_bench", BENCH)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    figures = bench.run(n=3, repeat=1)
    assert 2900 <= figures["diff_bytes"] <= 3300
    assert set(figures["records_per_second"]) == {
        "sign", "verify", "verify_embedded_key", "canonical_bytes", "ed25519_sign", "ed25519_verify",
    }  # fmt: skip
    assert all(rate > 0 for rate in figures["records_per_second"].values())
