"""What machine load does to one tiny-track run, and what the drift guard sees of it.

Runs the real harness (``trainer.run.run_training``, ``tiny`` track, 2 s CPU-time budget by
default) on one ``train.py`` (the tiny reference with ``DEVICE_BATCH_SIZE = 1``, the parent of
tests/client/test_drift_guard_training.py, or ``--reference``):

1. ``--repeats`` quiet runs with seed 0 (same-seed repeat noise);
2. ``--repeats`` runs with seed 0 under a memory-bandwidth load of ``--load`` processes;
3. ``--seeds`` quiet runs with seeds 0 … K−1 (seed noise σ, as a calibration measures it).

Prints, per group: steps, tokens/s and val_bpb (bits per byte) of each run, their mean and sd,
and the figures the drift guard compares: the loaded/quiet throughput change (against
``calibration.throughput_spread``'s floor and default), the loaded − quiet val_bpb in seed-noise σ
(what a no-op child measured against a loaded parent would claim), and the false-keep rate of
``z ≥ MIN_Z`` for same-seed repeats at that σ.

    .venv/bin/python bench/drift_guard.py [--budget 2] [--repeats 3] [--seeds 5] [--load 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from autoresearch.client import calibration
from autoresearch.trainer import tracks
from autoresearch.trainer.run import run_training

LOAD = """
import numpy as np, sys, time
a = np.ones(32 << 20); b = np.empty_like(a)
end = time.monotonic() + float(sys.argv[1])
while time.monotonic() < end:
    np.copyto(b, a)
"""


def _runs(source: str, spec: tracks.TrackSpec, seeds: list[int], root: Path, name: str) -> list[dict[str, float]]:
    out = []
    for i, seed in enumerate(seeds):
        run_dir = root / f"{name}-{i}"
        run_dir.mkdir(parents=True)
        train_py = run_dir / "train.py"
        train_py.write_text(source)
        result = run_training(train_py, spec, run_dir, seed=seed, allow_unsandboxed=True)
        m = result.metrics
        if result.outcome != "ok" or m.val_bpb is None:
            raise SystemExit(f"{name} run {i} ended {result.outcome}: {result.error}")
        out.append({"seed": seed, "steps": m.num_steps or 0, "tokens_per_second": m.tokens_per_second or 0.0, "val_bpb": m.val_bpb})
        print(f"  {name:6} seed {seed}: {out[-1]['steps']:4d} steps {out[-1]['tokens_per_second']:8.0f} tok/s "
              f"val_bpb {m.val_bpb:.4f}", file=sys.stderr)  # fmt: skip
    return out


def _stats(runs: list[dict[str, float]], key: str) -> tuple[float, float]:
    values = [r[key] for r in runs]
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=2.0, help="training budget, CPU seconds")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--load", type=int, default=3, help="memory-streaming load processes")
    parser.add_argument("--reference", type=Path, help="train.py to run (default: tiny reference, DEVICE_BATCH_SIZE = 1)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    spec = tracks.derive(tracks.get_track("tiny"), time_budget=args.budget)
    if args.reference:
        source = args.reference.read_text()
    else:
        source = tracks.reference_source("tiny").replace("DEVICE_BATCH_SIZE = 4 ", "DEVICE_BATCH_SIZE = 1 ")
    with tempfile.TemporaryDirectory(prefix="drift-bench-") as tmp:
        root = Path(tmp)
        quiet = _runs(source, spec, [0] * args.repeats, root, "quiet")
        load = [subprocess.Popen([sys.executable, "-c", LOAD, "3600"]) for _ in range(args.load)]
        try:
            loaded = _runs(source, spec, [0] * args.repeats, root, "loaded")
        finally:
            for proc in load:
                proc.terminate()
                proc.wait()
        seeded = _runs(source, spec, list(range(args.seeds)), root, "seeds")
    sigma = _stats(seeded, "val_bpb")[1]
    q_tps, q_tps_sd = _stats(quiet, "tokens_per_second")
    l_tps = _stats(loaded, "tokens_per_second")[0]
    q_val, q_val_sd = _stats(quiet, "val_bpb")
    l_val = _stats(loaded, "val_bpb")[0]
    from statistics import NormalDist

    figures = {
        "budget_seconds": args.budget,
        "quiet": {"steps": _stats(quiet, "steps"), "tokens_per_second": (q_tps, q_tps_sd), "val_bpb": (q_val, q_val_sd)},
        "loaded": {"steps": _stats(loaded, "steps"), "tokens_per_second": _stats(loaded, "tokens_per_second"), "val_bpb": _stats(loaded, "val_bpb")},
        "seed_sigma": sigma,
        "loaded_throughput_change": l_tps / q_tps - 1.0,
        "throughput_spread_floor": calibration.MIN_THROUGHPUT_SPREAD,
        "throughput_spread_uncalibrated": calibration.DEFAULT_THROUGHPUT_SPREAD,
        "no_op_vs_loaded_parent_z": (l_val - q_val) / sigma if sigma > 0 else None,
        "same_seed_repeat_sd_in_sigma": q_val_sd / sigma if sigma > 0 else None,
        "same_seed_false_keep_rate": (1 - NormalDist().cdf(calibration.DEFAULT_MIN_Z * sigma / (q_val_sd * 2**0.5)))
        if q_val_sd > 0 and sigma > 0 else 0.0,
    }  # fmt: skip
    if args.json:
        print(json.dumps(figures, indent=2))
        return
    print(f"tiny track, {args.budget:g} s CPU budget, train.py {'given' if args.reference else 'reference with DEVICE_BATCH_SIZE = 1'}")
    for name in ("quiet", "loaded"):
        g = figures[name]
        assert isinstance(g, dict)
        print(f"{name:7} steps {g['steps'][0]:6.1f} ± {g['steps'][1]:4.1f}   tok/s {g['tokens_per_second'][0]:8.0f} ± "
              f"{g['tokens_per_second'][1]:6.0f}   val_bpb {g['val_bpb'][0]:.4f} ± {g['val_bpb'][1]:.4f}")  # fmt: skip
    print(f"seed noise σ ({args.seeds} seeds): {sigma:.4f} bits per byte")
    print(f"throughput under load: {figures['loaded_throughput_change']:+.1%} (drift guard: floor ±{calibration.MIN_THROUGHPUT_SPREAD:.0%}, "
          f"uncalibrated ±{calibration.DEFAULT_THROUGHPUT_SPREAD:.0%})")  # fmt: skip
    print(f"a no-op child against a loaded parent claims z = {figures['no_op_vs_loaded_parent_z']}")
    print(f"same-seed repeats: sd = {figures['same_seed_repeat_sd_in_sigma']} σ; z ≥ {calibration.DEFAULT_MIN_Z:g} false-keep "
          f"rate between two quiet repeats ≈ {figures['same_seed_false_keep_rate']:.2%}")  # fmt: skip


if __name__ == "__main__":
    main()
