"""Calibration: the reference benchmark of one (hardware class, track, harness version).

:func:`calibrate` runs the track's reference ``train.py`` at budgets ¼, ½, 1 and 2 × ``TIME_BUDGET``
(seed 0), plus further seeds at the full budget, fits the reference curve ``bpb(t) = c + a·t^(−b)``
(client/fitting.py), measures seed noise σ, tokens/s and a matmul throughput figure, signs an
``autoresearch/calibration/v1`` record and caches its DSSE envelope under
``$AUTORESEARCH_HOME/calibrations/``. :func:`load_cached` returns it while hardware class, track id
and harness version stay the same; any change is a cache miss, i.e. a re-calibration.

:func:`ecm` and :func:`normalise` turn an experiment's val_bpb into the figures every experiment
record carries (DESIGN.md, "Calibration"): Δ vs parent, z = (parent − child)/σ, the effective
compute multiplier ECM = t*/TIME_BUDGET and gain = ECM(child)/ECM(parent). The method, its sources
and its assumptions are in docs/calibration.md.
"""

from __future__ import annotations

import logging
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist
from typing import TYPE_CHECKING

from autoresearch.protocol import (
    CALIBRATION_SCHEMA,
    CalibrationPoint,
    CalibrationRecord,
    Envelope,
    KeyPair,
    ProtocolError,
    TrackSpec,
    Verified,
    canonical_json,
    sha256_hex,
    sign,
    utc_now,
    verify,
)

# ecm and normalise: one definition, shared with the hub (which recomputes every record's figures)
from autoresearch.protocol.best import MIN_Z, OBS_SD, PRIOR_SD, TRUST_P
from autoresearch.protocol.best import ecm as ecm
from autoresearch.protocol.best import normalise as normalise

from . import config
from .errors import ClientError
from .fitting import bpb_at, check_meaningful, fit_report, seed_sigma
from .results import atomic_write_text

if TYPE_CHECKING:  # the trainer imports torch; keep it out of import time
    from autoresearch.trainer.result import RunResult, TrainProgress

_logger = logging.getLogger(__name__)

BUDGET_FACTORS: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0)  # × TIME_BUDGET (DESIGN.md)
DEFAULT_SEEDS = 5
"""Seeds at the full budget (K). σ̂ from K seeds has K − 1 degrees of freedom, so the loop's rule
``z ≥ MIN_Z`` applied to a change that does nothing passes with probability P(t_{K−1} ≥ MIN_Z/√2)
(z = Δ/σ̂ with Δ ~ N(0, 2σ²) is √2 × Student's t), not the 7.9 % it would with σ known:
K = 2: 19.6 %, 3: 14.6 %, 4: 12.6 %, **5: 11.5 %**, 8: 10.0 %. K = 5 is the smallest K whose rate is
within 1.5 × the known-σ rate and whose 95 % interval for σ/σ̂ (χ² with 4 d.o.f.) is 0.60 … 2.87,
i.e. σ is measured to within a factor of 3 instead of 32 (K = 2). Cost: K + 3 = 8 runs,
7.75 × ``TIME_BUDGET`` of training (cpu track: about 10 minutes; climbmix: about 44 minutes).
docs/calibration.md, "Noise"."""

DEFAULT_MIN_Z = MIN_Z  # the one keep threshold on z (protocol/best.py), see docs/calibration.md

PAIRED_BELOW_Z: float = NormalDist().inv_cdf(TRUST_P) * OBS_SD**2 * math.sqrt(1.0 / PRIOR_SD**2 + 1.0 / OBS_SD**2)
"""≈ 4.03: the z at which one run alone qualifies under the hub's community-best rule (posterior
probability of a gain ≥ TRUST_P with prior N(0, PRIOR_SD²) and noise OBS_SD, protocol/best.py). A
would-be keep with MIN_Z ≤ z < PAIRED_BELOW_Z is not conclusive on its own, so the loop re-measures
its parent next to it before keeping (docs/loop.md, "Drift guard")."""

