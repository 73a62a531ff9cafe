"""Page context builders for the hub's web pages: pure functions over protocol models.

The page routes (``hub/routes/pages.py``) call the same store functions as the JSON routes and hand
the protocol models they get to the builders here, which only reshape them for display: chart series,
the highlighted diff, formatted figures. Nothing here touches the database, so what a page shows is
always what the API serves.

Decisions (see docs/pages.md):

* The progress chart shows one hardware class at a time (val_bpb compares only within a class) and
  at most the newest 2000 experiments of it (``GET /api/v1/tracks/{track}/progress``); the
  running-best frontier starts at the first keep inside that window.
* Crashed experiments have no val_bpb; the chart still shows one point per experiment by drawing
  them in a band just above the highest val_bpb.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache

from markupsafe import Markup
from pydantic import BaseModel, ConfigDict
from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import DiffLexer

from autoresearch.protocol import (
    CalibrationRecord,
    DirectionStats,
    ExperimentView,
    Progress,
    record_id,
)
from autoresearch.protocol.records import LossPoint

_logger = logging.getLogger(__name__)

CURVE_SAMPLES = 64
"""Points on a drawn calibration curve ``bpb(t) = c + a·t^(−b)``."""

DIFF_CSS_CLASS = "diff"
"""CSS class of the highlighted diff block; ``static/pygments.css`` is generated for it."""


# --------------------------------------------------------------------------------------------------
# Formatting (registered as Jinja filters by the page router)


def fmt_bpb(value: float | None) -> str:
    """val_bpb with 4 decimals (``0.9979``), or an en dash for a missing value. Unit: bits per byte."""
    return "–" if value is None else f"{value:.4f}"


def fmt_signed(value: float | None, digits: int = 4) -> str:
    """A signed figure such as Δ val_bpb (``−0.0123``, ``+0.0040``), with a real minus sign."""
    if value is None:
        return "–"
    text = f"{value:+.{digits}f}"
    return text.replace("-", "\u2212")


def fmt_ratio(value: float | None) -> str:
    """A multiplier such as ECM or gain, ``1.23×``; en dash when missing."""
    return "–" if value is None else f"{value:.3g}×"


def fmt_count(value: float | None) -> str:
    """A count with SI suffix for big values: ``950``, ``12.3k``, ``4.56M``, ``1.2B``."""
    if value is None:
        return "–"
    for threshold, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= threshold:
            return f"{value / threshold:.3g}{suffix}"
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.3g}"


def fmt_number(value: float | None, digits: int = 1) -> str:
    """A plain figure with ``digits`` decimals; en dash when missing."""
    return "–" if value is None else f"{value:,.{digits}f}"


def short_hash(value: str | None, n: int = 12) -> str:
    """First ``n`` hex digits of a SHA-256 (key ids, record ids, source hashes)."""
    return "–" if not value else value[:n]


def reltime(when: datetime, now: datetime | None = None) -> str:
    """Human relative time (``just now``, ``5 min ago``, ``3 h ago``, ``12 d ago``, or the date)."""
    now = now or datetime.now(UTC)
    seconds = (now - when).total_seconds()
    if seconds < 0:
        return "in the future"
    if seconds < 45:
        return "just now"
    for limit, unit, size in ((3600, "min", 60), (86_400, "h", 3600), (30 * 86_400, "d", 86_400)):
        if seconds < limit:
            return f"{max(1, round(seconds / size))} {unit} ago"
    return when.strftime("%Y-%m-%d")


def abstime(when: datetime) -> str:
    """Absolute UTC time for tooltips: ``2026-11-29 11:48:03 UTC``."""
    return when.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


# --------------------------------------------------------------------------------------------------
# The coloured diff


@lru_cache(maxsize=1)
def _diff_formatter() -> HtmlFormatter:
    return HtmlFormatter(cssclass=DIFF_CSS_CLASS, linenos=False, wrapcode=True)


def diff_html(diff: str) -> Markup:
    """Syntax-highlighted unified diff as HTML (Pygments ``DiffLexer`` + ``HtmlFormatter``).

    Added lines carry the token class ``gi``, removed lines ``gd``, hunk headers ``gu``; the colours
    come from ``static/pygments.css`` (:func:`diff_css`). Pygments escapes the text, so the result is
    safe to embed.
    """
    return Markup(highlight(diff, DiffLexer(), _diff_formatter()))


def diff_css() -> str:
    """Stylesheet for :func:`diff_html` (what ``static/pygments.css`` holds; regenerate with
    ``python -c "from autoresearch.hub.views import diff_css; print(diff_css())"``)."""
    return str(_diff_formatter().get_style_defs(f".{DIFF_CSS_CLASS}"))


def diff_stats(diff: str) -> tuple[int, int]:
    """(added, removed) line counts of a unified diff, file headers excluded."""
    added = removed = 0
    for line in diff.splitlines():
        if line.startswith("+") and not line.startswith("+++"):
            added += 1
        elif line.startswith("-") and not line.startswith("---"):
            removed += 1
    return added, removed


# --------------------------------------------------------------------------------------------------
# Chart series (serialised as JSON into the page; drawn by static/charts.js with uPlot)


class ChartModel(BaseModel):
    """Base of chart series embedded in pages: frozen, no unknown fields."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ProgressSeries(ChartModel):
    """Columns of the progress chart, one entry per experiment, oldest first.

    ``x``: created_at, unix seconds. ``keep`` / ``discard`` / ``crash``: val_bpb (bits per byte) of the
    experiment in the column matching its status, None in the others (``crash`` holds the band value
    above the highest val_bpb). ``frontier``: running best kept val_bpb. ``labels`` and ``ids``:
    description and record id for the hover box and the click-through. ``new_best``: indices of keeps
    that lowered the frontier (labelled on the chart, as upstream's progress.png does).
    """

    x: list[float]
    keep: list[float | None]
    discard: list[float | None]
    crash: list[float | None]
    frontier: list[float | None]
    labels: list[str]
    ids: list[str]
    new_best: list[int]
    hardware_class: str | None = None
    truncated: bool = False


