"""``autoresearch calibrate``: the reference benchmark of this hardware class.

Runs the track's reference ``train.py`` at ¼, ½, 1 and 2 × ``TIME_BUDGET`` (client/calibration.py),
or with ``--show`` prints the cached calibration: fitted curve, σ, residuals, valid budget range and a
small plot (terminal, or PNG with ``--png`` when matplotlib is installed).
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from autoresearch.protocol import CalibrationRecord, TrackSpec, record_id

from .. import calibration, console
from ..errors import UsageError
from ..fitting import bpb_at, min_detectable_delta
from .keys import load_or_create_keys


def register(app: typer.Typer) -> None:
    app.command("calibrate")(calibrate_cmd)


def calibrate_cmd(
    track: Annotated[
        str, typer.Option("--track", "-t", envvar="AUTORESEARCH_TRACK", help="Track name or id (climbmix, cpu, tiny).")
    ] = "cpu",
    time_budget: Annotated[
        float | None,
        typer.Option("--time-budget", min=0.01, help="Calibrate a derived track with this TIME_BUDGET (s)."),
    ] = None,
    seeds: Annotated[int, typer.Option("--seeds", "-k", min=2, help="Seeds at the full budget (σ needs ≥ 2).")] = calibration.DEFAULT_SEEDS,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask before a long GPU calibration.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Re-run even when a cached calibration matches.")] = False,
    reference: Annotated[
        Path | None,
        typer.Option("--reference", exists=True, dir_okay=False, help="Calibrate another train.py (e.g. the community best)."),
    ] = None,
    reference_ecm: Annotated[
        float, typer.Option("--reference-ecm", min=0.0, help="ECM of --reference against the track's reference.")
    ] = 1.0,
    show: Annotated[bool, typer.Option("--show", help="Print the cached calibration: fit, σ, residuals, plot.")] = False,
    png: Annotated[Path | None, typer.Option("--png", help="With --show: also write a PNG plot (needs matplotlib).")] = None,
    json_: Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")] = False,
) -> None:
    """Calibrate this machine against the track's reference train.py (cached per hardware class)."""
    spec = _track(track, time_budget)
    hw = calibration.machine_hardware_class(spec)
    if show:
        _show(spec, hw, png=png, json_=json_)
        return
    if png is not None:
        raise UsageError("--png goes with --show")
    cached = None if force else calibration.reusable(spec, hw, reference=reference, reference_ecm=reference_ecm)
    if cached is None:
        _announce(spec, hw, seeds, yes)
        cached = _run(spec, seeds, reference, reference_ecm)
    else:
        console.info(f"using the cached calibration of {spec.id} on {hw} (--force re-runs it)")
    _print_record(cached, json_=json_)


def _track(name: str, time_budget: float | None) -> TrackSpec:
    from autoresearch.trainer import tracks

    try:
        spec = tracks.get_track(name)
    except tracks.UnknownTrack as exc:
        raise UsageError(str(exc), hint="e.g. --track cpu (offline) or --track climbmix (GPU)") from None
    return spec if time_budget is None else tracks.derive(spec, time_budget=time_budget)


def _announce(spec: TrackSpec, hw: str, seeds: int, yes: bool) -> None:
    """Say what will run and for how long; on a GPU track ask first unless ``--yes``."""
    n_runs = len(calibration.plan_runs(spec.time_budget, seeds))
    minutes = calibration.estimate_seconds(spec.time_budget, seeds) / 60
    console.info(
        f"calibrating {spec.id} on {hw}: {n_runs} reference runs at budgets "
        f"{', '.join(f'{f:g}' for f in calibration.BUDGET_FACTORS)} × {spec.time_budget:g} s "
        f"({seeds} seeds at 1×); this takes about {_duration(minutes)}"
    )
    if spec.device == "cuda" and not yes:
        if not typer.confirm("The GPU will be busy for that long. Start the calibration?", err=True):
            console.info("calibration not started (--yes starts it without asking)")
            raise typer.Exit(1)