THROUGHPUT_SPREAD_SIGMAS = 3.0  # allowed throughput change, in coefficients of variation of the calibration's runs
MIN_THROUGHPUT_SPREAD = 0.05  # floor of the allowed relative change (a calibration of very steady runs)
DEFAULT_THROUGHPUT_SPREAD = 0.10  # allowed relative change without a calibration (5 s of a 50 s run)
NOISE_TOLERANCE_SIGMAS = 2.0  # the means may rise by this many σ between budgets (noise, not a trend)


class CalibrationError(ClientError):
    """A reference run failed, or the calibration could not be made from its runs."""


# --------------------------------------------------------------------------------------------------
# Plan and progress


@dataclass(frozen=True)
class PlannedRun:
    """One reference run: ``budget_seconds`` of training with ``seed``."""

    budget_seconds: float
    seed: int


@dataclass(frozen=True)
class CalibrationProgress:
    """Progress report: run ``run_index`` (0-based) of ``n_runs``; ``train`` is None when it starts."""

    run_index: int
    n_runs: int
    run: PlannedRun
    train: TrainProgress | None


ProgressFn = Callable[[CalibrationProgress], None]


def log_runs(p: CalibrationProgress) -> None:
    """A :data:`ProgressFn` for where no live bar can show (``join``, output that is not a TTY): one
    log line as each run starts, e.g. ``calibration run 3/8: 30 s budget, seed 0``."""
    if p.train is None:
        _logger.info("calibration run %d/%d: %g s budget, seed %d", p.run_index + 1, p.n_runs, p.run.budget_seconds, p.run.seed)


def plan_runs(time_budget: float, seeds: int = DEFAULT_SEEDS) -> list[PlannedRun]:
    """The runs of a calibration, shortest first: seed 0 at each budget factor, seeds 1…K−1 at 1×.

    Raises:
        CalibrationError: ``seeds < 2`` (σ needs two runs) or a non-positive budget.
    """
    if seeds < 2:
        raise CalibrationError(f"a calibration needs at least 2 seeds at the full budget, got {seeds}")
    if not (math.isfinite(time_budget) and time_budget > 0):
        raise CalibrationError(f"time budget must be positive seconds, got {time_budget!r}")
    runs: list[PlannedRun] = []
    for factor in BUDGET_FACTORS:
        budget = time_budget * factor
        runs.extend(PlannedRun(budget, s) for s in range(seeds if factor == 1.0 else 1))
    return runs


def run_overhead_seconds(time_budget: float) -> float:
    """Estimated start-up + evaluation seconds per run (not part of the budget): 10 s + 10 % of the
    budget, at most 60 s. A rough figure for the time estimate only (a tiny-track run on a 2-core
    machine spends 8–15 s outside its budget)."""
    return min(60.0, 10.0 + 0.1 * time_budget)


def estimate_seconds(time_budget: float, seeds: int = DEFAULT_SEEDS) -> float:
    """Estimated wall-clock seconds of a whole calibration: budgets plus per-run overhead.

    With ``TIME_BUDGET = 300`` s and 5 seeds that is 7.75 × 300 s of training plus 8 × 40 s ≈ 44 min.
    """
    runs = plan_runs(time_budget, seeds)
    return sum(r.budget_seconds for r in runs) + len(runs) * run_overhead_seconds(time_budget)


# --------------------------------------------------------------------------------------------------
# Cache


def cache_dir() -> Path:
    """``$AUTORESEARCH_HOME/calibrations``."""
    return config.home() / "calibrations"


def cache_path(track: TrackSpec, hardware_class: str) -> Path:
    """Cache file of (hardware class, track id, harness version): ``<track name>-<16 hex>.json``."""
    key = sha256_hex(canonical_json([hardware_class, track.id, track.harness_version]))[:16]
    return cache_dir() / f"{track.name}-{key}.json"


def load_cached_envelope(track: TrackSpec | str, hardware_class: str | None = None) -> Envelope | None:
    """The cached calibration envelope of ``track`` on ``hardware_class`` (default: this machine's),
    as signed (for ``POST /api/v1/calibrations``), or None on a miss (see :func:`load_cached`)."""
    verified = _load(_resolve(track), hardware_class)
    return verified.envelope if verified is not None else None


