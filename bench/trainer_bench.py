"""Benchmark the harness: tokens/s, MFU, steps and val_bpb of a track's reference train.py.

Runs the ``cpu`` track (60 s of training) on this machine, and ``climbmix`` too when a CUDA GPU and
prepared climbmix data are present. Prints one line per run and, with ``--json``, a JSON document.
On climbmix ``--upstream`` also runs upstream's ``train.py`` with SDPA in place of FA3
(``bench/upstream_sdpa_train.py``) on the same data, seeds and budget, the throughput yardstick of
issue 19; compile seconds are the wall time from the end of start-up to the first reported step.
Without network, ``bench/gpu_check.py`` builds climbmix-layout data from the shipped corpus first.

    python bench/trainer_bench.py [--tracks cpu,tiny] [--time-budget S] [--seeds N] [--upstream] [--json]
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
import tempfile
import time
from pathlib import Path

from autoresearch.trainer import hardware, tracks
from autoresearch.trainer.run import run_training


def _cuda_ready() -> bool:
    try:
        import torch
    except ImportError:
        return False
    if not torch.cuda.is_available():
        return False
    from autoresearch.trainer import climbmix
    from autoresearch.trainer.data import DataError

    try:
        climbmix.load_climbmix(tracks.get_track("climbmix"))
    except DataError:
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracks", default=None, help="comma-separated track names (default: cpu, plus climbmix on a GPU)")
    parser.add_argument("--time-budget", type=float, default=None, help="override the budget (a derived track)")
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--upstream", action="store_true", help="on climbmix, also run upstream's train.py with SDPA")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    names = args.tracks.split(",") if args.tracks else ["cpu", *(["climbmix"] if _cuda_ready() else [])]
    upstream = Path(__file__).resolve().parent / "upstream_sdpa_train.py"
    extra = {"allow_unsandboxed": True} if "allow_unsandboxed" in inspect.signature(run_training).parameters else {}
    rows = []
    for name in names:
        track = tracks.get_track(name, time_budget=args.time_budget)
        models = [("reference", tracks.reference_source(track))]
        if args.upstream and track.name == "climbmix":
            models.append(("upstream-sdpa", upstream.read_text()))
        for (model, source), seed in ((m, s) for m in models for s in range(args.seeds)):
            first_step: list[float] = []

            def on_progress(p: object, first_step: list[float] = first_step) -> None:
                if not first_step:
                    first_step.append(time.monotonic())

            with tempfile.TemporaryDirectory(prefix="trainer-bench-") as tmp:
                train_py = Path(tmp) / "train.py"
                train_py.write_text(source)
                start = time.monotonic()
                result = run_training(train_py, track, Path(tmp) / "run", seed=seed, on_progress=on_progress, **extra)
            m = result.metrics
            compile_s = first_step[0] - start - m.startup_seconds if first_step and m.startup_seconds is not None else None
            row = {
                "track": track.id, "model": model, "seed": seed, "outcome": result.outcome,
                "hardware_class": result.hardware_class or hardware.hardware_class_for(track.device),
                "val_bpb": m.val_bpb, "num_steps": m.num_steps, "tokens_per_second": m.tokens_per_second,
                "mfu_percent": m.mfu_percent, "mfu_estimated": result.mfu_estimated,
                "training_seconds": m.training_seconds, "startup_seconds": m.startup_seconds,
                "eval_seconds": m.eval_seconds, "num_params": m.num_params, "peak_vram_mib": m.peak_vram_mib,
                "compile_seconds": compile_s,
            }  # fmt: skip
            rows.append(row)
            if not args.json:
                print(
                    f"{track.id} {model} seed={seed} {result.outcome}: val_bpb={m.val_bpb} steps={m.num_steps} "
                    f"tokens/s={m.tokens_per_second and round(m.tokens_per_second)} mfu%={m.mfu_percent and round(m.mfu_percent, 2)}"
                    f"{' (estimated)' if result.mfu_estimated else ''} train={m.training_seconds and round(m.training_seconds, 1)}s "
                    f"startup={m.startup_seconds and round(m.startup_seconds, 1)}s compile={compile_s and round(compile_s, 1)}s "
                    f"eval={m.eval_seconds and round(m.eval_seconds, 1)}s peak_vram={m.peak_vram_mib and round(m.peak_vram_mib)}MiB "
                    f"on {row['hardware_class']}",
                    flush=True,
                )
    if args.json:
        print(json.dumps({"runs": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