def _run(spec: TrackSpec, seeds: int, reference: Path | None, reference_ecm: float) -> CalibrationRecord:
    keys = load_or_create_keys()
    planned = calibration.plan_runs(spec.time_budget, seeds)
    total = sum(r.budget_seconds for r in planned)
    done_before = [sum(r.budget_seconds for r in planned[:i]) for i in range(len(planned))]
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )

    def run(progress: calibration.ProgressFn) -> CalibrationRecord:
        return calibration.calibrate(
            spec, keys=keys, seeds=seeds, progress=progress, reference=reference, reference_ecm=reference_ecm, force=True
        )

    if not console.err().is_terminal:  # plain lines, no escape codes
        record = run(calibration.log_runs)
    else:
        with Progress(*columns, console=console.err(), transient=True) as bar:
            task = bar.add_task("calibrating", total=total)

            def on_progress(p: calibration.CalibrationProgress) -> None:
                trained = min(p.train.training_seconds, p.run.budget_seconds) if p.train is not None else 0.0
                loss = f", loss {p.train.loss:.3f}" if p.train is not None and math.isfinite(p.train.loss) else ""
                bar.update(
                    task,
                    completed=done_before[p.run_index] + trained,
                    description=f"run {p.run_index + 1}/{p.n_runs}: {p.run.budget_seconds:g} s, seed {p.run.seed}{loss}",
                )

            record = run(on_progress)
    console.info(f"signed with key {keys.key_id[:16]}…; cached in {calibration.cache_path(spec, record.hardware_class)}")
    return record


def _duration(minutes: float) -> str:
    return f"{minutes * 60:.0f} seconds" if minutes < 2 else f"{minutes:.0f} minutes"


def _print_record(cal: CalibrationRecord, *, json_: bool) -> None:
    if json_:
        console.print_json({"id": record_id(cal), "record": cal.model_dump(mode="json", by_alias=True)})
        return
    f = cal.fit
    console.out().print(
        "\n".join(
            [
                f"calibration {record_id(cal)}",
                f"track:          {cal.track}",
                f"hardware class: {cal.hardware_class}",
                f"harness:        {cal.harness_version}",
                f"curve:          val_bpb(t) = {f.c:.4f} + {f.a:.4g}·t^(−{f.b:.4f})   (rmse {f.rmse:.2e}{_in_sigmas(f.rmse, cal.sigma)})",
                f"seed noise σ:   {cal.sigma:.2e} bits per byte ({_seeds_at_full(cal)} seeds at {cal.time_budget_seconds:g} s)",
                f"valid budgets:  {cal.min_budget_seconds:g}–{cal.max_budget_seconds:g} s",
                f"tokens/s:       {cal.tokens_per_second:,.0f}",
                f"matmul:         {cal.matmul_tflops:.3g} TFLOP/s",
                f"reference:      {cal.reference_sha256[:16]}… (ECM {cal.reference_ecm:g} vs the track reference)",
            ]
        ),
        highlight=False,
    )


def _in_sigmas(value: float, sigma: float) -> str:
    return f" = {value / sigma:.2f} σ" if sigma > 0 else ""


def _seeds_at_full(cal: CalibrationRecord) -> int:
    return sum(1 for p in cal.points if p.budget_seconds == cal.time_budget_seconds)