def load_cached(track: TrackSpec | str, hardware_class: str | None = None) -> CalibrationRecord | None:
    """The cached calibration record of ``track`` on ``hardware_class`` (default: this machine's), or
    None when there is none for this (hardware class, track id, harness version).

    A cache file that does not verify or belongs to another key is logged as a warning and treated as
    a miss (the next calibration overwrites it).
    """
    verified = _load(_resolve(track), hardware_class)
    if verified is None:
        return None
    assert isinstance(verified.record, CalibrationRecord)  # verify() checked the schema
    return verified.record


def _load(spec: TrackSpec, hardware_class: str | None) -> Verified | None:
    """Read and verify the cache file of (hardware class, track id, harness version)."""
    hw = hardware_class if hardware_class is not None else machine_hardware_class(spec)
    path = cache_path(spec, hw)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        verified = verify(data, expected_schema=CALIBRATION_SCHEMA)
    except ProtocolError as exc:
        _logger.warning("ignoring calibration cache %s: %s", path, exc)
        return None
    record = verified.record
    assert isinstance(record, CalibrationRecord)
    if (record.track, record.hardware_class, record.harness_version) != (spec.id, hw, spec.harness_version):
        _logger.warning("ignoring calibration cache %s: it is for another track or hardware class", path)
        return None
    return verified


def _store(envelope: Envelope, track: TrackSpec, hardware_class: str) -> Path:
    """Write the envelope atomically (temp file in the same folder, fsync, rename)."""
    path = cache_path(track, hardware_class)
    atomic_write_text(path, envelope.to_json() + "\n")
    return path


# --------------------------------------------------------------------------------------------------
# Running a calibration


def calibrate(
    track: TrackSpec | str,
    *,
    keys: KeyPair,
    seeds: int = DEFAULT_SEEDS,
    progress: ProgressFn | None = None,
    reference: Path | None = None,
    reference_ecm: float = 1.0,
    force: bool = False,
) -> CalibrationRecord:
    """Calibrate this machine on ``track``, sign the record with ``keys`` and cache it.

    Reuses the cached record (no runs) unless ``force``. ``reference`` is another ``train.py`` to
    calibrate against (e.g. the community best) whose own ECM against the track's reference is
    ``reference_ecm``; by default the track's reference ``train.py`` (``reference_ecm`` must be 1).
    Run directories (``run.log``, ``result.json``) are kept under the cache folder's ``runs/``.

    Raises:
        CalibrationError: a reference run did not end ``ok``, or ``seeds < 2``.
        FitError: the runs cannot be fitted (flat, or val_bpb rising with the budget beyond 2σ), or
            the fit is one ECM cannot be read from (:func:`~autoresearch.client.fitting.check_meaningful`).
    """
    from autoresearch.trainer import hardware

    spec = _resolve(track)
    hw = machine_hardware_class(spec)
    if not force:
        cached = reusable(spec, hw, reference=reference, reference_ecm=reference_ecm)
        if cached is not None:
            _logger.info("using cached calibration %s", cache_path(spec, hw))
            return cached
    source, reference_ecm = _reference(spec, reference, reference_ecm)
    run_root = cache_dir() / "runs" / cache_path(spec, hw).stem
    shutil.rmtree(run_root, ignore_errors=True)
    run_root.mkdir(parents=True)
    train_py = run_root / "train.py"
    train_py.write_text(source, encoding="utf-8")

    planned = plan_runs(spec.time_budget, seeds)
    points = [_run_point(spec, train_py, run_root, run, i, len(planned), progress) for i, run in enumerate(planned)]
    full = [p for p in points if p.budget_seconds == spec.time_budget]
    sigma = seed_sigma([p.val_bpb for p in full])
    report = fit_report(
        [p.budget_seconds for p in points],
        [p.val_bpb for p in points],
        tolerance=NOISE_TOLERANCE_SIGMAS * sigma,
    )
    check_meaningful(report, sigma, spec.time_budget)
    tflops = measure_matmul_tflops(_device(spec))  # imports torch, so software versions see CUDA
    record = CalibrationRecord(
        track=spec.id,
        hardware_class=hw,
        harness_version=spec.harness_version,
        software=hardware.software_versions("cpu" if spec.device == "cpu" else "auto"),
        reference_sha256=sha256_hex(source),
        reference_ecm=reference_ecm,
        time_budget_seconds=spec.time_budget,
        points=points,
        fit=report.fit,
        sigma=sigma,
        min_budget_seconds=min(report.budgets),
        max_budget_seconds=max(report.budgets),
        tokens_per_second=sum(p.tokens_per_second for p in full) / len(full),
        matmul_tflops=tflops,
        created_at=utc_now(),
    )
    path = _store(sign(record, keys), spec, hw)
    _logger.info("calibration written to %s (fit: %s)", path, report.method)
    return record


