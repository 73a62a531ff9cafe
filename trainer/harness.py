"""The harness process: owns the data, the budget clock and the metric; runs ``train.py`` only in
sandboxed workers (trusted side — this process never imports ``train.py`` nor anything it defines,
and imports no torch).

Started by :func:`autoresearch.trainer.run.run_training` as ``python -m autoresearch.trainer.harness
--train-py F --track-json J --run-dir D --seed S --isolation sandbox|process --progress-fd N``; not
meant to be run by hand. One run (docs/trainer.md, docs/security.md):

1. A **training worker** starts in its cage (:mod:`.sandbox`) while the harness loads the track's
   data. When the worker has loaded torch it says hello; the harness checks its lockdown from
   outside, hands it the track and starts the budget clock (:mod:`.budget`).
2. The worker imports ``train.py`` and calls ``train(h)``; every batch comes from the harness over
   its socket, counted on the harness's clock. Past the over-budget limit the harness refuses the
   next batch and stops the worker; a NaN loss report ends the run as ``nan``. When ``train``
   returns, the worker sends the model's ``torch.save`` bytes (size-capped) and the clock stops.
3. Two **evaluation workers**, fresh sandboxed processes that can write nothing, load the model.
   Worker A scores every evaluation row; worker B scores causality probes and replays in batches of
   the same shape; the harness computes val_bpb from A's scores and checks B against A
   (:mod:`.evaluate`). A failed probe is the outcome ``rejected``, naming the probe. The saved
   model's hash is checked unchanged afterwards.

Every failure of ``train.py`` ends as an outcome in ``result.json``, never as an exception here.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import logging
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import BinaryIO, Literal, TextIO

import numpy as np
from pydantic import ValidationError

from autoresearch.protocol import Outcome, RunMetrics, TrackSpec, parse_source

from . import data, evaluate, hardware, sandbox, tracks
from .budget import BudgetClock
from .result import (
    ProgressEvent,
    RunResult,
    TrainProgress,
    loss_curve,
    summary_block,
    truncate_error,
    write_result,
)
from .supervisor import (
    Audit,
    BatchRequest,
    Failure,
    Hello,
    Loaded,
    ModelReady,
    Report,
    Scores,
    Worker,
    WorkerError,
    check_lockdown,
)

_logger = logging.getLogger(__name__)

PROGRESS_INTERVAL = 0.25  # seconds between progress events sent to the parent
TICK = 0.2  # seconds between the harness's own deadline checks while a worker is quiet
MAX_BATCH_TOKENS = 1 << 22  # largest batch the harness packs for one h.next_batch call
MAX_LOSS_REPORTS = 8192  # loss reports kept for the curve before thinning


class ProgressWriter:
    """JSON lines of :class:`ProgressEvent` on the pipe to the parent (or nowhere)."""

    def __init__(self, fd: int | None) -> None:
        self._fh: TextIO | None = os.fdopen(fd, "w", buffering=1, encoding="utf-8") if fd is not None else None

    def send(self, event: ProgressEvent) -> None:
        if self._fh is None:
            return
        try:
            self._fh.write(event.model_dump_json() + "\n")
        except (BrokenPipeError, OSError) as exc:
            # The parent (run_training) holds the read end until we exit: a closed pipe means it
            # died (kill -9, SIGTERM), nobody will read our result, and we must not go on as an
            # orphan (our workers die with us: --die-with-parent).
            _logger.error("progress pipe closed (%s): the parent process is gone; stopping", exc)
            os._exit(3)


class _Stop(Exception):
    """Ends a phase early; the outcome is already recorded on the run."""


def _depth_of(source: str) -> int | None:
    """``DEPTH = <int>`` at module level of ``train.py`` (read, never run), for the summary block."""
    try:
        tree = parse_source(source)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "DEPTH" for t in node.targets):
            value = node.value
            if isinstance(value, ast.Constant) and isinstance(value.value, int) and not isinstance(value.value, bool):
                return value.value if value.value >= 0 else None
    return None


class _Run:
    """State of one harness run, turned into a :class:`RunResult` at the end."""

    def __init__(self, args: argparse.Namespace) -> None:
        # the parent's spawn time (CLOCK_MONOTONIC is system-wide on Linux), so imports count
        self.t0 = args.spawned_at if args.spawned_at is not None else time.monotonic()
        self.args = args
        self.run_dir = Path(args.run_dir)
        self.track = TrackSpec.model_validate_json(Path(args.track_json).read_text(encoding="utf-8"))
        self.limits = tracks.limits(self.track)
        self.progress = ProgressWriter(args.progress_fd)
        self.metrics: dict[str, object] = {}
        self.outcome: Outcome | None = None
        self.error: str | None = None
        self.mfu_estimated = False
        self.flops_per_token: float | None = None  # the model's own estimate (or 6·params); untrusted
        self.probes = 0
        self.eval_peak_vram = 0.0  # MiB, the evaluation workers' CUDA peak (reported; display only)
        self.losses: list[tuple[int, float, float]] = []  # (step, clock seconds, loss) as reported
        self.train_py = Path(args.train_py)
        source = self.train_py.read_bytes() if self.train_py.is_file() else b""
        self.sha = hashlib.sha256(source).hexdigest() if self.train_py.is_file() else None
        self.metrics["depth"] = _depth_of(source.decode("utf-8", errors="replace"))
        self.isolation: sandbox.Isolation = args.isolation
        self.support = sandbox.detect() if self.isolation == "sandbox" else sandbox.Support("process")
        self.gpu = hardware.gpu_name() if self.track.device != "cpu" else None
        self.device = "cuda" if self.gpu is not None else "cpu"
        self.workers: list[Worker] = []
        self.scratch = Path(tempfile.mkdtemp(prefix="ar-worker-"))
        self.weights_dir = self.run_dir / "weights"
        self.log: BinaryIO = sys.stdout.buffer
        self.rng = np.random.default_rng(int.from_bytes(os.urandom(16), "little"))

    def fail(self, outcome: Outcome, error: str) -> None:
        if self.outcome is None:
            self.outcome, self.error = outcome, error

    # --- workers -----------------------------------------------------------------------------------
    def _spawn(self, role: Literal["train", "eval"], label: str, max_payload: dict[str, int]) -> Worker:
        limits = self.limits
        rlimits: dict[str, int] = {"file_size": limits.tmp_bytes, "open_files": 1024, "core": 0}
        if limits.memory_bytes is not None and self.device == "cpu":
            rlimits["address_space"] = limits.memory_bytes
        home = "/scratch" if self.isolation == "sandbox" and role == "train" else "/tmp"
        scratch = self.scratch / label
        scratch.mkdir()
        spec = sandbox.WorkerSpec(
            role=role,
            train_py=self.train_py.resolve(),
            cuda=self.device == "cuda",
            tmp_bytes=limits.tmp_bytes,
            # evaluation workers start early (torch loads while training runs) at a lower priority
            lockdown={"rlimits": rlimits, "no_fork": limits.clock == "cpu", "nice": 10 if role == "eval" else 0},
            env=sandbox.worker_env(role, home if self.isolation == "sandbox" else str(scratch)),
            weights_dir=self.weights_dir if role == "eval" else None,
            hide=self._hidden(),
        )
        worker = Worker(spec, self.support, scratch, self.log, max_payload, label)
        self.workers.append(worker)
        return worker

    def _hidden(self) -> tuple[Path, ...]:
        """Host paths no worker may see, should the Python environment contain them (data, this run)."""
        paths = [tracks.pycorpus_path().parent, self.run_dir.resolve()]
        if self.track.name == "climbmix":
            from . import climbmix

            paths += [climbmix.cache_root(), climbmix.upstream_root()]
        return tuple(paths)

    def _greet(self, worker: Worker, setup: dict[str, object], deadline: float) -> Hello:
        """Wait for the worker's hello, check its lockdown from outside, hand it ``setup``."""
        msg, _ = worker.expect(Hello, deadline - time.monotonic())
        if isinstance(msg, Failure):
            raise WorkerError(msg.message)
        assert isinstance(msg, Hello)
        check_lockdown(worker.locate(), no_fork=self.limits.clock == "cpu")
        worker.send({"op": "setup", **setup})
        return msg

    def execute(self) -> None:
        try:
            self._execute()
        except _Stop:
            pass
        except WorkerError as exc:
            self.fail(exc.outcome, str(exc))
        except sandbox.SandboxUnavailable as exc:
            self.fail("crash", f"{exc} (hint: {exc.hint})")
        finally:
            for worker in self.workers:
                worker.kill()
            shutil.rmtree(self.scratch, ignore_errors=True)
            shutil.rmtree(self.weights_dir, ignore_errors=True)

    def _execute(self) -> None:
        if self.track.device == "cuda" and self.gpu is None:
            self.fail("crash", f"track {self.track.name} needs a CUDA GPU and NVML sees none")
            return
        shutil.rmtree(self.weights_dir, ignore_errors=True)
        self.weights_dir.mkdir(parents=True)
        trainer = self._spawn("train", "train.py", {"model": self.limits.max_model_bytes})
        try:
            corpus = data.load_corpus(self.track)
            rows = data.eval_rows(corpus, self.track.max_seq_len, self.track.eval_tokens)
        except (data.DataError, OSError, ValueError) as exc:
            self.fail("crash", f"harness could not prepare track {self.track.id}: {exc}")
            return
        hello = self._greet(trainer, self._setup(corpus, train=True), self.t0 + self.limits.startup_seconds)
        self.metrics["startup_seconds"] = time.monotonic() - self.t0
        self.software_cuda = hello.cuda
        clock = self._clock(trainer)
        clock.begin()
        self.progress.send(ProgressEvent(kind="phase", phase="train"))
        if clock.started:
            self.progress.send(ProgressEvent(kind="phase", phase="clock"))
        scorers: list[Worker] = []
        blob, peak = self._serve(trainer, clock, corpus, scorers)
        trainer.finish()
        self.metrics["training_seconds"] = clock.stop()
        self.metrics["training_wall_seconds"] = clock.wall_seconds()
        self.metrics["peak_vram_mib"] = peak
        if blob is None or self.outcome is not None:
            return
        if not scorers:  # train(h) returned without asking for a single batch
            scorers += [self._spawn("eval", name, {}) for name in ("eval", "probe")]
        weights = self.weights_dir / "model.pt"
        tmp = weights.with_suffix(".tmp")
        tmp.write_bytes(blob)
        os.replace(tmp, weights)
        digest = hashlib.sha256(blob).hexdigest()
        del blob
        self._evaluate(scorers, corpus, rows)
        if hashlib.sha256(weights.read_bytes()).hexdigest() != digest:
            self.outcome, self.error = "rejected", "the saved model changed during evaluation"
            self.metrics.pop("val_bpb", None)

    def _setup(self, corpus: data.TokenizedCorpus, *, train: bool) -> dict[str, object]:
        setup: dict[str, object] = {"device": self.device, "vocab_size": corpus.vocab_size, "seed": self.args.seed,
                                    "num_threads": self._threads()}  # fmt: skip
        if train:
            setup.update(max_seq_len=self.track.max_seq_len, bos_id=corpus.bos_id, time_budget=float(self.track.time_budget),
                         clock=self.limits.clock)  # fmt: skip
        return setup

    def _threads(self) -> int | None:
        if self.limits.num_threads is None or "OMP_NUM_THREADS" in os.environ:
            return None  # the user's OMP_NUM_THREADS (passed to the worker) decides
        return self.limits.num_threads

    def _cpu_threads(self) -> int | None:
        """The torch threads the training worker used on the CPU (for the CPU's measured peak)."""
        threads = self._threads()
        if threads is not None:
            return threads
        try:
            return int(os.environ["OMP_NUM_THREADS"])
        except (KeyError, ValueError):
            return None

    def _clock(self, trainer: Worker) -> BudgetClock:
        limits, budget = self.limits, float(self.track.time_budget)
        return BudgetClock(
            limits.clock, budget, budget * (1 + limits.budget_tolerance) + limits.budget_slack_seconds,
            warmup_batches=limits.warmup_batches, warmup_seconds=limits.warmup_seconds, cpu_seconds=trainer.cpu_seconds,
        )  # fmt: skip

    # --- training ----------------------------------------------------------------------------------
    def _serve(
        self, trainer: Worker, clock: BudgetClock, corpus: data.TokenizedCorpus, scorers: list[Worker]
    ) -> tuple[bytes | None, float]:
        """Serve batches until the model arrives; returns ``(model bytes or None, peak VRAM MiB)``.

        The two evaluation workers are started at the first batch request (``scorers`` is filled
        then), so they load torch while training runs.
        """
        limits = self.limits
        wall_limit = limits.wall_factor * self.track.time_budget + limits.grace_seconds + limits.warmup_seconds
        packers: dict[int, data.BestFitPacker] = {}
        ahead: tuple[tuple[int, int], np.ndarray] | None = None
        tokens = timed = 0
        steps = 0
        last_emit = 0.0
        try:
            while True:
                if clock.over():
                    self._over_budget(clock)
                if clock.wall_seconds() > wall_limit:
                    raise WorkerError(f"training ran longer than {wall_limit:g} s of wall time; killed", outcome="timeout")
                got = trainer.recv(TICK)
                if got is None:
                    continue
                msg, payload = got
                if isinstance(msg, BatchRequest):
                    if not scorers:
                        scorers += [self._spawn("eval", name, {}) for name in ("eval", "probe")]
                    clock.on_batch()
                    if clock.over():
                        trainer.send({"op": "stop", "reason": "training time passed the over-budget limit"})
                        self._over_budget(clock)
                    B, T = msg.batch_size, msg.seq_len
                    if T > self.track.max_seq_len or B * (T + 1) > MAX_BATCH_TOKENS:
                        raise WorkerError(f"h.next_batch({B}, {T}) is outside the track's limits "
                                          f"(seq_len ≤ {self.track.max_seq_len}, ≤ {MAX_BATCH_TOKENS} tokens)")  # fmt: skip
                    if ahead is not None and ahead[0] == (B, T):
                        batch = ahead[1]
                    else:
                        batch = self._pack(packers, corpus, B, T)
                    started = clock.started
                    trainer.send({"op": "batch", "clock": clock.seconds(), "clock_started": started}, batch.tobytes())
                    tokens += B * T
                    if started:
                        timed += B * T
                    ahead = ((B, T), self._pack(packers, corpus, B, T))  # prepared while the worker computes
                elif isinstance(msg, Report):
                    steps += 1
                    if msg.loss is None:
                        self.fail("nan", f"non-finite training loss at step {msg.step}")
                        raise _Stop
                    if len(self.losses) >= MAX_LOSS_REPORTS:
                        del self.losses[::2]  # keep the curve's shape, bounded in memory
                    self.losses.append((msg.step, clock.seconds(), msg.loss))
                    now = time.monotonic()
                    if now - last_emit >= PROGRESS_INTERVAL:
                        last_emit = now
                        progress = TrainProgress(step=msg.step, loss=msg.loss, training_seconds=clock.seconds(),
                                                 time_budget=self.track.time_budget)  # fmt: skip
                        self.progress.send(ProgressEvent(kind="progress", progress=progress))
                elif isinstance(msg, ModelReady):
                    clock.stop()
                    if clock.over():
                        self._over_budget(clock)
                    return payload, msg.peak_vram_mib
                elif isinstance(msg, Failure):
                    self.fail("oom" if msg.oom else "crash", msg.message)
                    raise _Stop
                else:
                    raise WorkerError(f"the training worker sent {type(msg).__name__} during training")
        except (_Stop, WorkerError) as exc:
            if isinstance(exc, WorkerError):
                self.fail(exc.outcome, str(exc))
            trainer.kill()
            return None, 0.0
        finally:
            self.metrics.update(total_tokens=tokens, num_steps=steps)
            seconds = clock.seconds()
            self.metrics["tokens_per_second"] = timed / seconds if seconds > 0 else None
            self.progress.send(ProgressEvent(kind="phase", phase="eval"))

    def _over_budget(self, clock: BudgetClock) -> None:
        seconds = clock.stop()
        self.fail("over_budget", f"training took {seconds:.2f} s on the {clock.kind} clock; budget "
                                 f"{clock.time_budget:g} s, limit {clock.limit:.2f} s")  # fmt: skip
        raise _Stop

    def _pack(self, packers: dict[int, data.BestFitPacker], corpus: data.TokenizedCorpus, B: int, T: int) -> np.ndarray:
        if T not in packers:
            packers[T] = data.BestFitPacker(corpus.train_stream(self.args.seed), T + 1, corpus.bos_id)
        packer = packers[T]
        return np.stack([packer.next_row() for _ in range(B)]).astype(np.int32)  # type: ignore[misc]  # (B, T+1)

    # --- evaluation --------------------------------------------------------------------------------
    def _evaluate(self, scorers: list[Worker], corpus: data.TokenizedCorpus, rows: np.ndarray) -> None:
        t = time.monotonic()
        deadline = t + self.limits.eval_seconds
        for worker in scorers:
            self._greet(worker, self._setup(corpus, train=False), deadline)
            worker.send({"op": "load"})
        loaded: list[Loaded] = []
        for worker in scorers:
            msg, _ = worker.expect(Loaded, deadline - time.monotonic())
            if isinstance(msg, Failure):
                self.fail("eval_crash", msg.message)
                return
            assert isinstance(msg, Loaded)
            loaded.append(msg)
        self._model_metrics(loaded[0])
        main, probe = scorers
        vocab = corpus.vocab_size
        n_probe = min(self.limits.probe_batches * self.limits.eval_batch_size, 4 * len(rows))
        plan = evaluate.plan_probes(rows, n_probe, self.rng)
        scored = self._score_all(main, rows, plan.audits_a(), vocab, deadline)
        if scored is None:
            return
        (a_lse, a_tgt), a_rows, batch = scored
        targets = rows[:, 1:]
        if not (np.isfinite(a_lse).all() and np.isfinite(a_tgt).all()):
            self.fail("nan", "val_bpb is nan: the returned model gives non-finite logits")
            return
        checked = self._score_all(probe, plan.rows, plan.audits_b(), vocab, deadline, batch=batch)
        if checked is None:
            return
        b_scores, b_rows, _ = checked
        try:
            self.probes = evaluate.check_probes(plan, rows, (a_lse, a_tgt), b_scores, a_rows, b_rows, self.device)
        except evaluate.ProbeFailed as exc:
            self.fail("rejected", str(exc))
            return
        for worker in scorers:
            worker.send({"op": "done"})
            worker.finish()
        val_bpb = evaluate.bits_per_byte(a_lse, a_tgt, targets, corpus.token_bytes)
        self.metrics["eval_seconds"] = time.monotonic() - t
        peak = self.metrics.get("peak_vram_mib")  # upstream's figure includes evaluation
        self.metrics["peak_vram_mib"] = max(float(peak) if isinstance(peak, float) else 0.0, self.eval_peak_vram)
        if not math.isfinite(val_bpb) or val_bpb <= 0:
            self.fail("nan", f"val_bpb is {val_bpb}: the returned model's scores are not a distribution")
            return
        self.metrics["val_bpb"] = val_bpb
        self.outcome = "ok"

    def _score_all(
        self, worker: Worker, rows: np.ndarray, audits: dict[int, list[int]], vocab: int, deadline: float, batch: int | None = None
    ) -> tuple[tuple[np.ndarray, np.ndarray], dict[tuple[int, int], np.ndarray], int] | None:
        """Score ``rows`` ``(N, T+1)`` with ``worker`` in batches (halved after a failure), asking for the
        logit rows in ``audits`` after each batch. None when the outcome is already decided."""
        n, width = rows.shape
        T = width - 1
        lse = np.empty((n, T), dtype=np.float32)
        tgt = np.empty((n, T), dtype=np.float32)
        shown: dict[tuple[int, int], np.ndarray] = {}
        batch = batch or self.limits.eval_batch_size
        start = 0
        while start < n:
            stop = min(n, start + batch)
            chunk = np.ascontiguousarray(rows[start:stop], dtype=np.int32)
            size = 2 * (stop - start) * T * 4
            worker.payload_limits.update(scores=size, audit=0)
            worker.send({"op": "score", "rows": stop - start, "cols": width}, chunk.tobytes())
            msg, payload = worker.expect(Scores, deadline - time.monotonic())
            if isinstance(msg, Failure):
                if msg.kind == "contract":
                    self.fail("crash", msg.message)
                    return None
                if batch == 1:
                    self.fail("eval_crash", msg.message)
                    return None
                _logger.warning("evaluation failed at batch size %d; retrying smaller", batch)
                batch //= 2
                continue
            if len(payload) != size:
                raise WorkerError(f"the evaluation worker returned {len(payload)} bytes of scores, expected {size}")
            assert isinstance(msg, Scores)
            self.eval_peak_vram = max(self.eval_peak_vram, msg.peak_vram_mib)
            flat = np.frombuffer(payload, dtype=np.float32).reshape(2, stop - start, T)
            lse[start:stop], tgt[start:stop] = flat[0], flat[1]
            positions = [[i - start, p] for i in range(start, stop) for p in audits.get(i, [])]
            worker.payload_limits["audit"] = len(positions) * vocab * 4
            worker.send({"op": "audit", "positions": positions})
            msg, payload = worker.expect(Audit, deadline - time.monotonic())
            if isinstance(msg, Failure) or len(payload) != worker.payload_limits["audit"]:
                raise WorkerError("the evaluation worker did not show the logit rows it was asked for")
            full = np.frombuffer(payload, dtype=np.float32).reshape(len(positions), vocab) if positions else None
            for k, (i, p) in enumerate(positions):
                assert full is not None
                shown[(start + i, p)] = full[k]
            start = stop
        return (lse, tgt), shown, batch

    def _model_metrics(self, loaded: Loaded) -> None:
        """Parameter count and MFU from the model's own report (display figures, not the metric)."""
        m = self.metrics
        m["num_params"] = loaded.num_params
        flops = loaded.flops_per_token if loaded.flops_per_token else 6.0 * loaded.num_params
        self.flops_per_token = flops if math.isfinite(flops) and flops > 0 else None
        seconds = float(m.get("training_seconds") or 0.0)  # type: ignore[arg-type]
        tokens_per_second = m.get("tokens_per_second")
        peak, self.mfu_estimated = hardware.peak_flops(self.gpu, threads=self._cpu_threads() if self.gpu is None else None)
        if seconds > 0 and isinstance(tokens_per_second, float) and math.isfinite(flops) and flops > 0:
            m["mfu_percent"] = min(100.0 * flops * tokens_per_second / peak, 1e6)

    def result(self) -> RunResult:
        self.metrics["total_seconds"] = time.monotonic() - self.t0
        outcome: Outcome = self.outcome or "crash"
        values = {k: v for k, v in self.metrics.items() if v is not None}
        for key, value in list(values.items()):
            if isinstance(value, float) and not math.isfinite(value):
                del values[key]
        if outcome != "ok":
            values.pop("val_bpb", None)
        metrics, dropped = _valid_metrics(values)
        if "val_bpb" in dropped and outcome == "ok":
            outcome, self.error = "rejected", f"val_bpb {values['val_bpb']!r} is outside the range a record may carry"
        dev: Literal["cpu", "auto"] = "cpu" if self.track.device == "cpu" else "auto"
        software = hardware.software_versions(dev)
        if dev != "cpu" and getattr(self, "software_cuda", None):
            software = software.model_copy(update={"cuda": self.software_cuda})
        return RunResult(
            outcome=outcome,
            metrics=metrics,
            error=truncate_error(self.error) if self.error else None,
            log_path=Path(self.args.log_path) if self.args.log_path else self.run_dir / "run.log",
            seed=self.args.seed,
            track=self.track.id,
            harness_version=tracks.HARNESS_VERSION,
            train_py_sha256=self.sha,
            hardware_class=hardware.hardware_class_for(self.track.device),
            software=software,
            mfu_estimated=self.mfu_estimated,
            flops_per_token=self.flops_per_token,
            isolation=self.isolation,
            probes=self.probes,
            loss_curve=loss_curve(self.losses),
        )


