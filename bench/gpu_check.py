"""Offline GPU check in one command: the whole CUDA path, with upstream's model as the yardstick.

    python bench/gpu_check.py OUT_DIR [--budget 30] [--eval-rows 32] [--only STAGE,...]
    scripts/gpu-check OUT_DIR                                   # the same

Needs no internet. Without CUDA it prints one ``gpu-check: skipped: …`` line, writes
``OUT_DIR/gpu_check.json`` saying so and exits 0. On a CUDA machine, stages (each one a row of the
table, a failure is a row with its error, never the end of the check):

1. ``cache``: a small climbmix cache in upstream's exact layout under ``OUT_DIR/home/.cache/autoresearch``
   (parquet shards and a BPE tokenizer trained by upstream's recipe from the corpus shipped in
   ``trainer/data/``, :func:`autoresearch.trainer.climbmix.build_offline_cache`), found by the harness
   as upstream's cache (``HOME=OUT_DIR/home``), so nothing is downloaded.
2. ``kernels``: FlexAttention's sliding window (compiled) against SDPA with the dense band mask, on
   CUDA at the climbmix shape, and the gap to FA3's window semantics (must be none).
3. ``climbmix``: the harness on the climbmix layout for ``--budget`` seconds with ``--eval-rows`` rows
   of evaluation (a derived track), for the reference ``train.py`` and for upstream's ``train.py``
   with SDPA in place of FA3 (``bench/upstream_sdpa_train.py``) — same run, same data, same rows. The
   harness runs ``train.py`` in its sandboxed worker with the GPU bound in whenever this machine can
   sandbox (the ``isolation`` column says which level ran).
4. ``tiny`` / ``cpu``: those tracks through the harness on this machine (they train on the CPU by
   design, hardware class ``cpu:…``), ``cpu`` at a 10 s budget.
5. ``tiny@cuda`` / ``cpu@cuda``: the same reference files trained in this process on CUDA for a few
   seconds (the shapes of those tracks through the CUDA code path: bf16, compile, FlexAttention).
6. ``calibration``: :func:`autoresearch.client.calibration.calibrate` at reduced size (the ``tiny``
   track at a 2 s budget: five runs, a fit, a signed record).
7. ``loop``: one experiment of the agent loop (offline proposer, ``tiny`` track).

Columns: steps, tokens/s, MFU % against the device's peak (``hardware.peak_flops``: the datasheet
table by NVML name; ``*`` = estimated), peak VRAM MiB as the harness reports it, compile seconds
(wall time from the harness's ``train`` phase to the first reported step, minus nothing: it
includes the first step), val_bpb, outcome. Results: ``OUT_DIR/gpu_check.json``, the table as
Markdown in ``OUT_DIR/gpu_check.md`` (to paste into docs/trainer.md), run directories in
``OUT_DIR/runs/``. Sized for under 8 minutes on one H100-class GPU with the defaults.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
UPSTREAM_TRAIN_PY = HERE / "upstream_sdpa_train.py"
STAGES = ("cache", "kernels", "climbmix", "tiny", "cpu", "tiny@cuda", "cpu@cuda", "calibration", "loop")
COLUMNS = ("stage", "model", "outcome", "steps", "tokens/s", "MFU %", "peak VRAM MiB", "compile s", "val_bpb", "isolation", "wall s")


@dataclass
class Row:
    """One line of the table; None = not applicable or not measured."""

    stage: str
    model: str = ""
    outcome: str = "ok"
    steps: int | None = None
    tokens_per_second: float | None = None
    mfu_percent: float | None = None
    mfu_estimated: bool = False
    peak_vram_mib: float | None = None
    compile_seconds: float | None = None
    val_bpb: float | None = None
    isolation: str | None = None
    wall_seconds: float | None = None
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def cells(self) -> list[str]:
        def f(v: float | None, nd: int) -> str:
            return "" if v is None else f"{v:.{nd}f}"

        mfu = f(self.mfu_percent, 1) + ("*" if self.mfu_estimated and self.mfu_percent is not None else "")
        steps = "" if self.steps is None else str(self.steps)
        return [self.stage, self.model, self.outcome, steps, f(self.tokens_per_second, 0), mfu, f(self.peak_vram_mib, 0),
                f(self.compile_seconds, 1), f(self.val_bpb, 4), self.isolation or "", f(self.wall_seconds, 1)]  # fmt: skip


def table(rows: list[Row]) -> str:
    """The rows as a Markdown table (notes below it)."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(r.cells()) + " |" for r in rows]
    notes = [f"- {r.stage} ({r.model}): {r.note}" for r in rows if r.note]
    return "\n".join(lines + ([""] + notes if notes else []))