def reusable(
    spec: TrackSpec, hardware_class: str, *, reference: Path | None = None, reference_ecm: float = 1.0
) -> CalibrationRecord | None:
    """The cached record if it answers this request: any cached record when no ``reference`` is
    named (the latest calibration of the key wins, chained or not); with a ``reference``, only one
    made against that file's content with the same ``reference_ecm``."""
    cached = load_cached(spec, hardware_class)
    if cached is None or reference is None:
        return cached
    source, ecm_ = _reference(spec, reference, reference_ecm)
    if (cached.reference_sha256, cached.reference_ecm) != (sha256_hex(source), ecm_):
        return None
    return cached


def _reference(spec: TrackSpec, reference: Path | None, reference_ecm: float) -> tuple[str, float]:
    """The source to calibrate and its ECM against the track's reference."""
    from autoresearch.trainer import tracks

    if not (math.isfinite(reference_ecm) and reference_ecm > 0):
        raise CalibrationError(f"reference ECM must be a positive number, got {reference_ecm!r}")
    if reference is None:
        if reference_ecm != 1.0:
            raise CalibrationError("reference_ecm applies only with another reference train.py")
        return tracks.reference_source(spec), 1.0
    try:
        return reference.read_text(encoding="utf-8"), reference_ecm
    except OSError as exc:
        raise CalibrationError(f"cannot read reference {reference}: {exc}") from exc


def _run_point(
    spec: TrackSpec,
    train_py: Path,
    run_root: Path,
    run: PlannedRun,
    index: int,
    n_runs: int,
    progress: ProgressFn | None,
) -> CalibrationPoint:
    """Run one reference run and turn it into a calibration point."""
    from autoresearch.trainer import tracks
    from autoresearch.trainer.run import run_training

    derived = spec if run.budget_seconds == spec.time_budget else tracks.derive(spec, time_budget=run.budget_seconds)
    run_dir = run_root / f"b{run.budget_seconds:g}-s{run.seed}"

    def on_progress(p: TrainProgress) -> None:
        if progress is not None:
            progress(CalibrationProgress(index, n_runs, run, p))

    if progress is not None:
        progress(CalibrationProgress(index, n_runs, run, None))
    _logger.info("reference run %d/%d: %g s, seed %d", index + 1, n_runs, run.budget_seconds, run.seed)
    # the track's own reference is our code: it may run where no sandbox can be had
    ours = train_py.read_text(encoding="utf-8") == tracks.reference_source(spec)
    result = run_training(train_py, derived, run_dir, seed=run.seed, on_progress=on_progress, allow_unsandboxed=ours)
    return _point(run, result)


def _point(run: PlannedRun, result: RunResult) -> CalibrationPoint:
    """A calibration point from an ``ok`` run result.

    Raises:
        CalibrationError: the run did not end ``ok`` or lacks a metric.
    """
    m = result.metrics
    if result.outcome != "ok" or m.val_bpb is None:
        raise CalibrationError(
            f"reference run ({run.budget_seconds:g} s, seed {run.seed}) ended {result.outcome!r}: {result.error or 'no val_bpb'}",
            hint=f"see the log at {result.log_path}",
        )
    return CalibrationPoint(
        budget_seconds=run.budget_seconds,
        seed=run.seed,
        val_bpb=m.val_bpb,
        training_seconds=m.training_seconds or 0.0,
        num_steps=m.num_steps or 0,
        tokens_per_second=m.tokens_per_second or 0.0,
    )


