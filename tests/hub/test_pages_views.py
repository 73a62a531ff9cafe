"""The pure page builders of ``autoresearch.hub.views`` and the page router's small rules (no browser)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from autoresearch.hub import views
from autoresearch.hub.routes.pages import STATIC_DIR, _safe_next
from autoresearch.protocol import (
    DirectionByClass,
    DirectionStats,
    ExperimentView,
    KeyPair,
    Progress,
    ProgressPoint,
    Replications,
    record_id,
)
from tests.hub import factory as f

TRACK = f.make_track()
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _view(i: int, val_bpb: float | None, *, status: str | None = None, outcome: str = "ok", key: str = "a" * 64) -> ExperimentView:
    child = f.with_constant(f.REFERENCE, "WARMUP_STEPS", 10 + i)
    rec = f.experiment(
        TRACK, f.REFERENCE, child, val_bpb=val_bpb, parent_val_bpb=1.6, outcome=outcome, status=status,
        description=f"run {i}", created_at=T0 + timedelta(minutes=i),
    )
    rid = record_id(rec)
    return ExperimentView(
        id=rid, key_id=key, client_name="c", received_at=rec.created_at, record=rec,
        replications=Replications(n=1, experiment_ids=[rid]),
    )


def _progress(views_: list[ExperimentView], truncated: bool = False) -> Progress:
    """The API's progress body for these experiments (as ``store.progress`` builds it)."""
    return Progress(
        track=TRACK.id,
        hardware_class=f.HARDWARE,
        points=[
            ProgressPoint(id=v.id, created_at=v.record.created_at, status=v.record.status, outcome=v.record.outcome,
                          val_bpb=v.record.metrics.val_bpb, description=v.record.description)
            for v in views_
        ],
        truncated=truncated,
    )


def test_progress_series_has_one_point_per_experiment_and_a_running_best() -> None:
    runs = [
        _view(0, 1.55),  # keep
        _view(1, 1.58, status="discard"),
        _view(2, None, outcome="crash"),
        _view(3, 1.50),  # keep, new best
        _view(4, 1.52, status="keep"),  # a keep on another branch that is not a new best
    ]
    s = views.progress_series(_progress(list(reversed(runs))))  # any order in
    assert s.ids == [r.id for r in runs]  # oldest first out
    assert s.x == [r.record.created_at.timestamp() for r in runs]
    for k, d, c in zip(s.keep, s.discard, s.crash, strict=True):
        assert sum(v is not None for v in (k, d, c)) == 1
    assert s.keep == [1.55, None, None, 1.50, 1.52]
    assert s.discard == [None, 1.58, None, None, None]
    assert s.crash[2] is not None and s.crash[2] > 1.58  # drawn above every val_bpb
    assert s.frontier == [1.55, 1.55, 1.55, 1.50, 1.50]
    assert s.new_best == [0, 3]
    assert s.labels[3] == "run 3"
    assert s.hardware_class == f.HARDWARE


def test_progress_series_frontier_starts_from_the_best_before_the_window() -> None:
    s = views.progress_series(_progress([_view(0, 1.55), _view(1, 1.45)], truncated=True), best_before=1.50)
    assert s.frontier == [1.50, 1.45]
    assert s.new_best == [1]
    assert s.truncated


def test_empty_progress_series() -> None:
    s = views.progress_series(None)
    assert s.x == [] and s.new_best == [] and s.hardware_class is None


def test_diff_html_marks_added_and_removed_lines_and_escapes() -> None:
    parent = f.REFERENCE
    child = f.with_constant(parent, "MATRIX_LR", 0.05).replace('"""Learning rate schedule."""', '"""<script>x</script>"""')
    diff = f.unified_diff(parent, child)
    html = str(views.diff_html(diff))
    assert '<span class="gi">+MATRIX_LR = 0.05' in html
    assert '<span class="gd">-MATRIX_LR = 0.04' in html
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert views.diff_stats(diff) == (2, 2)


