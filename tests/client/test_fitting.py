"""The reference-curve maths: fit, inverse, seed noise, degenerate inputs (client/fitting.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from autoresearch.client.fitting import (
    FitError,
    FitReport,
    bpb_at,
    check_meaningful,
    fit_curve,
    fit_report,
    min_detectable_delta,
    seed_sigma,
    time_to_reach,
)
from autoresearch.protocol import CurveFit

A, B, C = 2.5, 0.6, 0.95  # a plausible reference: 0.95 bits per byte floor


def _points(budgets: list[float], noise: float, seed: int) -> tuple[list[float], list[float]]:
    rng = np.random.default_rng(seed)
    y = [C + A * t ** (-B) + rng.normal(0.0, noise) for t in budgets]
    return budgets, y


def test_exact_points_recover_parameters() -> None:
    budgets = [75.0, 150.0, 300.0, 600.0]
    fit = fit_curve(*_points(budgets, 0.0, 0))
    assert fit.a == pytest.approx(A, rel=1e-4)
    assert fit.b == pytest.approx(B, rel=1e-4)
    assert fit.c == pytest.approx(C, abs=1e-5)
    assert fit.rmse < 1e-7


@pytest.mark.parametrize("seed", range(5))
def test_noisy_points_recover_parameters_within_tolerance(seed: int) -> None:
    # Stated tolerance: 9 budgets over 1.5 decades, noise σ = 1e-4 bits per byte (an H100's seed
    # noise is ~3e-4 at 0.1× this curve's spread) → c within 0.01, b within 10 %, a within 10 %.
    budgets = [float(t) for t in np.geomspace(10.0, 600.0, 9)]
    report = fit_report(*_points(budgets, 1e-4, seed))
    assert report.method == "curve_fit"
    assert report.fit.c == pytest.approx(C, abs=0.01)
    assert report.fit.b == pytest.approx(B, rel=0.10)
    assert report.fit.a == pytest.approx(A, rel=0.10)
    assert report.fit.rmse < 3e-4
    assert len(report.residuals) == 9
    assert max(abs(r) for r in report.residuals) < 5e-4


def test_repeated_budgets_are_averaged() -> None:
    budgets = [75.0, 150.0, 300.0, 300.0, 600.0]
    y = [C + A * t ** (-B) for t in budgets]
    y[2] += 0.002
    y[3] -= 0.002  # two seeds at the full budget, mean on the curve
    report = fit_report(budgets, y)
    assert report.budgets == (75.0, 150.0, 300.0, 600.0)
    assert report.counts == (1, 1, 2, 1)
    assert report.means[2] == pytest.approx(C + A * 300 ** (-B))
    assert report.fit.c == pytest.approx(C, abs=1e-4)


@given(
    a=st.floats(0.1, 20.0),
    b=st.floats(0.1, 1.5),
    c=st.floats(0.0, 3.0, allow_subnormal=False),  # records carry no subnormal (docs/protocol.md)
    t=st.floats(0.01, 1e5),
)
@settings(max_examples=200, deadline=None)
def test_inverse_is_exact_on_the_curve(a: float, b: float, c: float, t: float) -> None:
    fit = CurveFit(a=a, b=b, c=c, rmse=0.0)
    bpb = bpb_at(fit, t)
    if bpb - c < 1e-9 * max(1.0, c):  # float resolution of bpb − c is gone; nothing to invert
        return
    t_star = time_to_reach(fit, bpb)
    assert t_star is not None
    assert t_star == pytest.approx(t, rel=1e-6)


def test_inverse_undefined_at_or_below_the_floor() -> None:
    fit = CurveFit(a=A, b=B, c=C, rmse=0.0)
    assert time_to_reach(fit, C) is None
    assert time_to_reach(fit, C - 0.1) is None
    with pytest.raises(ValueError):
        time_to_reach(fit, math.nan)


@pytest.mark.parametrize(
    ("budgets", "values", "match"),
    [
        ([75.0, 150.0], [1.3, 1.2], "at least 3 distinct budgets"),
        ([300.0, 300.0, 300.0, 600.0], [1.3, 1.2, 1.25, 1.1], "at least 3 distinct budgets"),
        ([75.0, 150.0, 300.0, 600.0], [1.2, 1.2, 1.2, 1.2], "same"),
        ([75.0, 150.0, 300.0, 600.0], [1.3, 1.2, 1.25, 1.1], "rises"),
        ([75.0, 150.0, 300.0, 600.0], [1.3, 1.2, math.nan, 1.1], "finite"),
        ([75.0, 150.0, 300.0, 600.0], [1.3, 1.2, math.inf, 1.1], "finite"),
        ([0.0, 150.0, 300.0, 600.0], [1.3, 1.2, 1.15, 1.1], "positive finite seconds"),
        ([75.0, 150.0, 300.0], [1.3, 1.2, 1.15, 1.1], "3 budgets but 4"),
    ],
)
def test_degenerate_inputs_raise_a_clear_error(budgets: list[float], values: list[float], match: str) -> None:
    with pytest.raises(FitError, match=match):
        fit_curve(budgets, values)


def test_step_is_not_a_power_law() -> None:
    # one big drop then flat: only an exponent at its bound fits, which is refused
    with pytest.raises(FitError, match="reached its bound"):
        fit_curve([1.0, 2.0, 4.0, 8.0], [2.0, 1.0, 1.0, 1.0])


def test_small_rise_within_tolerance_is_accepted() -> None:
    budgets = [75.0, 150.0, 300.0, 600.0]
    y = [C + A * t ** (-B) for t in budgets]
    y[3] = y[2] + 1e-4  # flat tail, a rise within noise
    with pytest.raises(FitError, match="rises"):
        fit_report(budgets, y)
    report = fit_report(budgets, y, tolerance=5e-4)
    assert all(math.isfinite(r) for r in report.residuals)
    assert report.fit.a > 0 and report.fit.b > 0 and report.fit.c >= 0


def test_three_budgets_fit_without_warnings() -> None:
    # dof = 0: SciPy cannot estimate a covariance; pytest turns warnings into errors, so this also
    # checks we silence exactly that warning
    fit = fit_curve(*_points([75.0, 150.0, 300.0], 0.0, 0))
    assert fit.rmse < 1e-6


def test_seed_sigma_is_sample_std() -> None:
    assert seed_sigma([1.0, 1.002]) == pytest.approx(0.002 / math.sqrt(2))
    assert seed_sigma([1.0, 1.001, 1.002]) == pytest.approx(0.001)
    with pytest.raises(FitError, match="at least 2 seeds"):
        seed_sigma([1.0])


def test_min_detectable_delta() -> None:
    # at power 0.5 it is exactly the threshold; at 0.8 it adds Φ⁻¹(0.8)·√2·σ ≈ 1.19σ
    assert min_detectable_delta(0.001, 2.0, power=0.5) == pytest.approx(0.002)
    assert min_detectable_delta(0.001, 2.0) == pytest.approx(0.001 * (2.0 + 0.8416212 * math.sqrt(2)))
    with pytest.raises(ValueError):
        min_detectable_delta(0.001, 2.0, power=1.0)


def test_a_fit_that_ecm_can_be_read_from_passes() -> None:
    report = fit_report(*_points([75.0, 150.0, 300.0, 600.0], 1e-3, 1))
    check_meaningful(report, sigma=1e-3, time_budget=300.0)  # no error


def test_an_asymptote_within_seed_noise_of_the_full_budget_is_refused() -> None:
    """bpb(300 s) − c = 2.5·300^−0.6 ≈ 0.082: with σ = 0.1 a child better by σ is below the asymptote."""
    report = fit_report(*_points([75.0, 150.0, 300.0, 600.0], 0.0, 0))
    with pytest.raises(FitError, match="asymptote .* within seed noise") as info:
        check_meaningful(report, sigma=0.1, time_budget=300.0)
    assert info.value.hint and "--time-budget" in info.value.hint


def test_residuals_that_are_a_large_share_of_the_drop_are_refused() -> None:
    """The same curve, but its rmse is half its drop over the budgets: the points do not follow it."""
    exact = fit_report(*_points([75.0, 150.0, 300.0, 600.0], 0.0, 0))
    drop = bpb_at(exact.fit, 75.0) - bpb_at(exact.fit, 600.0)
    bad = FitReport(
        fit=CurveFit(a=exact.fit.a, b=exact.fit.b, c=exact.fit.c, rmse=0.5 * drop),
        budgets=exact.budgets, means=exact.means, counts=exact.counts, residuals=exact.residuals, method="curve_fit",
    )  # fmt: skip
    check_meaningful(exact, sigma=1e-3, time_budget=300.0)
    with pytest.raises(FitError, match="rmse .* more than 25%"):
        check_meaningful(bad, sigma=1e-3, time_budget=300.0)