def progress_series(progress: Progress | None, *, best_before: float | None = None) -> ProgressSeries:
    """Chart columns from the API's progress points (``GET /api/v1/tracks/{track}/progress``).

    ``best_before`` seeds the frontier with a best kept val_bpb older than the points (None: the
    frontier starts at the first keep). ``None`` progress (no hardware class yet) gives empty columns.
    """
    points = sorted(progress.points, key=lambda p: (p.created_at, p.id)) if progress else []
    crash_band = _crash_band([p.val_bpb for p in points if p.val_bpb is not None])
    cols: dict[str, list[float | None]] = {k: [] for k in ("keep", "discard", "crash", "frontier")}
    new_best: list[int] = []
    best = best_before
    for i, p in enumerate(points):
        status = p.status if p.val_bpb is not None else "crash"
        if status == "keep" and p.val_bpb is not None and (best is None or p.val_bpb < best):
            best = p.val_bpb
            new_best.append(i)
        cols["keep"].append(p.val_bpb if status == "keep" else None)
        cols["discard"].append(p.val_bpb if status == "discard" else None)
        cols["crash"].append(crash_band if status == "crash" else None)
        cols["frontier"].append(best)
    return ProgressSeries(
        x=[p.created_at.timestamp() for p in points],
        **cols,
        labels=[p.description for p in points],
        ids=[p.id for p in points],
        new_best=new_best,
        hardware_class=progress.hardware_class if progress else None,
        truncated=progress.truncated if progress else False,
    )


def _crash_band(values: Sequence[float]) -> float:
    """The y value at which crashed runs are drawn: a little above the highest val_bpb."""
    if not values:
        return 1.0
    hi, lo = max(values), min(values)
    return hi + max(0.05 * (hi - lo), 0.002 * hi)