def compile_seconds(phase_times: dict[str, float], first_step_time: float | None) -> float | None:
    """Wall seconds from the harness's ``train`` phase to the first reported step (compilation plus
    the first step), or None when either is missing."""
    start = phase_times.get("train")
    if start is None or first_step_time is None:
        return None
    return max(0.0, first_step_time - start)


def cuda_unavailable() -> str | None:
    """Why this machine cannot run the check, or None when it can."""
    try:
        import torch
    except ImportError:
        return "torch is not installed"
    if not torch.cuda.is_available():
        return "no CUDA GPU (torch.cuda.is_available() is False)"
    return None


# --------------------------------------------------------------------------------------------------
# Stages


def _run_harness(stage: str, model: str, train_py: Path, track: Any, run_dir: Path, *, seed: int = 0) -> Row:
    """One harness run through ``run_training``, timed from outside."""
    from autoresearch.trainer.run import run_training

    first_step: list[float] = []
    phases: dict[str, float] = {}

    def on_progress(p: Any) -> None:
        if not first_step and getattr(p, "step", None) is not None:
            first_step.append(time.monotonic())

    kwargs: dict[str, Any] = {"seed": seed, "on_progress": on_progress}
    params = inspect.signature(run_training).parameters
    if "allow_unsandboxed" in params:
        kwargs["allow_unsandboxed"] = True  # trusted code: ours and upstream's; `isolation` says what ran
    if "on_phase" in params:
        kwargs["on_phase"] = lambda name: phases.setdefault(name, time.monotonic())
    start = time.monotonic()
    phases.setdefault("train", start)  # without phase events: from the call (start-up included)
    result = run_training(train_py, track, run_dir, **kwargs)
    wall = time.monotonic() - start
    m = result.metrics
    startup = m.startup_seconds if "on_phase" not in params else None
    compiled = compile_seconds(phases, first_step[0] if first_step else None)
    if compiled is not None and startup is not None:
        compiled = max(0.0, compiled - startup)
    return Row(stage=stage, model=model, outcome=result.outcome, steps=m.num_steps, tokens_per_second=m.tokens_per_second,
               mfu_percent=m.mfu_percent, mfu_estimated=bool(result.mfu_estimated), peak_vram_mib=m.peak_vram_mib,
               compile_seconds=compiled, val_bpb=m.val_bpb, isolation=getattr(result, "isolation", None), wall_seconds=wall,
               note=(result.error or "").strip().splitlines()[-1][:300] if result.outcome != "ok" and result.error else "",
               extra={"training_seconds": m.training_seconds, "eval_seconds": m.eval_seconds, "track": track.id,
                      "hardware_class": result.hardware_class})  # fmt: skip


def stage_cache(out: Path) -> Row:
    from autoresearch.trainer import climbmix

    start = time.monotonic()
    root = climbmix.build_offline_cache(out / "home" / ".cache" / "autoresearch")
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    return Row(stage="cache", model="upstream layout", wall_seconds=time.monotonic() - start, extra={"files": files})


def stage_kernels() -> Row:
    """Compiled FlexAttention band vs SDPA with the dense band mask, bf16, climbmix shape."""
    import torch
    import torch.nn.functional as F
    from torch.nn.attention.flex_attention import flex_attention

    from autoresearch.trainer import reference_train as rt

    start = time.monotonic()
    T, W, H, D = 2048, 1024, 4, 128
    q, k, v = (torch.randn(2, H, T, D, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    mask = rt.band_mask(T, W, "cuda")
    keys_per_query = mask.sum(-1)
    assert int(keys_per_query[-1]) == W + 1 and int(keys_per_query[0]) == 1, "window is not FA3's (W + 1 keys)"
    flex = torch.compile(flex_attention, dynamic=False)
    a = flex(q, k, v, block_mask=rt.flex_band_mask(T, W, "cuda"))
    b = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    err = float((a.float() - b.float()).abs().max())

    def bench(fn: Callable[[], Any], n: int = 20) -> float:
        fn()
        torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(n):
            fn()
        torch.cuda.synchronize()
        return (time.perf_counter() - t) / n * 1e3

    bm = rt.flex_band_mask(T, W, "cuda")
    ms = {
        "flex_band_ms": bench(lambda: flex(q, k, v, block_mask=bm)),
        "sdpa_dense_mask_ms": bench(lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=mask)),
        "sdpa_causal_ms": bench(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True)),
    }
    ok = err < 2e-2
    note = f"max |flex − dense| = {err:.2e}; forward ms: " + ", ".join(f"{k} {v:.2f}" for k, v in ms.items())
    return Row(stage="kernels", model="flex vs sdpa", outcome="ok" if ok else "mismatch", wall_seconds=time.monotonic() - start,
               note=note, extra={"max_abs_err": err, **ms})  # fmt: skip


