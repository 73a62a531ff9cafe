"""What the sandbox costs: tokens/s and start-up of the reference train.py, sandboxed worker vs the
old in-process path, side by side in one run (interleaved, so machine noise hits both alike).

Variants, each a fresh process per run:

``sandbox``     :func:`run_training` as the loop uses it (harness + bubblewrap workers + probes)
``process``     the same harness with workers as plain processes (isolation ``process``)
``in-process``  one Python process that imports torch, loads the data, imports ``train.py`` and calls
                ``train(h)`` with a local handle — what the harness did before the boundary — then
                evaluates with the same scoring code (no probes)

tokens/s is per second of the budget clock (CPU seconds on ``cpu``/``tiny`` in every variant);
start-up is process start → ``train(h)`` may begin (interpreter, torch, torch._dynamo, data, and for
the workers bubblewrap and the socket hand-shake); total is the whole run's wall time.

    python bench/isolation_bench.py [--track cpu] [--time-budget S] [--rounds N] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock


def _in_process_child(track_name: str, budget: float) -> None:
    """The pre-boundary path, in this (fresh) process; prints one JSON line."""
    t0 = time.monotonic()
    import importlib
    import types

    import numpy as np
    import torch

    for name in ("torch._dynamo", "torch.optim"):
        importlib.import_module(name)
    from autoresearch.trainer import data, evaluate, tracks
    from autoresearch.trainer.worker.scoring import score

    track = tracks.get_track(track_name, time_budget=budget)
    limits = tracks.limits(track)
    torch.set_num_threads(limits.num_threads or torch.get_num_threads())
    corpus = data.load_corpus(track)
    rows = data.eval_rows(corpus, track.max_seq_len, track.eval_tokens)
    module = types.ModuleType("train")
    sys.modules["train"] = module  # dataclasses in train.py look their module up
    exec(compile(tracks.reference_source(track), "train.py", "exec"), module.__dict__)  # noqa: S102 - our own reference
    packer = data.BestFitPacker(corpus.train_stream(0), track.max_seq_len + 1, corpus.bos_id)

    class Handle:
        device, vocab_size, max_seq_len, bos_id, seed, time_budget = torch.device("cpu"), corpus.vocab_size, track.max_seq_len, corpus.bos_id, 0, budget

        def __init__(self) -> None:
            self.start = time.process_time()
            self.tokens = 0
            self.last: float | None = None
            self.step = 0.0

        def training_seconds(self) -> float:
            return time.process_time() - self.start

        def should_stop(self) -> bool:
            return self.training_seconds() + self.step / 2 >= budget

        def progress(self) -> float:
            return self.training_seconds() / budget

        def next_batch(self, b: int, t: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
            batch = torch.from_numpy(np.stack([packer.next_row() for _ in range(b)]))  # type: ignore[misc]
            self.tokens += b * track.max_seq_len
            return batch[:, :-1].contiguous(), batch[:, 1:].contiguous()

        def report(self, step: int, loss: float) -> None:
            now = time.process_time()
            if self.last is not None:
                self.step = now - self.last
            self.last = now

    h = Handle()
    startup = time.monotonic() - t0
    model = module.train(h)
    seconds = h.training_seconds()
    lse, tgt, _ = score(model.eval(), torch.from_numpy(rows), corpus.vocab_size)
    val_bpb = evaluate.bits_per_byte(lse.numpy(), tgt.numpy(), rows[:, 1:], corpus.token_bytes)
    print(json.dumps({"startup_seconds": startup, "tokens_per_second": h.tokens / seconds, "val_bpb": val_bpb,
                      "training_seconds": seconds, "total_seconds": time.monotonic() - t0}))  # fmt: skip


def _harness(track_name: str, budget: float, isolation: str) -> dict[str, float | None]:
    from autoresearch.trainer import sandbox, tracks
    from autoresearch.trainer.run import run_training

    track = tracks.get_track(track_name, time_budget=budget)
    with tempfile.TemporaryDirectory(prefix="isolation-bench-") as tmp:
        train_py = Path(tmp) / "train.py"
        train_py.write_text(tracks.reference_source(track))
        t0 = time.monotonic()
        if isolation == "process":
            with mock.patch.object(sandbox, "detect", return_value=sandbox.Support("process", reason="bench")):
                result = run_training(train_py, track, Path(tmp) / "run", allow_unsandboxed=True)
        else:
            result = run_training(train_py, track, Path(tmp) / "run")
        total = time.monotonic() - t0
    assert result.outcome == "ok", result.error
    m = result.metrics
    return {"startup_seconds": m.startup_seconds, "tokens_per_second": m.tokens_per_second, "val_bpb": m.val_bpb,
            "training_seconds": m.training_seconds, "total_seconds": total}  # fmt: skip


def _in_process(track_name: str, budget: float) -> dict[str, float | None]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", track_name, "--time-budget", str(budget)],
        capture_output=True, text=True, check=True, env={"OMP_WAIT_POLICY": "PASSIVE", "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--track", default="cpu")
    parser.add_argument("--time-budget", type=float, default=None, help="default: the track's budget")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    from autoresearch.trainer import tracks

    budget = args.time_budget or tracks.get_track(args.track).time_budget
    if args.child:
        _in_process_child(args.child, budget)
        return 0
    runs: dict[str, list[dict[str, float | None]]] = {"sandbox": [], "process": [], "in-process": []}
    for _ in range(args.rounds):
        runs["in-process"].append(_in_process(args.track, budget))
        runs["sandbox"].append(_harness(args.track, budget, "sandbox"))
        runs["process"].append(_harness(args.track, budget, "process"))
    table = {name: {key: statistics.median(float(r[key] or 0) for r in rows) for key in rows[0]} for name, rows in runs.items()}
    base = table["in-process"]["tokens_per_second"]
    for row in table.values():
        row["tokens_per_second_vs_in_process"] = row["tokens_per_second"] / base if base else float("nan")
    if args.json:
        print(json.dumps({"track": args.track, "time_budget": budget, "rounds": args.rounds, "variants": table}, indent=2))
        return 0
    print(f"track {args.track}, budget {budget:g} s, median of {args.rounds} interleaved rounds")
    print(f"{'variant':<12} {'tokens/s':>10} {'vs in-proc':>10} {'start-up s':>11} {'total s':>8} {'val_bpb':>8}")
    for name, row in table.items():
        print(f"{name:<12} {row['tokens_per_second']:>10.0f} {row['tokens_per_second_vs_in_process']:>10.3f} "
              f"{row['startup_seconds']:>11.2f} {row['total_seconds']:>8.1f} {row['val_bpb']:>8.4f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