def _resolve(track: TrackSpec | str) -> TrackSpec:
    if isinstance(track, TrackSpec):
        return track
    from autoresearch.trainer import tracks

    return tracks.get_track(track)


def machine_hardware_class(spec: TrackSpec) -> str:
    """This machine's hardware class for ``spec`` (the CPU class for CPU tracks, even on a GPU box)."""
    from autoresearch.trainer import hardware

    return str(hardware.hardware_class_for(spec.device))


def _device(spec: TrackSpec) -> str:
    """``cuda`` when the track may use it and there is a GPU, else ``cpu``."""
    import torch

    return "cuda" if spec.device != "cpu" and torch.cuda.is_available() else "cpu"


def measure_matmul_tflops(device: str = "cpu", *, size: int | None = None, seconds: float = 0.5) -> float:
    """Dense matmul throughput in TFLOP/s: square ``size × size`` matmuls (2·n³ FLOPs each), bf16 on
    CUDA (n = 8192) and fp32 on CPU (n = 512), repeated for about ``seconds`` after one warm-up.

    A coarse figure of the machine's speed recorded beside the calibration, as BOINC records a
    benchmark per host (Anderson 2004); never used to normalise results.
    """
    import torch

    dev = torch.device(device)
    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    n = size or (8192 if dev.type == "cuda" else 512)
    x = torch.randn(n, n, device=dev, dtype=dtype)
    y = torch.randn(n, n, device=dev, dtype=dtype)

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    torch.matmul(x, y)
    sync()
    iterations, start = 0, time.perf_counter()
    while True:
        torch.matmul(x, y)
        iterations += 1
        if iterations % 4 == 0:
            sync()
            elapsed = time.perf_counter() - start
            if elapsed >= seconds:
                return 2.0 * n**3 * iterations / elapsed / 1e12


# --------------------------------------------------------------------------------------------------
# Normalising results


@dataclass(frozen=True)
class Residual:
    """One budget of a calibration: runs, mean val_bpb, fitted val_bpb and mean − fitted (bits per byte)."""

    budget_seconds: float
    runs: int
    mean_val_bpb: float
    fitted_val_bpb: float
    residual: float


def residuals(cal: CalibrationRecord) -> list[Residual]:
    """Per-budget residuals of the stored fit, budgets ascending."""
    by_budget: dict[float, list[float]] = {}
    for p in cal.points:
        by_budget.setdefault(p.budget_seconds, []).append(p.val_bpb)
    out = []
    for budget in sorted(by_budget):
        values = by_budget[budget]
        mean = sum(values) / len(values)
        fitted = bpb_at(cal.fit, budget)
        out.append(Residual(budget, len(values), mean, fitted, mean - fitted))
    return out


def throughput_spread(cal: CalibrationRecord | None) -> float:
    """How far (relative, e.g. 0.1 = 10 %) a run's achieved throughput may differ from its parent's
    before the loop calls it machine drift: :data:`THROUGHPUT_SPREAD_SIGMAS` × the coefficient of
    variation of tokens/s over the calibration's full-budget runs, at least
    :data:`MIN_THROUGHPUT_SPREAD`; :data:`DEFAULT_THROUGHPUT_SPREAD` without a calibration (or
    without two full-budget runs with a throughput).

    The figures are the harness's own (tokens it fed the worker ÷ seconds on its budget clock),
    from this key's signed calibration, so they are trusted numbers.
    """
    if cal is None:
        return DEFAULT_THROUGHPUT_SPREAD
    rates = [p.tokens_per_second for p in cal.points if p.budget_seconds == cal.time_budget_seconds and p.tokens_per_second > 0]
    if len(rates) < 2:
        return DEFAULT_THROUGHPUT_SPREAD
    mean = sum(rates) / len(rates)
    sd = math.sqrt(sum((r - mean) ** 2 for r in rates) / (len(rates) - 1))
    return float(max(MIN_THROUGHPUT_SPREAD, THROUGHPUT_SPREAD_SIGMAS * sd / mean))