def test_static_pygments_css_matches_the_formatter() -> None:
    shipped = (STATIC_DIR / "pygments.css").read_text()
    assert views.diff_css() in shipped, "regenerate hub/static/pygments.css (see views.diff_css)"


def test_calibration_curve_samples_the_fit_over_the_measured_budgets() -> None:
    cal = f.calibration(TRACK)  # fit 2 + 1/t over budgets 1.25 … 10 s
    curve = views.calibration_curve(cal, samples=5)
    assert curve.t[0] == pytest.approx(1.25) and curve.t[-1] == pytest.approx(10.0)
    assert curve.fit == pytest.approx([2.0 + 1.0 / t for t in curve.t])
    assert len(curve.points_bpb) == len(cal.points)
    assert curve.time_budget == TRACK.time_budget


def test_latest_calibrations_keeps_the_newest_per_hardware_class() -> None:
    old = f.calibration(TRACK)
    new = old.model_copy(update={"created_at": old.created_at + timedelta(hours=1), "sigma": 0.02})
    other = old.model_copy(update={"hardware_class": "NVIDIA H100 80GB HBM3"})
    panels = views.latest_calibrations([old, other, new])
    assert [p.record.sigma for p in panels if p.record.hardware_class == f.HARDWARE] == [0.02]
    assert len(panels) == 2
    assert panels[0].id == record_id(new)


def test_direction_rows_order_by_mean_gain_then_tries() -> None:
    def stats(name: str, tries: int, gain: float | None) -> DirectionStats:
        return DirectionStats(direction=name, tries=tries, keeps=1, crashes=0, mean_gain=gain,
                              by_hardware_class={"x": DirectionByClass(tries=tries, keeps=1, mean_gain=gain)})

    rows = views.direction_rows([stats("A", 5, 0.9), stats("B", 2, 1.2), stats("C", 9, None), stats("D", 7, 1.2)])
    assert [r.stats.direction for r in rows] == ["D", "B", "A", "C"]
    assert rows[0].keep_rate == pytest.approx(1 / 7)
    assert [r.stats.direction for r in views.direction_rows([stats("A", 5, 0.9), stats("B", 2, 1.2)], 1)] == ["B"]


@pytest.mark.parametrize(
    ("value", "text"),
    [(None, "–"), (0.99789, "0.9979"), (1.0, "1.0000")],
)
def test_fmt_bpb(value: float | None, text: str) -> None:
    assert views.fmt_bpb(value) == text


def test_formatters() -> None:
    assert views.fmt_signed(-0.01234) == "\u22120.0123"
    assert views.fmt_signed(0.004) == "+0.0040"
    assert views.fmt_ratio(1.234) == "1.23×"
    assert [views.fmt_count(v) for v in (950, 12_345, 4_560_000, 1.2e9)] == ["950", "12.3k", "4.56M", "1.2B"]
    now = T0 + timedelta(days=1)
    assert views.reltime(now - timedelta(seconds=10), now) == "just now"
    assert views.reltime(now - timedelta(minutes=5), now) == "5 min ago"
    assert views.reltime(now - timedelta(hours=3), now) == "3 h ago"
    assert views.reltime(now - timedelta(days=90), now) == (now - timedelta(days=90)).strftime("%Y-%m-%d")
    assert views.abstime(T0) == "2026-01-01 00:00:00 UTC"
    assert views.short_hash(KeyPair.generate().key_id).isalnum()


@pytest.mark.parametrize(
    ("target", "safe"),
    [("/tracks/x?hw=a", "/tracks/x?hw=a"), ("//evil.example/", "/"), ("https://evil.example/", "/"), ("/\\evil", "/"), ("", "/")],
)
def test_login_only_returns_to_paths_on_this_hub(target: str, safe: str) -> None:
    assert _safe_next(target) == safe