def _climbmix_track(budget: float, eval_rows: int) -> Any:
    from autoresearch.protocol import TrackSpec
    from autoresearch.trainer import tracks

    base = tracks.get_track("climbmix").model_dump(mode="json")
    return TrackSpec.build(**{**base, "time_budget": float(budget), "eval_tokens": eval_rows * base["max_seq_len"]})


def stage_climbmix(out: Path, budget: float, eval_rows: int) -> list[Row]:
    from autoresearch.trainer import tracks

    track = _climbmix_track(budget, eval_rows)
    rows = []
    for model, source in (("reference", tracks.reference_source("climbmix")), ("upstream-sdpa", UPSTREAM_TRAIN_PY.read_text())):
        run_dir = out / "runs" / f"climbmix-{model}"
        run_dir.mkdir(parents=True, exist_ok=True)
        train_py = run_dir.parent / f"climbmix-{model}.py"
        train_py.write_text(source, encoding="utf-8")
        rows.append(_run_harness("climbmix", model, train_py, track, run_dir))
    return rows


def stage_cpu_track(out: Path, name: str, budget: float | None) -> Row:
    from autoresearch.trainer import tracks

    track = tracks.get_track(name, time_budget=budget)
    train_py = out / "runs" / f"{name}.py"
    train_py.parent.mkdir(parents=True, exist_ok=True)
    train_py.write_text(tracks.reference_source(track), encoding="utf-8")
    return _run_harness(name, "reference", train_py, track, out / "runs" / name)


class _CudaHandle:
    """The ``h`` API in this process on CUDA: a track's data, ``seconds`` of training after the first step."""

    def __init__(self, track: Any, seconds: float) -> None:
        import torch

        from autoresearch.trainer import data

        corpus = data.load_corpus(track)
        self.corpus = corpus
        self.device, self.vocab_size, self.max_seq_len = torch.device("cuda"), corpus.vocab_size, track.max_seq_len
        self.time_budget, self.seed, self.bos_id = seconds, 0, corpus.bos_id
        self._packer = data.BestFitPacker(corpus.train_stream(0), track.max_seq_len + 1, corpus.bos_id)
        self.steps, self.tokens, self.first_step_at, self.started = 0, 0, None, time.monotonic()
        self._t0: float | None = None

    def _elapsed(self) -> float:
        return 0.0 if self._t0 is None else time.monotonic() - self._t0

    def next_batch(self, B: int, T: int | None = None) -> tuple[Any, Any]:
        import numpy as np
        import torch

        rows = torch.from_numpy(np.stack([self._packer.next_row() for _ in range(B)])).pin_memory().cuda(non_blocking=True)
        if self._t0 is not None:
            self.tokens += B * self.max_seq_len
        return rows[:, :-1].contiguous(), rows[:, 1:].contiguous()

    def should_stop(self) -> bool:
        return self._elapsed() >= self.time_budget

    def progress(self) -> float:
        return self._elapsed() / self.time_budget

    def time_left(self) -> float:
        return self.time_budget - self._elapsed()

    def report(self, step: int, loss: float) -> None:
        self.steps += 1
        if self._t0 is None:
            self.first_step_at = self._t0 = time.monotonic()


def _bits_per_byte(model: Any, rows: Any, token_bytes: Any, batch: int = 32) -> float:
    """Σ nats / (ln 2 × Σ bytes) over byte-carrying targets (the metric's formula, for this stage only)."""
    import math

    import torch
    import torch.nn.functional as F

    nats, nbytes = 0.0, 0
    model.eval()
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        for i in range(0, rows.shape[0], batch):
            r = torch.from_numpy(rows[i : i + batch]).cuda()
            logits = model(r[:, :-1]).float()
            loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), r[:, 1:].reshape(-1), reduction="none")
            b = token_bytes[r[:, 1:].reshape(-1)]
            nats += float((loss * (b > 0)).sum())
            nbytes += int(b.sum())
    return nats / (math.log(2) * nbytes)


