"""Loop overhead: how much of the wall clock the agent loop spends not training.

Runs the real loop (real harness, ``tiny`` track, CPU) in a fresh workspace for N experiments with:

1. the offline proposer;
2. a proposer that takes ``--delay`` seconds to answer (a stand-in for an LLM), with the next
   proposal prepared while the current run trains (the default);
3. the same slow proposer with ``--no-prefetch`` behaviour (propose only after each run), to show
   what the prefetch hides.

For each it prints: wall seconds, training seconds (harness clock), non-training seconds per
experiment, split into harness overhead (``run_training`` wall − training) and loop overhead
(everything else: git, records, waiting for the proposer), the proposer wait alone, and the duty
cycle (training s ÷ wall s). The harness overhead is itself split per experiment into start-up
(process, imports, data: the run's ``startup_seconds``), compile (from the end of start-up to the
first reported step, i.e. compilation plus one step; ~0 on CPU, where nothing compiles), evaluation
(``eval_seconds``) and the rest (model hand-over, exit, result).

    .venv/bin/python bench/loop_overhead.py [--experiments 5] [--delay 5] [--track tiny] [--json]
    .venv/bin/python bench/loop_overhead.py --bookkeeping 300   # loop cost alone, no training

``--bookkeeping N`` replaces training by an instant stand-in and prints the loop's own seconds per
experiment (git, policy check, records, results.tsv) over the first and last tenth of N experiments,
to show that it does not grow with the length of a night's run.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from autoresearch.client.loop import AgentLoop, LoopOptions
from autoresearch.client.proposers import Proposal, ProposalContext
from autoresearch.client.proposers.offline import OfflineProposer
from autoresearch.client.workspace import Workspace
from autoresearch.trainer import tracks
from autoresearch.trainer.run import run_training


class SlowProposer:
    """The offline proposer plus a fixed thinking time (seconds)."""

    name = "slow-offline"
    can_repair = False

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.inner = OfflineProposer(seed=7)

    def propose(self, ctx: ProposalContext) -> Proposal:
        time.sleep(self.delay)
        return self.inner.propose(ctx)


def measure(label: str, proposer: object, experiments: int, prefetch: bool, track_name: str = "tiny") -> dict[str, float | str]:
    """Run one configuration in a fresh workspace; returns its figures."""
    track = tracks.get_track(track_name)
    run_walls: list[float] = []
    parts: dict[str, list[float]] = {"startup": [], "compile": [], "eval": []}

    def runner(*args, **kwargs):  # type: ignore[no-untyped-def]
        start = time.monotonic()
        first_step: list[float] = []
        inner = kwargs.get("on_progress")

        def on_progress(p):  # type: ignore[no-untyped-def]
            if not first_step:
                first_step.append(time.monotonic())
            if inner is not None:
                inner(p)

        kwargs["on_progress"] = on_progress
        result = run_training(*args, **kwargs)
        run_walls.append(time.monotonic() - start)
        m = result.metrics
        parts["startup"].append(m.startup_seconds or 0.0)
        parts["eval"].append(m.eval_seconds or 0.0)
        if first_step and m.startup_seconds is not None:
            parts["compile"].append(max(0.0, first_step[0] - start - m.startup_seconds))
        return result

    with tempfile.TemporaryDirectory(prefix="ar-bench-loop-") as tmp:
        ws = Workspace.init(Path(tmp) / "ws", track=track_name, reference_source=tracks.reference_source(track), program_md="bench\n")
        loop = AgentLoop(ws, track, proposer, LoopOptions(tag="bench", max_experiments=experiments, prefetch=prefetch), runner=runner)  # type: ignore[arg-type]
        start = time.monotonic()
        stats = loop.run()
        wall = time.monotonic() - start
    training = stats.training_seconds
    harness = sum(run_walls) - training
    startup, compiled, evaluation = (sum(parts[k]) for k in ("startup", "compile", "eval"))
    return {
        "config": label,
        "experiments": stats.runs,
        "wall_s": round(wall, 2),
        "training_s": round(training, 2),
        "non_training_s_per_exp": round((wall - training) / stats.runs, 2),
        "harness_overhead_s_per_exp": round(harness / stats.runs, 2),
        "startup_s_per_exp": round(startup / stats.runs, 2),
        "compile_s_per_exp": round(compiled / stats.runs, 2),
        "eval_s_per_exp": round(evaluation / stats.runs, 2),
        "other_harness_s_per_exp": round((harness - startup - compiled - evaluation) / stats.runs, 2),
        "loop_overhead_s_per_exp": round((wall - sum(run_walls)) / stats.runs, 2),
        "proposer_wait_s_per_exp": round(stats.proposer_seconds / stats.runs, 2),
        "duty_cycle": round(training / wall, 3),
    }


def bookkeeping(experiments: int) -> dict[str, float]:
    """Loop seconds per experiment with instant training, early vs late in a long run."""
    from autoresearch.protocol import RunMetrics, SoftwareVersions
    from autoresearch.trainer.result import RunResult

    track = tracks.get_track("tiny")
    stamps: list[float] = []

    def instant(train_py, track, run_dir, *, seed=0, on_progress=None, allow_unsandboxed=False):  # type: ignore[no-untyped-def]
        stamps.append(time.monotonic())
        val = 1.0 + (hash(train_py.read_text()) % 1000) / 1e5
        return RunResult(outcome="ok", metrics=RunMetrics(val_bpb=val, training_seconds=0.0), log_path=run_dir / "run.log",
                         track=track.id, harness_version=tracks.HARNESS_VERSION, hardware_class="cpu:bench:2",
                         software=SoftwareVersions(python="3"))  # fmt: skip

    with tempfile.TemporaryDirectory(prefix="ar-bench-loop-") as tmp:
        ws = Workspace.init(Path(tmp) / "ws", track="tiny", reference_source=tracks.reference_source(track), program_md="bench\n")
        options = LoopOptions(tag="bench", max_experiments=experiments, prefetch=False)
        AgentLoop(ws, track, OfflineProposer(seed=7), options, runner=instant).run()
    gaps = [b - a for a, b in zip(stamps, stamps[1:], strict=False)]
    tenth = max(1, len(gaps) // 10)
    return {
        "experiments": experiments,
        "first_tenth_s_per_exp": round(sum(gaps[:tenth]) / tenth, 4),
        "last_tenth_s_per_exp": round(sum(gaps[-tenth:]) / tenth, 4),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiments", type=int, default=5, help="experiments per configuration (≥ 5)")
    parser.add_argument("--delay", type=float, default=5.0, help="seconds the slow proposer takes")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--bookkeeping", type=int, metavar="N", help="only measure the loop's own cost over N instant runs")
    parser.add_argument("--track", default="tiny", help="track to run the loop on (climbmix on a GPU machine with data)")
    args = parser.parse_args(argv)
    if args.bookkeeping:
        print(json.dumps(bookkeeping(args.bookkeeping)))
        return 0
    rows = [
        measure("offline", OfflineProposer(seed=7), args.experiments, prefetch=True, track_name=args.track),
        measure(f"{args.delay:g} s proposer, prefetch", SlowProposer(args.delay), args.experiments, prefetch=True, track_name=args.track),
        measure(f"{args.delay:g} s proposer, no prefetch", SlowProposer(args.delay), args.experiments, prefetch=False, track_name=args.track),
    ]
    if args.json:
        json.dump(rows, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    keys = list(rows[0])
    widths = [max(len(k), *(len(str(r[k])) for r in rows)) for k in keys]
    print("  ".join(k.ljust(w) for k, w in zip(keys, widths, strict=True)))
    for row in rows:
        print("  ".join(str(row[k]).ljust(w) for k, w in zip(keys, widths, strict=True)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
