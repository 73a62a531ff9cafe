"""The harness subprocess: load the track data, run ``train(h)`` from a ``train.py`` under the budget
clock, evaluate the returned model, write ``result.json`` and print the summary block.

Started by :func:`autoresearch.trainer.run.run_training` as
``python -m autoresearch.trainer.harness --train-py F --track-json J --run-dir D --seed S
--progress-fd N``; not meant to be run by hand. Every failure of ``train.py`` ends as an outcome in
``result.json``, never as an exception of this process.

The contract with ``train.py`` (docs/trainer.md): it defines ``train(h) -> torch.nn.Module``; the
returned module maps token ids ``(B, T)`` to logits ``(B, T, vocab_size)``. The harness measures
val_bpb on it with :func:`autoresearch.trainer.evaluate.evaluate_bpb`; it never reads what
``train.py`` prints.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import logging
import math
import os
import sys
import time
import traceback
from pathlib import Path
from types import ModuleType
from typing import Literal, TextIO

import numpy as np
import torch

from autoresearch.protocol import Outcome, RunMetrics, TrackSpec

from . import data, hardware, tracks
from .evaluate import ContractError, check_causal, evaluate_bpb
from .result import (
    ProgressEvent,
    RunResult,
    TrainProgress,
    summary_block,
    truncate_error,
    write_result,
)

_logger = logging.getLogger(__name__)

PROGRESS_INTERVAL = 0.25  # seconds between progress events sent to the parent


class BudgetExhausted(BaseException):  # noqa: N818 - a control-flow signal, like StopIteration
    """Raised by ``h.next_batch`` once training time passed the over-budget limit.

    A BaseException so that a ``train.py`` catching ``Exception`` does not swallow it; the harness
    also records the fact on the handle, so catching it anyway changes nothing.
    """


class NonFiniteLoss(BaseException):  # noqa: N818
    """Raised by ``h.report`` for a NaN or infinite loss (outcome ``nan``)."""


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
            # died (kill -9, SIGTERM), nobody will read our result, and we must not train on as an
            # orphan in our own session.
            _logger.error("progress pipe closed (%s): the parent process is gone; stopping", exc)
            os._exit(3)


class Handle:
    """What ``train(h)`` gets: data, sizes, the budget clock and a progress channel.

    Clock rule (docs/trainer.md): the training clock starts at the ``warmup_batches + 1``-th
    :meth:`next_batch` call, or ``warmup_seconds`` after ``train`` was called, whichever is first,
    and stops when ``train`` returns. All times are seconds on ``time.monotonic``.
    """

    def __init__(
        self,
        track: TrackSpec,
        limits: tracks.HarnessLimits,
        corpus: data.TokenizedCorpus,
        device: torch.device,
        seed: int,
        progress: ProgressWriter,
    ) -> None:
        self.device = device
        self.vocab_size = corpus.vocab_size
        self.max_seq_len = track.max_seq_len
        self.time_budget = float(track.time_budget)
        self.bos_id = corpus.bos_id
        self.seed = seed
        self._limits = limits
        self._progress = progress
        self._corpus = corpus
        self._packers: dict[int, data.BestFitPacker] = {}  # by row length T, one data stream each
        self._t_train: float | None = None
        self._clock_start: float | None = None
        self._clock_stop: float | None = None
        self._last_emit = 0.0
        self._last_report: float | None = None
        self.step_seconds = 0.0  # duration of the last step on the clock (between two reports)
        self.batches = 0
        self.total_tokens = 0
        self.timed_tokens = 0  # tokens drawn after the clock started (for tokens/s and MFU)
        self.num_steps = 0
        self.last_loss: float | None = None
        self.nonfinite: str | None = None  # why the loss was declared non-finite
        self.over_budget = False

    # --- clock -------------------------------------------------------------------------------------
    def _start(self) -> None:
        self._t_train = time.monotonic()
        self._progress.send(ProgressEvent(kind="phase", phase="train"))

    def _tick(self) -> float:
        now = time.monotonic()
        if self._clock_start is None and self._t_train is not None:
            allowance_end = self._t_train + self._limits.warmup_seconds
            if now >= allowance_end:
                self._start_clock(allowance_end)
        return now

    def _start_clock(self, at: float) -> None:
        self._clock_start = at
        self._progress.send(ProgressEvent(kind="phase", phase="clock"))

    def _stop(self) -> float:
        self._tick()
        self._clock_stop = time.monotonic()
        return self.training_seconds()

    def training_seconds(self) -> float:
        """Seconds on the training clock so far (0 before it starts)."""
        end = self._clock_stop if self._clock_stop is not None else self._tick()
        return 0.0 if self._clock_start is None else max(0.0, end - self._clock_start)

    def over_budget_limit(self) -> float:
        """Training seconds past which the run is ``over_budget``."""
        return self.time_budget * (1 + self._limits.budget_tolerance) + self._limits.budget_slack_seconds

    # --- API for train.py --------------------------------------------------------------------------
    def time_left(self) -> float:
        """Seconds of budget left (negative once over)."""
        return self.time_budget - self.training_seconds()

    def should_stop(self) -> bool:
        """True when the step about to start would end nearer past the budget than the last one
        ended before it: ``training_seconds + step_seconds / 2 >= time_budget``, with
        ``step_seconds`` the duration of the last reported step. Stopping then makes the expected
        overshoot zero instead of half a step, which keeps slow steps (a loaded CPU) clear of
        ``over_budget``. Return the model when this is True.
        """
        return self.training_seconds() + self.step_seconds / 2 >= self.time_budget

    def progress(self) -> float:
        """Fraction of the budget used, 0 at the clock start, 1 at the budget (can exceed 1)."""
        return self.training_seconds() / self.time_budget

    def next_batch(self, batch_size: int, seq_len: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The next training batch: inputs and targets, each ``(batch_size, seq_len)`` long on
        ``h.device`` (``seq_len`` defaults to ``max_seq_len``); every row starts with BOS, no padding.

        Raises:
            BudgetExhausted: training time is past the over-budget limit.
            ValueError: ``batch_size`` is not a positive int, or ``seq_len`` not in 1..max_seq_len.
        """
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        T = self.max_seq_len if seq_len is None else seq_len
        if not isinstance(T, int) or not 1 <= T <= self.max_seq_len:
            raise ValueError(f"seq_len must be an int in 1..{self.max_seq_len}, got {seq_len!r}")
        now = self._tick()
        if self._clock_start is None and self.batches >= self._limits.warmup_batches:
            self._start_clock(now)
        if self.training_seconds() > self.over_budget_limit():
            self.over_budget = True
            raise BudgetExhausted(f"training time passed {self.over_budget_limit():.1f} s")
        if T not in self._packers:
            self._packers[T] = data.BestFitPacker(self._corpus.train_stream(self.seed), T + 1, self.bos_id)
        packer = self._packers[T]
        rows = np.stack([packer.next_row() for _ in range(batch_size)])  # type: ignore[misc]
        batch = torch.from_numpy(rows)
        if self.device.type == "cuda":
            batch = batch.pin_memory().to(self.device, non_blocking=True)
        self.batches += 1
        n = batch_size * T
        self.total_tokens += n
        if self._clock_start is not None:
            self.timed_tokens += n
        return batch[:, :-1].contiguous(), batch[:, 1:].contiguous()

    def report(self, step: int, loss: float) -> None:
        """Report one optimizer step's loss (nats per token). A NaN/inf loss ends the run as ``nan``.

        Raises:
            NonFiniteLoss: ``loss`` is not finite.
        """
        value = float(loss)
        self.num_steps += 1
        self.last_loss = value
        now = time.monotonic()
        if self._last_report is not None and self._clock_start is not None and self._last_report >= self._clock_start:
            self.step_seconds = now - self._last_report
        self._last_report = now
        if not math.isfinite(value):
            self.nonfinite = f"non-finite training loss {value} at step {step}"
            self._emit(step, value)
            raise NonFiniteLoss(self.nonfinite)
        if now - self._last_emit >= PROGRESS_INTERVAL:
            self._emit(step, value)

    def _emit(self, step: int, loss: float) -> None:
        self._last_emit = time.monotonic()
        self._progress.send(
            ProgressEvent(
                kind="progress",
                progress=TrainProgress(step=step, loss=loss, training_seconds=self.training_seconds(), time_budget=self.time_budget),
            )
        )


