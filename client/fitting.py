"""The maths of calibration: the reference curve ``bpb(t) = c + a·t^(−b)``, its inverse, seed noise.

Pure functions on numbers (numpy + scipy, no torch, no I/O), so they are tested on synthetic points.

- :func:`fit_report` / :func:`fit_curve` fit a saturating power law of loss against training time
  (loss falls as a power of compute, Kaplan et al. 2020, "Scaling Laws for Neural Language Models";
  plus an irreducible term, as in Hoffmann et al. 2022, "Training Compute-Optimal Large Language
  Models", eq. 2; on one machine compute ∝ wall-clock seconds) to the per-budget means with ``scipy.optimize.curve_fit`` (bounded trust
  region: a > 0, b > 0, 0 ≤ c ≤ min mean), starting from a profile-likelihood guess (grid over c,
  closed-form log-log least squares for a and b).
- :func:`bpb_at` evaluates the curve, :func:`time_to_reach` inverts it:
  ``t*(bpb) = (a / (bpb − c))^(1/b)``, None when ``bpb ≤ c`` (the curve never gets there).
- :func:`check_meaningful` refuses a fit that ECM cannot be read from (an asymptote within σ of the
  full-budget value, or residuals that are a large share of the curve's drop).
- :func:`seed_sigma` is the sample standard deviation (ddof=1) of val_bpb across seeds;
  :func:`min_detectable_delta` turns σ and a z threshold into the smallest improvement the loop can
  tell from noise.

Degenerate inputs raise :class:`FitError` (a :class:`~autoresearch.client.errors.ClientError`),
never return NaN.
"""

from __future__ import annotations

import logging
import math
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from autoresearch.protocol import MAX_CURVE_A, CurveFit
from autoresearch.protocol.best import (
    time_to_reach as time_to_reach,  # the inverse, shared with the hub
)

from .errors import ClientError

_logger = logging.getLogger(__name__)

MIN_BUDGETS = 3  # distinct budgets: three parameters need at least three points
B_MAX = 5.0  # bound of the exponent b: over ¼…2 × budget real loss-vs-time curves have b ≪ 5; a fit
# that needs more is a step, not a power law (noise or a broken reference), and is refused
_C_GRID = 400  # grid points of the profile over c for the initial guess


class FitError(ClientError):
    """The points cannot be fitted: too few budgets, non-finite values, flat or rising val_bpb."""


@dataclass(frozen=True)
class FitReport:
    """A fitted reference curve with what it was fitted to.

    ``budgets`` (s, ascending, distinct), ``means`` (bits per byte, mean val_bpb per budget),
    ``counts`` (runs per budget), ``residuals`` = mean − fitted (bits per byte), and ``method``:
    ``curve_fit`` (SciPy's bounded least squares converged) or ``profile`` (it did not; the
    profile-likelihood initial guess is used instead and a warning is logged).
    """

    fit: CurveFit
    budgets: tuple[float, ...]
    means: tuple[float, ...]
    counts: tuple[int, ...]
    residuals: tuple[float, ...]
    method: Literal["curve_fit", "profile"]


def curve(t: np.ndarray | float, a: float, b: float, c: float) -> np.ndarray | float:
    """``c + a·t^(−b)``: val_bpb (bits per byte) after ``t`` seconds of training; t > 0."""
    return c + a * np.power(t, -b)


def bpb_at(fit: CurveFit, seconds: float) -> float:
    """The fitted reference val_bpb (bits per byte) after ``seconds`` of training.

    Raises:
        ValueError: ``seconds`` is not a positive finite number.
    """
    if not (math.isfinite(seconds) and seconds > 0):
        raise ValueError(f"seconds must be positive and finite, got {seconds!r}")
    return float(fit.c + fit.a * seconds ** (-fit.b))


def fit_curve(budgets_seconds: Sequence[float], val_bpbs: Sequence[float]) -> CurveFit:
    """Fit ``bpb(t) = c + a·t^(−b)`` to reference runs; see :func:`fit_report`."""
    return fit_report(budgets_seconds, val_bpbs).fit