class CurveSeries(ChartModel):
    """A calibration drawn as its fitted curve and its measured points.

    ``t`` / ``fit``: seconds of training and the fitted val_bpb ``c + a·t^(−b)`` (bits per byte) on a
    log-spaced grid over the measured budgets; ``points_t`` / ``points_bpb``: the reference runs.
    """

    t: list[float]
    fit: list[float]
    points_t: list[float]
    points_bpb: list[float]
    time_budget: float
    sigma: float


def calibration_curve(cal: CalibrationRecord, samples: int = CURVE_SAMPLES) -> CurveSeries:
    """Sample a calibration's fitted curve on a log grid from its smallest to its largest budget.

    Formula from DESIGN.md "Calibration": ``bpb(t) = c + a·t^(−b)``.
    """
    lo, hi = cal.min_budget_seconds, cal.max_budget_seconds
    if hi <= lo:
        hi = lo * 2
    grid = [lo * (hi / lo) ** (i / (samples - 1)) for i in range(samples)]
    fit = [cal.fit.c + cal.fit.a * t ** (-cal.fit.b) for t in grid]
    pts = sorted(cal.points, key=lambda p: p.training_seconds or p.budget_seconds)
    return CurveSeries(
        t=grid,
        fit=fit,
        points_t=[p.training_seconds if p.training_seconds > 0 else p.budget_seconds for p in pts],
        points_bpb=[p.val_bpb for p in pts],
        time_budget=cal.time_budget_seconds,
        sigma=cal.sigma,
    )


class LossSeries(ChartModel):
    """Training-loss curves of one or more experiments on one x column.

    ``x``: seconds on the budget clock (the sorted union of every curve's points); ``series[k][i]``:
    experiment ``k``'s loss at ``x[i]`` (nats per token, as train.py reported it; None where that
    curve has no point), ``labels[k]`` / ``ids[k]``: its legend text and record id. Display only:
    the metric is val_bpb, which the harness measures.
    """

    x: list[float]
    series: list[list[float | None]]
    labels: list[str]
    ids: list[str]


def loss_series(curves: Sequence[tuple[str, str, Sequence[LossPoint]]]) -> LossSeries:
    """Chart columns from ``(record id, label, loss_curve)`` triples (a record's ``loss_curve``:
    at most ``MAX_LOSS_POINTS`` points); curves without points are left out."""
    kept = [(i, label, points) for i, label, points in curves if points]
    xs = sorted({p.seconds for _, _, points in kept for p in points})
    series = []
    for _, _, points in kept:
        at = {p.seconds: p.loss for p in points}
        series.append([at.get(x) for x in xs])
    return LossSeries(x=xs, series=series, labels=[label for _, label, _ in kept], ids=[i for i, _, _ in kept])


# --------------------------------------------------------------------------------------------------
# Tables


@dataclass(frozen=True)
class DirectionRow:
    """One row of the directions table: the stats plus the keep rate and per-class gains sorted."""

    stats: DirectionStats
    keep_rate: float | None
    classes: list[tuple[str, int, int, float | None]] = field(default_factory=list)


def direction_rows(stats: Sequence[DirectionStats], limit: int | None = None) -> list[DirectionRow]:
    """Directions ordered by ECM ratio, else val_bpb ratio (best first, untested last), then tries;
    at most ``limit``. Per class: (class, tries, keeps, ECM ratio or else val_bpb ratio)."""

    def order(s: DirectionStats) -> tuple[int, float, int]:
        gain = s.mean_gain if s.mean_gain is not None else s.mean_bpb_ratio
        return (gain is None, -(gain or 0.0), -s.tries)

    rows = [
        DirectionRow(
            stats=s,
            keep_rate=(s.keeps / s.tries) if s.tries else None,
            classes=sorted(
                ((hw, c.tries, c.keeps, c.mean_gain if c.mean_gain is not None else c.mean_bpb_ratio)
                 for hw, c in s.by_hardware_class.items()),
                key=lambda r: -r[1],
            ),
        )
        for s in sorted(stats, key=order)
    ]
    return rows[:limit] if limit is not None else rows