# --------------------------------------------------------------------------------------------------
# Run


def _is_oom(exc: BaseException) -> bool:
    if isinstance(exc, torch.cuda.OutOfMemoryError | MemoryError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def _tail(exc: BaseException) -> str:
    return truncate_error("".join(traceback.format_exception(exc)))


def _load_train_py(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location("train", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules["train"] = module
    spec.loader.exec_module(module)
    if not callable(getattr(module, "train", None)):
        raise AttributeError(f"{path.name} defines no train(h) function")
    return module


def _device(track: TrackSpec) -> torch.device:
    if track.device == "cpu":
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device("cuda")
    if track.device == "cuda":
        raise RuntimeError(f"track {track.name} needs a CUDA GPU and torch sees none")
    return torch.device("cpu")


class _Run:
    """State of one harness run, turned into a :class:`RunResult` at the end."""

    def __init__(self, args: argparse.Namespace) -> None:
        # the parent's spawn time (CLOCK_MONOTONIC is system-wide on Linux), so imports count
        self.t0 = args.spawned_at if args.spawned_at is not None else time.monotonic()
        self.args = args
        self.track = TrackSpec.model_validate_json(Path(args.track_json).read_text(encoding="utf-8"))
        self.limits = tracks.limits(self.track)
        self.progress = ProgressWriter(args.progress_fd)
        self.metrics: dict[str, object] = {}
        self.outcome: Outcome | None = None
        self.error: str | None = None
        self.mfu_estimated = False
        self.device: torch.device | None = None
        self.sha = hashlib.sha256(Path(args.train_py).read_bytes()).hexdigest() if Path(args.train_py).is_file() else None

    def fail(self, outcome: Outcome, error: str) -> None:
        if self.outcome is None:
            self.outcome, self.error = outcome, error

    def execute(self) -> None:
        try:
            self.device = _device(self.track)
            corpus = data.load_corpus(self.track)
            rows = torch.from_numpy(data.eval_rows(corpus, self.track.max_seq_len, self.track.eval_tokens))
            token_bytes = torch.from_numpy(corpus.token_bytes)
        except (data.DataError, RuntimeError, OSError) as exc:
            self.fail("crash", f"harness could not prepare track {self.track.id}: {exc}")
            return
        if self.limits.num_threads is not None and "OMP_NUM_THREADS" not in os.environ:
            torch.set_num_threads(self.limits.num_threads)
        torch.manual_seed(self.args.seed)
        np.random.seed(self.args.seed % 2**32)
        try:
            module = _load_train_py(Path(self.args.train_py))
        except (Exception, SystemExit) as exc:  # a broken train.py is an outcome, not our crash
            self.fail("oom" if _is_oom(exc) else "crash", _tail(exc))
            return
        h = Handle(self.track, self.limits, corpus, self.device, self.args.seed, self.progress)
        self.metrics["startup_seconds"] = time.monotonic() - self.t0
        model = self._train(module, h)
        self._training_metrics(module, h, model)
        if self.outcome is None and model is not None:
            self._evaluate(model, rows, token_bytes)

    def _train(self, module: ModuleType, h: Handle) -> torch.nn.Module | None:
        h._start()
        model = None
        try:
            model = module.train(h)
        except BudgetExhausted:
            pass
        except NonFiniteLoss:
            pass
        except (Exception, SystemExit) as exc:
            if h.nonfinite is None and not h.over_budget:
                self.fail("oom" if _is_oom(exc) else "crash", _tail(exc))
        training_seconds = h._stop()
        self.metrics["training_seconds"] = training_seconds
        if h.nonfinite is not None:
            self.fail("nan", h.nonfinite)
        if h.over_budget or training_seconds > h.over_budget_limit():
            self.fail("over_budget", f"training took {training_seconds:.2f} s; budget {h.time_budget:g} s, limit {h.over_budget_limit():.2f} s")
        if self.outcome is None and not isinstance(model, torch.nn.Module):
            self.fail("crash", f"train(h) must return a torch.nn.Module, got {type(model).__name__}")
        return model if isinstance(model, torch.nn.Module) else None

    def _training_metrics(self, module: ModuleType, h: Handle, model: torch.nn.Module | None) -> None:
        m = self.metrics
        m["total_tokens"] = h.total_tokens
        m["num_steps"] = h.num_steps
        depth = getattr(module, "DEPTH", None)
        m["depth"] = depth if isinstance(depth, int) and depth >= 0 else None
        seconds = float(m["training_seconds"])  # type: ignore[arg-type]
        m["tokens_per_second"] = h.timed_tokens / seconds if seconds > 0 else None
        assert self.device is not None
        m["peak_vram_mib"] = torch.cuda.max_memory_allocated() / 2**20 if self.device.type == "cuda" else 0.0
        if model is None:
            return
        m["num_params"] = sum(p.numel() for p in model.parameters())
        estimate = getattr(model, "estimate_flops", None)
        flops_per_token = float(estimate()) if callable(estimate) else 6.0 * float(m["num_params"])  # type: ignore[arg-type]
        name = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else None
        peak, self.mfu_estimated = hardware.peak_flops(name)
        if seconds > 0 and math.isfinite(flops_per_token) and flops_per_token > 0:
            m["mfu_percent"] = 100.0 * flops_per_token * h.timed_tokens / seconds / peak

    def _evaluate(self, model: torch.nn.Module, rows: torch.Tensor, token_bytes: torch.Tensor) -> None:
        self.progress.send(ProgressEvent(kind="phase", phase="eval"))
        assert self.device is not None
        t = time.monotonic()
        try:
            check_causal(model, rows, device=self.device)
        except ContractError as exc:
            self.fail("crash", str(exc))
            return
        except Exception as exc:
            self.fail("eval_crash", _tail(exc))
            return
        batch_size = self.limits.eval_batch_size
        last: BaseException | None = None
        while batch_size >= 1:
            try:
                val_bpb = evaluate_bpb(model, rows, token_bytes, batch_size=batch_size, device=self.device)
                break
            except ContractError as exc:
                self.fail("crash", str(exc))
                return
            except Exception as exc:  # retry smaller so a long run is not lost to an eval OOM
                last = exc
                _logger.warning("evaluation failed at batch size %d (%s); retrying smaller", batch_size, exc)
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                batch_size //= 2
        else:
            assert last is not None
            self.fail("eval_crash", _tail(last))
            return
        self.metrics["eval_seconds"] = time.monotonic() - t
        if not math.isfinite(val_bpb):
            self.fail("nan", f"val_bpb is {val_bpb}: the returned model gives non-finite logits")
            return
        self.metrics["val_bpb"] = val_bpb
        self.outcome = "ok"

    def result(self) -> RunResult:
        self.metrics["total_seconds"] = time.monotonic() - self.t0
        outcome: Outcome = self.outcome or "crash"
        values = {k: v for k, v in self.metrics.items() if v is not None}
        for key, value in list(values.items()):
            if isinstance(value, float) and not math.isfinite(value):
                del values[key]
        if outcome != "ok":
            values.pop("val_bpb", None)
        dev: Literal["cpu", "auto"] = "cpu" if self.track.device == "cpu" else "auto"
        return RunResult(
            outcome=outcome,
            metrics=RunMetrics.model_validate(values, strict=False),
            error=self.error,
            log_path=Path(self.args.log_path) if self.args.log_path else Path(self.args.run_dir) / "run.log",
            seed=self.args.seed,
            track=self.track.id,
            harness_version=tracks.HARNESS_VERSION,
            train_py_sha256=self.sha,
            hardware_class=hardware.hardware_class_for(self.track.device),
            software=hardware.software_versions(dev),
            mfu_estimated=self.mfu_estimated,
        )


def main(argv: list[str] | None = None) -> int:
    """Entry point of the harness subprocess; returns 0 once ``result.json`` is written."""
    parser = argparse.ArgumentParser(prog="python -m autoresearch.trainer.harness")
    parser.add_argument("--train-py", required=True)
    parser.add_argument("--track-json", required=True)
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--seed", type=int, default=0)
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