def fit_report(
    budgets_seconds: Sequence[float], val_bpbs: Sequence[float], *, tolerance: float = 0.0
) -> FitReport:
    """Fit ``bpb(t) = c + a·t^(−b)`` to the per-budget means of reference runs.

    ``budgets_seconds[i]`` (s) and ``val_bpbs[i]`` (bits per byte) describe run i; repeated budgets
    (several seeds) are averaged first, so every budget weighs the same. The means must fall as the
    budget grows; a rise of at most ``tolerance`` bits per byte (e.g. 2σ of seed noise) is accepted.

    Raises:
        FitError: lengths differ; a value is not finite or not positive; fewer than 3 distinct
            budgets; all means equal; the means rise with the budget by more than ``tolerance``;
            or the optimiser returns parameters that are not finite.
    """
    budgets, means, counts = _per_budget_means(budgets_seconds, val_bpbs)
    _check_shape(budgets, means, tolerance)
    a0, b0, c0 = _profile_guess(budgets, means)
    method: Literal["curve_fit", "profile"] = "curve_fit"
    lower, upper = (1e-12, 1e-9, 0.0), (np.inf, B_MAX, float(means.min()))
    p0 = np.clip([a0, b0, c0], lower, upper)
    from scipy import (
        optimize,  # imported here: SciPy costs ~1 s, and every CLI start loads this module
    )

    try:
        with warnings.catch_warnings():
            # with exactly 3 budgets there is no degree of freedom left for the covariance; we
            # never use it, so SciPy's "covariance could not be estimated" warning is noise here
            warnings.simplefilter("ignore", optimize.OptimizeWarning)
            params, _ = optimize.curve_fit(curve, budgets, means, p0=p0, bounds=(lower, upper), maxfev=20_000)
        a, b, c = (float(p) for p in params)
    except RuntimeError as exc:  # the optimiser did not converge
        _logger.warning("curve_fit did not converge (%s); using the profile-likelihood fit", exc)
        a, b, c, method = a0, b0, c0, "profile"
    c = 0.0 if abs(c) < sys.float_info.min else c  # a floor at its bound 0 may land subnormal
    if not all(math.isfinite(p) for p in (a, b, c)) or not (sys.float_info.min <= a <= MAX_CURVE_A) or b <= 0:
        raise FitError(
            f"fit gave unusable parameters a={a!r}, b={b!r}, c={c!r}",
            hint="the points do not follow a falling power law; check the runs' logs",
        )
    if b >= B_MAX * (1 - 1e-6):
        raise FitError(
            f"the fitted exponent b reached its bound {B_MAX:g}: val_bpb falls like a step, not a power "
            f"law, over these budgets (means {_fmt(budgets, means)})",
            hint="seed noise swamps the curve; calibrate on an idle machine, with more seeds or a longer --time-budget",
        )
    residuals = means - curve(budgets, a, b, c)
    rmse = float(np.sqrt(np.mean(residuals**2)))
    rmse = 0.0 if rmse < sys.float_info.min else rmse
    return FitReport(
        fit=CurveFit(a=a, b=b, c=c, rmse=rmse),
        budgets=tuple(float(x) for x in budgets),
        means=tuple(float(x) for x in means),
        counts=tuple(int(x) for x in counts),
        residuals=tuple(float(x) for x in residuals),
        method=method,
    )


MAX_RMSE_SHARE = 0.25  # refuse a fit whose rmse exceeds this share of the curve's drop over the budgets


def check_meaningful(report: FitReport, sigma: float, time_budget: float) -> None:
    """Refuse a fit that ECM (``t*(bpb) / time_budget``, docs/calibration.md) cannot be read from.

    ``sigma`` (bits per byte) is the seed noise at ``time_budget`` (seconds). Two conditions, both
    independent of how well σ itself was estimated:

    - the asymptote ``c`` lies within σ of the curve at the full budget: a child better than the
      reference by one σ would need infinite time (:func:`time_to_reach` is None), so every real
      improvement reads as "infinitely faster";
    - the rmse is more than :data:`MAX_RMSE_SHARE` of the fitted drop from the shortest to the
      longest budget: the points do not follow the curve that ECM inverts.

    Raises:
        FitError: naming the condition, with a hint.
    """
    fit = report.fit
    at_budget = bpb_at(fit, time_budget)
    if sigma > 0 and at_budget - sigma <= fit.c:
        raise FitError(
            f"the fitted asymptote {fit.c:.4f} is within seed noise σ={sigma:.2e} of val_bpb {at_budget:.4f} at the "
            f"full budget: a child better by σ would need infinite time, so ECM would mean nothing",
            hint="the reference has stopped improving at this budget; calibrate with a longer --time-budget or more seeds",
        )
    drop = bpb_at(fit, min(report.budgets)) - bpb_at(fit, max(report.budgets))
    if fit.rmse > MAX_RMSE_SHARE * drop:
        raise FitError(
            f"the fit's rmse {fit.rmse:.2e} is more than {MAX_RMSE_SHARE:.0%} of the curve's drop {drop:.2e} over "
            f"the budgets (means {_fmt(np.asarray(report.budgets), np.asarray(report.means))})",
            hint="the runs do not follow a power law (noise or a loaded machine); calibrate on an idle machine, with more seeds",
        )