def _show(spec: TrackSpec, hw: str, *, png: Path | None, json_: bool) -> None:
    cal = calibration.load_cached(spec, hw)
    if cal is None:
        raise UsageError(
            f"no calibration of {spec.id} on {hw}",
            hint=f"run one with: autoresearch calibrate --track {spec.name} --time-budget {spec.time_budget:g}",
        )
    rows = calibration.residuals(cal)
    mdd = min_detectable_delta(cal.sigma, calibration.DEFAULT_MIN_Z)
    if png is not None:
        _write_png(cal, png)
    if json_:
        console.print_json(
            {
                "id": record_id(cal),
                "record": cal.model_dump(mode="json", by_alias=True),
                "residuals": [r.__dict__ for r in rows],
                "min_detectable_delta": {"min_z": calibration.DEFAULT_MIN_Z, "power": 0.8, "val_bpb": mdd},
            }
        )
        return
    _print_record(cal, json_=False)
    out = console.out()
    out.print(
        f"min detectable Δ: {mdd:.2e} bits per byte (z ≥ {calibration.DEFAULT_MIN_Z:g} with 80 % power)\n",
        highlight=False,
    )
    out.print("budget s   runs   mean val_bpb   fitted      residual", highlight=False)
    for r in rows:
        out.print(
            f"{r.budget_seconds:>8g}   {r.runs:>4d}   {r.mean_val_bpb:>12.6f}   {r.fitted_val_bpb:.6f}   {r.residual:+.2e}",
            highlight=False,
        )
    out.print("\n" + render_plot(cal), highlight=False)
    if png is not None:
        console.info(f"plot written to {png}")


def render_plot(cal: CalibrationRecord, *, width: int = 60, height: int = 14) -> str:
    """A text chart of the calibration: runs as ``●``, the fitted curve as ``·``; x is the training
    budget on a log scale (s), y is val_bpb (bits per byte)."""
    lo, hi = math.log(cal.min_budget_seconds / 1.25), math.log(cal.max_budget_seconds * 1.25)
    xs = [math.exp(lo + (hi - lo) * i / (width - 1)) for i in range(width)]
    curve = [bpb_at(cal.fit, x) for x in xs]
    values = curve + [p.val_bpb for p in cal.points]
    y_lo, y_hi = min(values), max(values)
    pad = (y_hi - y_lo) * 0.05 or 1e-3
    y_lo, y_hi = y_lo - pad, y_hi + pad
    grid = [[" "] * width for _ in range(height)]

    def row(y: float) -> int:
        return int(round((y_hi - y) / (y_hi - y_lo) * (height - 1)))

    def col(x: float) -> int:
        return round((math.log(x) - lo) / (hi - lo) * (width - 1))

    for i, y in enumerate(curve):
        grid[row(y)][i] = "·"
    for p in cal.points:
        grid[row(p.val_bpb)][col(p.budget_seconds)] = "●"
    label_w = 8
    lines = []
    for r, cells in enumerate(grid):
        label = f"{y_hi:.4f}" if r == 0 else f"{y_lo:.4f}" if r == height - 1 else ""
        lines.append(f"{label:>{label_w}} │{''.join(cells)}")
    lines.append(" " * label_w + " └" + "─" * width)
    left, right = f"{xs[0]:.3g} s", f"{xs[-1]:.3g} s (log scale)"
    lines.append(" " * (label_w + 2) + left + right.rjust(width - len(left)))
    lines.append(" " * (label_w + 2) + "● reference runs   · fitted val_bpb(t) = c + a·t^(−b)")
    return "\n".join(lines)


def _write_png(cal: CalibrationRecord, path: Path) -> None:
    """Plot points and curve to ``path`` with matplotlib (optional dependency).

    Raises:
        UsageError: matplotlib is not installed.
    """
    if importlib.util.find_spec("matplotlib") is None:
        raise UsageError("--png needs matplotlib, which is not installed", hint="pip install matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    t = np.geomspace(cal.min_budget_seconds / 1.25, cal.max_budget_seconds * 1.25, 200)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(t, [bpb_at(cal.fit, float(x)) for x in t], label="fit c + a·t^(−b)")
    ax.scatter([p.budget_seconds for p in cal.points], [p.val_bpb for p in cal.points], color="k", label="runs")
    ax.set_xscale("log")
    ax.set_xlabel("training budget (s)")
    ax.set_ylabel("val_bpb")
    ax.set_title(f"{cal.track} on {cal.hardware_class}", fontsize=9)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