def stage_cpu_track_on_cuda(out: Path, name: str, seconds: float = 5.0) -> Row:
    import gc
    import importlib.util

    import torch

    from autoresearch.trainer import data, hardware, tracks

    track = tracks.get_track(name)
    path = out / "runs" / f"{name}-cuda.py"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(tracks.reference_source(track), encoding="utf-8")
    spec = importlib.util.spec_from_file_location(f"train_{name}_cuda", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    h = _CudaHandle(track, seconds)
    torch.cuda.reset_peak_memory_stats()
    start = time.monotonic()
    try:
        model = module.train(h)
    finally:
        gc.enable()
    rows = data.eval_rows(h.corpus, track.max_seq_len, track.eval_tokens)
    bpb = _bits_per_byte(model, rows, torch.from_numpy(h.corpus.token_bytes).cuda())
    peak_vram = torch.cuda.max_memory_allocated() / 2**20  # after evaluation
    tps = h.tokens / seconds
    peak, estimated = hardware.peak_flops(torch.cuda.get_device_name())
    assert h.first_step_at is not None
    return Row(stage=f"{name}@cuda", model="reference (in-process)", steps=h.steps, tokens_per_second=tps,
               mfu_percent=100 * model.estimate_flops() * tps / peak, mfu_estimated=estimated, peak_vram_mib=peak_vram,
               compile_seconds=h.first_step_at - start, val_bpb=bpb, wall_seconds=time.monotonic() - start)  # fmt: skip


def stage_calibration(out: Path) -> Row:
    from autoresearch.client import calibration
    from autoresearch.protocol import KeyPair
    from autoresearch.trainer import tracks

    start = time.monotonic()
    os.environ["AUTORESEARCH_HOME"] = str(out / "ar-home")
    record = calibration.calibrate(tracks.get_track("tiny", time_budget=2.0), keys=KeyPair.generate(), force=True)
    return Row(stage="calibration", model="reference, tiny @ 2 s", steps=len(record.points), tokens_per_second=record.tokens_per_second,
               wall_seconds=time.monotonic() - start,
               note=f"fit c={record.fit.c:.3f} a={record.fit.a:.3f} b={record.fit.b:.3f}, σ={record.sigma:.4f}, "
                    f"matmul {record.matmul_tflops:.1f} TFLOP/s")  # fmt: skip


def stage_loop(out: Path) -> Row:
    from autoresearch.client.loop import AgentLoop, LoopOptions
    from autoresearch.client.proposers.offline import OfflineProposer
    from autoresearch.client.workspace import Workspace
    from autoresearch.trainer import tracks

    start = time.monotonic()
    track = tracks.get_track("tiny")
    ws = Workspace.init(out / "loop-ws", track="tiny", reference_source=tracks.reference_source(track), program_md="gpu check\n")
    stats = AgentLoop(ws, track, OfflineProposer(seed=1), LoopOptions(tag="gpu-check", max_experiments=2)).run()
    return Row(stage="loop", model="offline proposer, tiny", steps=stats.runs, wall_seconds=time.monotonic() - start,
               note=f"{stats.runs} runs (baseline + 1 experiment), {stats.keeps} kept, {stats.discards} discarded")  # fmt: skip


# --------------------------------------------------------------------------------------------------
# Main


def _guard(stage: str, fn: Callable[[], Row | list[Row]]) -> list[Row]:
    start = time.monotonic()
    try:
        got = fn()
    except Exception as exc:  # one broken stage is a row of the table, not the end of the check
        tail = traceback.format_exception(exc)[-1].strip()
        print(f"gpu-check: {stage} failed: {tail}", file=sys.stderr, flush=True)
        return [Row(stage=stage, outcome="error", wall_seconds=time.monotonic() - start, note=tail[:300],
                    extra={"traceback": "".join(traceback.format_exception(exc))[-4000:]})]  # fmt: skip
    rows = got if isinstance(got, list) else [got]
    for row in rows:
        print(f"gpu-check: {row.stage} {row.model}: {row.outcome}", file=sys.stderr, flush=True)
    return rows


def _comparison(rows: list[Row]) -> dict[str, float]:
    ours = next((r for r in rows if r.stage == "climbmix" and r.model == "reference" and r.outcome == "ok"), None)
    up = next((r for r in rows if r.stage == "climbmix" and r.model == "upstream-sdpa" and r.outcome == "ok"), None)
    if ours is None or up is None or not ours.tokens_per_second or not up.tokens_per_second:
        return {}
    out = {"tokens_per_second_ratio": ours.tokens_per_second / up.tokens_per_second}
    if ours.val_bpb is not None and up.val_bpb is not None:
        out["val_bpb_delta"] = ours.val_bpb - up.val_bpb
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("out_dir", type=Path, help="folder for the results (created)")
    parser.add_argument("--budget", type=float, default=30.0, help="climbmix training seconds per model")
    parser.add_argument("--eval-rows", type=int, default=32, help="climbmix evaluation rows of 2048 tokens")
    parser.add_argument("--only", default=None, help=f"comma-separated stages out of {','.join(STAGES)}")
    args = parser.parse_args(argv)
    out: Path = args.out_dir.resolve()
    out.mkdir(parents=True, exist_ok=True)
    reason = cuda_unavailable()
    if reason is not None:
        print(f"gpu-check: skipped: {reason}", flush=True)
        (out / "gpu_check.json").write_text(json.dumps({"skipped": reason}, indent=2) + "\n", encoding="utf-8")
        return 0
    stages = args.only.split(",") if args.only else list(STAGES)
    unknown = sorted(set(stages) - set(STAGES))
    if unknown:
        parser.error(f"unknown stages {unknown}; known: {', '.join(STAGES)}")
    # upstream's cache under our HOME (the harness reuses it in place), our own cache empty beside it
    os.environ["HOME"] = str(out / "home")
    os.environ["AUTORESEARCH_CACHE"] = str(out / "cache")
    for var in ("GIT_AUTHOR_NAME", "GIT_COMMITTER_NAME"):  # the loop commits each experiment
        os.environ.setdefault(var, "gpu-check")
    for var in ("GIT_AUTHOR_EMAIL", "GIT_COMMITTER_EMAIL"):
        os.environ.setdefault(var, "gpu-check@localhost")
    import torch

    from autoresearch.trainer import hardware

    started = time.monotonic()
    rows: list[Row] = []
    plan: dict[str, Callable[[], Row | list[Row]]] = {
        "cache": lambda: stage_cache(out),
        "kernels": stage_kernels,
        "climbmix": lambda: stage_climbmix(out, args.budget, args.eval_rows),
        "tiny": lambda: stage_cpu_track(out, "tiny", None),
        "cpu": lambda: stage_cpu_track(out, "cpu", 10.0),
        "tiny@cuda": lambda: stage_cpu_track_on_cuda(out, "tiny"),
        "cpu@cuda": lambda: stage_cpu_track_on_cuda(out, "cpu"),
        "calibration": lambda: stage_calibration(out),
        "loop": lambda: stage_loop(out),
    }
    if "climbmix" in stages and "cache" not in stages and not (out / "home" / ".cache" / "autoresearch" / "tokenizer").is_dir():
        stages.insert(0, "cache")
    for stage in STAGES:
        if stage in stages:
            rows += _guard(stage, plan[stage])
    name = torch.cuda.get_device_name()
    peak, estimated = hardware.peak_flops(name)
    summary = {
        "device": name, "hardware_class": hardware.hardware_class("cuda"), "peak_flops": peak, "peak_estimated": estimated,
        "torch": torch.__version__, "cuda": torch.version.cuda, "date": time.strftime("%Y-%m-%d"),
        "budget_seconds": args.budget, "eval_rows": args.eval_rows, "wall_seconds": time.monotonic() - started,
        "comparison": _comparison(rows), "rows": [asdict(r) for r in rows],
    }  # fmt: skip
    text = table(rows)
    header = (f"GPU check on {summary['hardware_class']} ({summary['date']}, torch {summary['torch']}, CUDA {summary['cuda']}; "
              f"peak {peak / 1e12:.0f} TFLOP/s{' estimated' if estimated else ''}; climbmix layout from the shipped corpus, "
              f"{args.budget:g} s budget, {args.eval_rows} eval rows; wall {summary['wall_seconds']:.0f} s)")  # fmt: skip
    cmp = summary["comparison"]
    footer = (f"\nreference vs upstream-sdpa: tokens/s × {cmp['tokens_per_second_ratio']:.3f}"
              + (f", Δ val_bpb {cmp['val_bpb_delta']:+.4f}" if "val_bpb_delta" in cmp else "")) if cmp else ""  # fmt: skip
    (out / "gpu_check.json").write_text(json.dumps(summary, indent=2, default=str) + "\n", encoding="utf-8")
    (out / "gpu_check.md").write_text(f"{header}\n\n{text}\n{footer}\n", encoding="utf-8")
    print(f"{header}\n\n{text}\n{footer}", flush=True)
    return 0 if all(r.outcome == "ok" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