def _per_budget_means(
    budgets_seconds: Sequence[float], val_bpbs: Sequence[float]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sorted distinct budgets (s), mean val_bpb per budget and run count per budget."""
    if len(budgets_seconds) != len(val_bpbs):
        raise FitError(f"{len(budgets_seconds)} budgets but {len(val_bpbs)} val_bpb values")
    t = np.asarray(budgets_seconds, dtype=float)
    y = np.asarray(val_bpbs, dtype=float)
    if not (np.all(np.isfinite(t)) and np.all(t > 0)):
        raise FitError(f"budgets must be positive finite seconds, got {list(budgets_seconds)}")
    if not (np.all(np.isfinite(y)) and np.all(y > 0)):
        raise FitError(f"val_bpb values must be positive and finite, got {list(val_bpbs)}")
    budgets, inverse, counts = np.unique(t, return_inverse=True, return_counts=True)
    means = np.bincount(inverse, weights=y) / counts
    return budgets, means, counts


def _check_shape(budgets: np.ndarray, means: np.ndarray, tolerance: float) -> None:
    """Refuse what no falling power law can describe."""
    if len(budgets) < MIN_BUDGETS:
        raise FitError(
            f"need at least {MIN_BUDGETS} distinct budgets to fit 3 parameters, got {len(budgets)}",
            hint="calibrate at budgets ¼, ½, 1 and 2 × TIME_BUDGET",
        )
    if float(means.max() - means.min()) <= 1e-12 * float(means.max()):
        raise FitError(
            f"val_bpb is the same ({means[0]:.6g}) at every budget: training time makes no difference",
            hint="the reference is not learning; check the runs' logs",
        )
    rises = [
        (float(budgets[i]), float(budgets[i + 1]), float(means[i + 1] - means[i]))
        for i in range(len(budgets) - 1)
        if means[i + 1] - means[i] > tolerance
    ]
    if rises:
        t0, t1, up = rises[0]
        raise FitError(
            f"val_bpb rises with the budget ({t0:g} s → {t1:g} s: +{up:.4g} bits per byte, "
            f"tolerance {tolerance:.3g}); the curve must fall",
            hint="the machine was probably busy during a run; calibrate again on an idle machine",
        )


def _profile_guess(budgets: np.ndarray, means: np.ndarray) -> tuple[float, float, float]:
    """Initial (a, b, c): for each c on a grid in [0, min mean), ``log(y − c) = log a − b·log t`` is
    a straight line (closed-form least squares); keep the c whose curve has the least squared error."""
    log_t = np.log(budgets)  # (n,)
    x = log_t - log_t.mean()
    cs = float(means.min()) * np.linspace(0.0, 0.999, _C_GRID)  # (G,)
    log_y = np.log(means[None, :] - cs[:, None])  # (G, n)
    slopes = (log_y - log_y.mean(axis=1, keepdims=True)) @ x / np.dot(x, x)  # (G,)
    a_s = np.exp(log_y.mean(axis=1) - slopes * log_t.mean())  # (G,)
    fitted = cs[:, None] + a_s[:, None] * np.power(budgets[None, :], slopes[:, None])  # (G, n), b = −slope
    sse = np.where(slopes < 0, np.sum((means[None, :] - fitted) ** 2, axis=1), np.inf)
    best = int(np.argmin(sse))
    if not np.isfinite(sse[best]):
        raise FitError(f"val_bpb does not fall with the budget: no power law fits (means {_fmt(budgets, means)})")
    return float(a_s[best]), min(float(-slopes[best]), B_MAX), float(cs[best])


def _fmt(budgets: np.ndarray, means: np.ndarray) -> str:
    return ", ".join(f"{t:g} s: {y:.4f}" for t, y in zip(budgets, means, strict=True))


def seed_sigma(val_bpbs: Sequence[float]) -> float:
    """Seed noise σ: sample standard deviation (ddof=1) of val_bpb (bits per byte) across seeds.

    With K seeds σ̂ has K − 1 degrees of freedom (2 seeds: 1), so it is a rough figure; see
    docs/calibration.md.

    Raises:
        FitError: fewer than 2 values or a non-finite value.
    """
    y = np.asarray(val_bpbs, dtype=float)
    if y.size < 2:
        raise FitError(f"seed noise needs at least 2 seeds, got {y.size}", hint="use --seeds 2 or more")
    if not np.all(np.isfinite(y)):
        raise FitError(f"val_bpb values must be finite, got {list(val_bpbs)}")
    return float(np.std(y, ddof=1))


def min_detectable_delta(sigma: float, min_z: float, *, power: float = 0.8) -> float:
    """Smallest true improvement (bits per byte) that passes ``z ≥ min_z`` with probability ``power``.

    The loop compares one child run with one parent run, each with seed noise σ, so their difference
    has noise σ·√2 while z divides by σ: a change of true size Δ passes with probability
    Φ((Δ − min_z·σ) / (σ·√2)). Solving for Δ: ``Δ = σ·(min_z + Φ⁻¹(power)·√2)``.

    Raises:
        ValueError: ``sigma < 0`` or ``power`` outside (0, 1).
    """
    if sigma < 0 or not 0 < power < 1:
        raise ValueError(f"need sigma ≥ 0 and 0 < power < 1, got sigma={sigma}, power={power}")
    from statistics import NormalDist

    return float(sigma * (min_z + NormalDist().inv_cdf(power) * math.sqrt(2.0)))