def _valid_metrics(values: dict[str, object]) -> tuple[RunMetrics, set[str]]:
    """``RunMetrics`` of ``values`` without the fields outside the protocol's ranges (a model can
    report a silly FLOPs figure; no record may carry it). Returns the model and the fields dropped."""
    dropped: set[str] = set()
    while True:
        try:
            return RunMetrics.model_validate({k: v for k, v in values.items() if k not in dropped}, strict=False), dropped
        except ValidationError as exc:
            bad = {str(err["loc"][0]) for err in exc.errors() if err["loc"]}
            if not bad - dropped:
                raise
            dropped |= bad


def main(argv: list[str] | None = None) -> int:
    """Entry point of the harness subprocess; returns 0 once ``result.json`` is written."""
    parser = argparse.ArgumentParser(prog="python -m autoresearch.trainer.harness")
    parser.add_argument("--train-py", required=True)
    parser.add_argument("--track-json", required=True)
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--isolation", choices=("sandbox", "process"), default="sandbox")
    parser.add_argument("--progress-fd", type=int, default=None)
    parser.add_argument("--log-path", default=None)
    parser.add_argument("--spawned-at", type=float, default=None, help="parent's time.monotonic() at spawn")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    run = _Run(args)
    run.execute()
    result = run.result()
    write_result(result, Path(args.run_dir) / "result.json")
    sys.stdout.flush()
    print(summary_block(result), flush=True)  # the trainer's summary block: an interface, not a log
    if result.error:
        print(result.error, file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
