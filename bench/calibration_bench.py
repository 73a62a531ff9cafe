"""Calibration figures: fit speed, ECM accuracy under seed noise, matmul throughput, and (``--real``)
the wall time of a real calibration of the ``tiny`` track on this machine.

ECM accuracy: a reference curve shaped like upstream's H100 numbers (val_bpb ≈ 1.10 at 75 s,
0.998 at 300 s) is sampled at the calibration's budgets (¼, ½, 1, 1, 2 × 300 s) with Gaussian seed
noise σ, fitted, and the fitted ECM of a result truly worth 1.5× (and 3×, an extrapolation) is
compared with the truth over many trials.

    .venv/bin/python bench/calibration_bench.py [--trials 300] [--real] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time

import numpy as np

from autoresearch.client import calibration
from autoresearch.client.fitting import FitError, bpb_at, fit_report, seed_sigma
from autoresearch.protocol import CalibrationRecord, CurveFit, KeyPair, SoftwareVersions, utc_now

TRUE = CurveFit(a=1.732, b=0.5, c=0.898, rmse=0.0)  # bpb(75 s) ≈ 1.098, bpb(300 s) ≈ 0.998
T = 300.0
BUDGETS = [75.0, 150.0, 300.0, 300.0, 600.0]


def fit_seconds(repeats: int = 200) -> float:
    """Median wall seconds of one fit of 5 runs."""
    y = [bpb_at(TRUE, t) for t in BUDGETS]
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fit_report(BUDGETS, y)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def ecm_error(sigma: float, true_ecm: float, trials: int, seed: int = 0) -> dict[str, float]:
    """Relative ECM error |fitted/true − 1| (median, 90th percentile) and the share of refused fits."""
    rng = np.random.default_rng(seed)
    target = bpb_at(TRUE, true_ecm * T)
    errors, refused = [], 0
    for _ in range(trials):
        y = [bpb_at(TRUE, t) + rng.normal(0.0, sigma) for t in BUDGETS]
        full = [v for t, v in zip(BUDGETS, y, strict=True) if t == T]
        try:
            report = fit_report(BUDGETS, y, tolerance=2 * seed_sigma(full))
        except FitError:
            refused += 1
            continue
        cal = _record(report.fit)
        value, _ = calibration.ecm(cal, target)
        errors.append(float("inf") if value is None else abs(value / true_ecm - 1.0))
    errors.sort()
    return {
        "median_rel_error": errors[len(errors) // 2] if errors else float("nan"),
        "p90_rel_error": errors[int(len(errors) * 0.9)] if errors else float("nan"),
        "refused_share": refused / trials,
    }


def _record(fit: CurveFit) -> CalibrationRecord:
    from autoresearch.protocol import CalibrationPoint

    points = [CalibrationPoint(budget_seconds=t, seed=0, val_bpb=1.0, training_seconds=t, num_steps=1, tokens_per_second=1.0) for t in BUDGETS[:3]]
    return CalibrationRecord(
        track="bench", hardware_class="bench", harness_version="bench", software=SoftwareVersions(python="3"),
        reference_sha256="0" * 64, time_budget_seconds=T, points=points, fit=fit, sigma=0.0,
        min_budget_seconds=75.0, max_budget_seconds=600.0, tokens_per_second=1.0, matmul_tflops=0.0,
        created_at=utc_now(),
    )  # fmt: skip


def real_tiny(time_budget: float) -> dict[str, float]:
    """Wall seconds of a real calibration of ``tiny`` at ``time_budget`` in a throwaway home."""
    import os

    from autoresearch.trainer import tracks

    with tempfile.TemporaryDirectory() as home:
        os.environ["AUTORESEARCH_HOME"] = home
        spec = tracks.derive(tracks.get_track("tiny"), time_budget=time_budget)
        start = time.perf_counter()
        cal = calibration.calibrate(spec, keys=KeyPair.generate(), force=True)
        wall = time.perf_counter() - start
        return {
            "wall_seconds": wall,
            "estimate_seconds": calibration.estimate_seconds(time_budget),
            "training_seconds": sum(p.training_seconds for p in cal.points),
            "sigma": cal.sigma,
            "rmse": cal.fit.rmse,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=300)
    parser.add_argument("--real", action="store_true", help="also run a real tiny calibration (about a minute)")
    parser.add_argument("--real-budget", type=float, default=4.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    figures: dict[str, object] = {
        "fit_ms": fit_seconds() * 1e3,
        "matmul_tflops_cpu": calibration.measure_matmul_tflops("cpu"),
        "ecm_accuracy": {
            f"sigma={s:g},ecm={e:g}": ecm_error(s, e, args.trials) for s in (3e-4, 2e-3) for e in (1.5, 3.0)
        },
    }
    if args.real:
        figures["real_tiny"] = real_tiny(args.real_budget)
    if args.json:
        json.dump(figures, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return
    print(f"fit of 5 runs:        {figures['fit_ms']:.2f} ms (median)")
    print(f"matmul (CPU, fp32):   {figures['matmul_tflops_cpu']:.4f} TFLOP/s")
    for key, v in figures["ecm_accuracy"].items():  # type: ignore[attr-defined]
        print(f"ECM error {key:<22} median {v['median_rel_error']:.3%}  p90 {v['p90_rel_error']:.3%}  refused {v['refused_share']:.1%}")
    if "real_tiny" in figures:
        print(f"real tiny calibration: {figures['real_tiny']}")


if __name__ == "__main__":
    main()
