"""Sign and verify throughput of the protocol layer, in records per second.

    .venv/bin/python bench/protocol_bench.py            # a table on stdout
    .venv/bin/python bench/protocol_bench.py --json     # the same figures as JSON
    .venv/bin/python bench/protocol_bench.py -n 5000    # more iterations per measurement

The record is a realistic experiment: every metric set, normalised figures, a ~3 KiB unified diff
(several hyperparameters and a function body changed). ``sign`` is what a client does per record
(RFC 8785 canonical bytes + Ed25519 over the DSSE PAE + envelope); ``verify`` is what a hub or an
auditor does (parse the envelope JSON, base64, Ed25519 check, parse the record, re-canonicalise and
compare). The parts are timed separately too. Each figure is the best of ``--repeat`` runs of ``-n``
iterations (the ``timeit`` convention: the minimum is the least disturbed by other load).
"""

from __future__ import annotations

import argparse
import difflib
import json
import platform
import time
from collections.abc import Callable
from datetime import UTC, datetime

from autoresearch.protocol import (
    ExperimentRecord,
    KeyPair,
    Normalised,
    RunMetrics,
    SoftwareVersions,
    canonical_bytes,
    canonical_source_sha256,
    pae,
    sha256_hex,
    sign,
    verify,
)
from autoresearch.protocol.keys import verify_raw


def _train_py(lr: float, warmdown: float, depth: int, extra: str) -> str:
    constants = "\n".join(f"CONST_{i:02d} = {i * 0.125}  # filler hyperparameter {i}" for i in range(40))
    return (
        f"import torch\nimport torch.nn as nn\nimport torch.nn.functional as F\n\n"
        f"# ---- hyperparameters ----\nDEPTH = {depth}  # transformer layers\nMATRIX_LR = {lr}  # Muon learning rate\n"
        f"WARMDOWN_RATIO = {warmdown}  # fraction of the budget spent decaying the LR\n{constants}\n\n"
        "class MLP(nn.Module):\n    def __init__(self, n_embd):\n        super().__init__()\n"
        "        self.c_fc = nn.Linear(n_embd, 4 * n_embd, bias=False)\n"
        "        self.c_proj = nn.Linear(4 * n_embd, n_embd, bias=False)\n\n"
        f"    def forward(self, x):\n{extra}        return self.c_proj(x)\n"
    )


def realistic_record() -> ExperimentRecord:
    """An ``ok`` experiment whose diff is about 3 KiB."""
    parent = _train_py(0.04, 0.5, 8, "        x = F.relu(self.c_fc(x)).square()  # ReLU²\n")
    body = "".join(f"        x = x + 0.0 * x  # padding line {i} to make the diff realistic in size\n" for i in range(30))
    child = _train_py(0.05, 0.6, 10, "        x = F.gelu(self.c_fc(x))\n" + body)
    diff = "".join(difflib.unified_diff(parent.splitlines(True), child.splitlines(True), "a/train.py", "b/train.py"))
    return ExperimentRecord(
        track="climbmix-0123456789ab",
        parent_sha256=sha256_hex(parent),
        child_sha256=sha256_hex(child),
        parent_canonical_sha256=canonical_source_sha256(parent),
        child_canonical_sha256=canonical_source_sha256(child),
        diff=diff,
        description="MATRIX_LR 0.04 → 0.05, DEPTH 8 → 10, ReLU² → GELU",
        outcome="ok",
        status="keep",
        metrics=RunMetrics(
            val_bpb=0.9871, training_seconds=300.02, total_seconds=331.4, startup_seconds=21.0, eval_seconds=10.4,
            peak_vram_mib=44_180.5, mfu_percent=39.8, total_tokens=499_122_176, tokens_per_second=1_663_600.2,
            num_steps=953, num_params=50_331_648, depth=10,
        ),
        parent_val_bpb=0.9979,
        normalised=Normalised(delta_val_bpb=-0.0108, sigma=0.0011, z=9.8, ecm=1.42, ecm_parent=1.05, gain=1.352),
        hardware_class="NVIDIA H100 80GB HBM3",
        software=SoftwareVersions(python="3.11.7", torch="2.13.0", cuda="12.8", driver="570.86.15"),
        harness_version="1",
        calibration_id=sha256_hex("calibration"),
        created_at=datetime(2026, 3, 14, 15, 9, 26, 535000, tzinfo=UTC),
    )


def _rate(fn: Callable[[], object], n: int, repeat: int) -> float:
    """Best-of-``repeat`` calls per second over ``n`` calls."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, time.perf_counter() - start)
    return n / best


def run(n: int, repeat: int) -> dict[str, object]:
    """Measure every figure; returns them as a dict (rates in records/s, sizes in bytes)."""
    keys = KeyPair.generate()
    record = realistic_record()
    body = canonical_bytes(record)
    envelope = sign(record, keys)
    env_json = envelope.to_json()
    message = pae(envelope.payload_type, body)
    sig = keys.sign(message)
    verify(env_json, keys.public_key)  # must verify before we time it
    return {
        "machine": f"{platform.machine()} {platform.processor() or platform.platform()}, Python {platform.python_version()}",
        "diff_bytes": len(record.diff.encode()),
        "payload_bytes": len(body),
        "envelope_bytes": len(env_json.encode()),
        "records_per_second": {
            "sign": round(_rate(lambda: sign(record, keys).to_json(), n, repeat)),
            "verify": round(_rate(lambda: verify(env_json, keys.public_key), n, repeat)),
            "verify_embedded_key": round(_rate(lambda: verify(env_json), n, repeat)),
            "canonical_bytes": round(_rate(lambda: canonical_bytes(record), n, repeat)),
            "ed25519_sign": round(_rate(lambda: keys.sign(message), n, repeat)),
            "ed25519_verify": round(_rate(lambda: verify_raw(keys.public_key, sig, message), n, repeat)),
        },
        "n": n,
        "repeat": repeat,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=2000, help="iterations per measurement (default 2000)")
    parser.add_argument("--repeat", type=int, default=3, help="measurements per figure; the best is kept (default 3)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args()
    figures = run(args.n, args.repeat)
    if args.json:
        print(json.dumps(figures, indent=2))
        return
    print(f"machine: {figures['machine']}")
    print(f"record: diff {figures['diff_bytes']} B, payload {figures['payload_bytes']} B, envelope {figures['envelope_bytes']} B")
    rates: dict[str, int] = figures["records_per_second"]  # type: ignore[assignment]
    for name, rate in rates.items():
        print(f"{name:>20}: {rate:>9,} records/s  ({1e6 / rate:8.1f} µs each)")


if __name__ == "__main__":
    main()