@dataclass(frozen=True)
class ExperimentLink:
    """An experiment shown as one line (lineage, children): id, description, val_bpb (bits per byte)."""

    id: str
    description: str
    val_bpb: float | None
    status: str

    @classmethod
    def of(cls, view: ExperimentView) -> ExperimentLink:
        return cls(view.id, view.record.description, view.record.metrics.val_bpb, view.record.status)


MAX_CALIBRATIONS_SHOWN = 4


@dataclass(frozen=True)
class CalibrationPanel:
    """One calibration on a client page: the record, its id and its sampled curve."""

    id: str
    record: CalibrationRecord
    curve: CurveSeries


def latest_calibrations(records: Sequence[CalibrationRecord], limit: int = MAX_CALIBRATIONS_SHOWN) -> list[CalibrationPanel]:
    """The newest calibration per (track, hardware class, harness version), newest first, at most ``limit``."""
    seen: set[tuple[str, str, str]] = set()
    panels: list[CalibrationPanel] = []
    for rec in sorted(records, key=lambda r: r.created_at, reverse=True):
        key = (rec.track, rec.hardware_class, rec.harness_version)
        if key in seen:
            continue
        seen.add(key)
        panels.append(CalibrationPanel(record_id(rec), rec, calibration_curve(rec)))
        if len(panels) == limit:
            break
    return panels


@dataclass(frozen=True)
class CompareRow:
    """One row of the compare page: a figure of experiments ``a`` and ``b`` and ``b`` relative to
    ``a`` (``change``: formatted difference or ratio, '' when either is missing)."""

    label: str
    a: str
    b: str
    change: str


def compare_rows(a: ExperimentView, b: ExperimentView) -> list[CompareRow]:
    """The figures of two experiments side by side (val_bpb and the hub's z and ECM, throughput,
    run shape). Differences are ``b − a`` for val_bpb (bits per byte) and ``b / a`` ratios for
    throughput figures."""
    ma, mb = a.record.metrics, b.record.metrics

    def diff(x: float | None, y: float | None) -> str:
        return fmt_signed(y - x) if x is not None and y is not None else ""

    def ratio(x: float | None, y: float | None) -> str:
        return f"×{y / x:.3f}" if x and y is not None else ""

    return [
        CompareRow("val_bpb", fmt_bpb(ma.val_bpb), fmt_bpb(mb.val_bpb), diff(ma.val_bpb, mb.val_bpb)),
        CompareRow("hub's z vs its parent", _z(a.normalised.z), _z(b.normalised.z), ""),
        CompareRow("ECM", fmt_ratio(a.normalised.ecm), fmt_ratio(b.normalised.ecm), ratio(a.normalised.ecm, b.normalised.ecm)),
        CompareRow("tokens/s", fmt_count(ma.tokens_per_second), fmt_count(mb.tokens_per_second), ratio(ma.tokens_per_second, mb.tokens_per_second)),
        CompareRow("MFU %", fmt_number(ma.mfu_percent, 2), fmt_number(mb.mfu_percent, 2), ratio(ma.mfu_percent, mb.mfu_percent)),
        CompareRow("steps", fmt_count(ma.num_steps), fmt_count(mb.num_steps), ratio(ma.num_steps, mb.num_steps)),
        CompareRow("training seconds", fmt_number(ma.training_seconds), fmt_number(mb.training_seconds), ""),
        CompareRow("parameters", fmt_count(ma.num_params), fmt_count(mb.num_params), ratio(ma.num_params, mb.num_params)),
        CompareRow("peak VRAM MiB", fmt_number(ma.peak_vram_mib, 0), fmt_number(mb.peak_vram_mib, 0), ratio(ma.peak_vram_mib, mb.peak_vram_mib)),
        CompareRow("outcome / status", f"{a.record.outcome} / {a.record.status}", f"{b.record.outcome} / {b.record.status}", ""),
        CompareRow("hardware class", a.record.hardware_class, b.record.hardware_class, ""),
        CompareRow("client", a.client_name, b.client_name, ""),
        CompareRow("isolation", a.record.isolation, b.record.isolation, ""),
    ]


def _z(z: float | None) -> str:
    return f"{z:+.2f}" if z is not None else "–"
