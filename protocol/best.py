"""The numbers an experiment is judged by, and the one community-best rule (DESIGN.md, "Calibration").

Used by the hub's store (leaderboards, ``/best``, pages, the ``needs_replication`` flag), its
suggestion engine (``replicate``), the client (its records' ``normalised`` figures and its adoption
of the community best) and the simulator (``bench/search_sim.py``). Pure functions over protocol
models; torch-free and FastAPI-free.

**Normalisation.** :func:`normalise` gives Δ val_bpb, z = (parent − child)/σ, ECM and gain from a
calibration (docs/calibration.md, "Method"). The client fills a record's ``normalised`` with it; the
hub recomputes it from the *reporter's signed calibration* and keeps its own figures, never the
record's claim (:func:`hub_normalised`).

**The rule.** A :class:`Candidate` is a kept ``ok`` run that changes something other than seeding,
from a key that is not revoked, with the other ``ok`` runs of the same experiment (same track,
parent and child canonical hashes). :func:`assess` gives its :class:`Verdict`:

- ``provisional``: no calibration the hub verified (same key, track, hardware class, σ > 0) or no
  parent val_bpb: shown, never community best, never offered for replication;
- ``not_significant``: calibrated, but z < :data:`MIN_Z` (the loop's keep threshold): kept by noise
  as far as the numbers tell;
- ``needs_replication``: implausible (:func:`implausibility`: far below the fitted asymptote, or a
  one-step gain :data:`STEP_BEYOND_Z` σ beyond the largest the track has confirmed) or not yet
  significant on its own (posterior probability of a gain below :data:`TRUST_P`). Waits for
  *confirmations*: runs of the same experiment by another key on its own calibrated hardware;
- ``qualified``: may be community best. Plausible: the posterior over the run's z and one z per
  confirming key reaches :data:`TRUST_P` and the confirmations agree (mean z > 0). Implausible:
  the same computed from the confirmations alone (the suspicious claim does not vouch for itself);
- ``refuted``: the confirmations disagree (mean z ≤ 0), or :data:`MAX_CONFIRMATIONS` keys ran it
  without making it qualify. Not offered again.

``needs_replication`` is the one flag and the one threshold: the hub sets the flag on exactly these
records and the suggestion engine offers ``replicate`` for each of them that would become the best
of its class, until it is qualified or refuted.

:func:`community_best` picks among ``qualified`` candidates: per hardware class the lowest val_bpb,
across classes the highest ECM (ties: the smaller experiment id, so the answer does not depend on
arrival order).

**What a confirmation is, and its limits.** A confirming run comes from a *different key id* whose
calibration has a *different fingerprint* (SHA-256 of its measured points: a calibration copied or
re-signed by a second key has the same points). One observation per confirming key (the mean z of
its runs). The hub cannot tell two keys of one person on two machines they own from two people: a
determined person with two calibrated machines can confirm their own fake. What it does stop: the
same key re-running its own result, a second key without its own calibration, and a second key
that reuses the first one's calibration.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from .canonical import canonical_json, sha256_hex
from .records import (
    MAX_ABS_Z,
    MAX_ECM,
    MAX_GAIN,
    MIN_ECM,
    MIN_GAIN,
    CalibrationRecord,
    CurveFit,
    FiniteFloat,
    NonNegFloat,
    Normalised,
    PositiveFloat,
    Sha256Hex,
)

# --------------------------------------------------------------------------------------------------
# Parameters of the rule

MIN_Z = 2.0
"""Least hub z of a candidate worth ranking or replicating, and the loop's keep threshold on a
calibrated machine (``calibration.DEFAULT_MIN_Z``). A null change passes it 7.9 % of the time: z of
a null change is N(0, 2), Φ(−2/√2) = 0.079 (docs/calibration.md, "Noise")."""

PRIOR_SD = 1.0
"""Prior sd of a change's true mean z: a typical change moves val_bpb by about one seed-noise σ
(the suggestion engine's default prior, docs/suggestions.md)."""

OBS_SD = math.sqrt(2.0)
"""Noise sd of one observed z: child and parent are each one run with seed noise σ."""

TRUST_P = 0.95
"""Posterior probability of a gain above which a result qualifies. Under N(0, PRIOR_SD²) and
OBS_SD, one run needs z ≥ 4.03 (a null change gets there about 1 time in 450) and two runs a mean
z ≥ 2.33 (docs/suggestions.md, "Trust rule"; the simulator's false community bests fell from 6.7
to 1.1 with it)."""

STEP_BEYOND_Z = 6.0
"""A one-step gain more than this many σ above the largest z the track has qualified so far is
implausible. A null change reaches z > 6 with probability Φ(−6/√2) ≈ 1.1e-5, and 6 was the hub's
former ``REPLICATION_Z``; on a fresh track (nothing qualified yet) it is the ceiling itself."""

ASYMPTOTE_MARGIN = 1.0
"""A val_bpb below ``c − ASYMPTOTE_MARGIN × (bpb(T) − c)`` is implausible, where ``c`` is the
fitted asymptote of the reporter's reference curve ``bpb(t) = c + a·t^(−b)`` and ``bpb(T) − c`` the
reference's own headroom at the full budget: the run would beat the reference trained forever by as
much again as training forever gains over the full budget. The curve's form and c as the
irreducible loss: Hoffmann et al. 2022 (arXiv:2203.15556), eq. 2."""

MAX_CONFIRMATIONS = 3
"""Confirming keys after which a candidate that still does not qualify is ``refuted`` (the
suggestion engine's former ``REPLICATE_ENOUGH``): replicators are not asked forever."""

MAX_REPLICATION_RUNS = 200
"""Runs of one experiment a candidate carries (the first by arrival); the rule reads no more."""

Verdict = Literal["qualified", "needs_replication", "provisional", "not_significant", "refuted"]
Implausibility = Literal["below_asymptote", "step_beyond_track"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------------------------------------
# Normalisation (docs/calibration.md, "Method")


def time_to_reach(fit: CurveFit, val_bpb: float) -> float | None:
    """Inverse of the curve: seconds t* with ``bpb(t*) = val_bpb``, i.e. ``(a / (val_bpb − c))^(1/b)``.

    Returns None when ``val_bpb ≤ c`` (the reference never reaches it, however long it trains) or when
    t* overflows a float.

    Raises:
        ValueError: ``val_bpb`` is not finite.
    """
    if not math.isfinite(val_bpb):
        raise ValueError(f"val_bpb must be finite, got {val_bpb!r}")
    gap = val_bpb - fit.c
    if gap <= 0:
        return None
    try:
        t_star = math.exp((math.log(fit.a) - math.log(gap)) / fit.b)
    except OverflowError:
        return None
    return t_star if math.isfinite(t_star) and t_star > 0 else None


def ecm(cal: CalibrationRecord | CalibrationFacts, val_bpb: float) -> tuple[float | None, bool]:
    """Effective compute multiplier of a run that reached ``val_bpb`` on ``cal``'s hardware and track.

    ``ECM = reference_ecm × t*/TIME_BUDGET`` (t*: :func:`time_to_reach`). Returns
    ``(ecm, extrapolated)``: extrapolated is True when t* lies outside the calibrated budgets (the
    value is still returned, never clamped); ``(None, True)`` at or below the curve's floor c.

    Raises:
        ValueError: ``val_bpb`` is not finite.
    """
    t_star = time_to_reach(cal.fit, val_bpb)
    if t_star is None:
        return None, True
    value = cal.reference_ecm * t_star / cal.time_budget_seconds
    if not (math.isfinite(value) and MIN_ECM <= value <= MAX_ECM):  # outside what a record may carry
        return None, True
    return value, not (cal.min_budget_seconds <= t_star <= cal.max_budget_seconds)


def normalise(
    cal: CalibrationRecord | CalibrationFacts | None,
    child_val_bpb: float | None,
    parent_val_bpb: float | None,
    *,
    parent_ecm: float | None = None,
) -> Normalised:
    """The normalised figures of an experiment.

    ``delta_val_bpb`` = child − parent (bits per byte, both measured on one machine; negative is
    better); ``z`` = (parent − child)/σ (None without a calibration or when σ = 0); ``ecm`` of the
    child and ``ecm_parent`` (``parent_ecm`` when given, else from the parent's val_bpb); ``gain`` =
    ecm/ecm_parent; ``ecm_extrapolated`` when an ECM computed here is outside the calibrated budgets
    or undefined. Missing inputs give None for what depends on them.
    """
    delta = child_val_bpb - parent_val_bpb if child_val_bpb is not None and parent_val_bpb is not None else None
    if cal is None:
        return Normalised(delta_val_bpb=delta)
    z = -delta / cal.sigma if delta is not None and cal.sigma > 0 else None
    if z is not None and abs(z) > MAX_ABS_Z:  # a σ far below the measurement's resolution
        z = None
    child_ecm, extrapolated = ecm(cal, child_val_bpb) if child_val_bpb is not None else (None, False)
    if parent_ecm is None and parent_val_bpb is not None:
        parent_ecm, parent_extrapolated = ecm(cal, parent_val_bpb)
        extrapolated = extrapolated or parent_extrapolated
    gain = child_ecm / parent_ecm if child_ecm is not None and parent_ecm is not None else None
    if gain is not None and not MIN_GAIN <= gain <= MAX_GAIN:
        gain = None
    return Normalised(
        delta_val_bpb=delta, sigma=cal.sigma, z=z, ecm=child_ecm, ecm_parent=parent_ecm, gain=gain,
        ecm_extrapolated=extrapolated,
    )


# --------------------------------------------------------------------------------------------------
# What the rule reads


class CalibrationFacts(_Model):
    """What the rule needs of a calibration the hub verified (same key, track and hardware class as
    the run). ``fingerprint``: :func:`calibration_fingerprint`."""

    id: Sha256Hex
    fingerprint: Sha256Hex
    sigma: NonNegFloat = Field(description="seed noise σ, bits per byte")
    fit: CurveFit
    time_budget_seconds: PositiveFloat
    min_budget_seconds: PositiveFloat
    max_budget_seconds: PositiveFloat
    reference_ecm: PositiveFloat = 1.0

    @classmethod
    def of(cls, record_id: str, cal: CalibrationRecord) -> CalibrationFacts:
        return cls(
            id=record_id, fingerprint=calibration_fingerprint(cal), sigma=cal.sigma, fit=cal.fit,
            time_budget_seconds=cal.time_budget_seconds, min_budget_seconds=cal.min_budget_seconds,
            max_budget_seconds=cal.max_budget_seconds, reference_ecm=cal.reference_ecm,
        )


def calibration_fingerprint(cal: CalibrationRecord) -> str:
    """SHA-256 of the canonical JSON of a calibration's measured points (budget, seed, val_bpb,
    steps, sorted): the same runs re-signed or re-dated by another key give the same fingerprint."""
    points = sorted((p.budget_seconds, p.seed, p.val_bpb, p.num_steps) for p in cal.points)
    return sha256_hex(canonical_json([list(p) for p in points]))


class Evidence(_Model):
    """One ``ok`` run as the rule sees it: who ran it, what it measured (bits per byte) and the
    calibration the hub verified for it (None: none)."""

    experiment_id: Sha256Hex
    key_id: Sha256Hex
    val_bpb: PositiveFloat
    parent_val_bpb: PositiveFloat | None = None
    calibration: CalibrationFacts | None = None

    @property
    def z(self) -> float | None:
        """(parent − child)/σ of this run on its own calibration; None without one (or σ = 0)."""
        cal = self.calibration
        if cal is None or cal.sigma <= 0 or self.parent_val_bpb is None:
            return None
        return (self.parent_val_bpb - self.val_bpb) / cal.sigma


class Candidate(_Model):
    """A run that may rank, with the other ``ok`` runs of the same experiment (any key, first
    :data:`MAX_REPLICATION_RUNS`) and ``z_ceiling``: the largest z of a qualified run of the track
    when this one arrived (0 when none; see :data:`STEP_BEYOND_Z`)."""

    track: str
    hardware_class: str
    run: Evidence
    replications: list[Evidence] = Field(default_factory=list)
    z_ceiling: NonNegFloat = 0.0


class Assessment(_Model):
    """What :func:`assess` says of a candidate: its verdict, the hub's z and ECM of the run, why it
    is implausible (None: plausible), the keys that confirmed it and the posterior probability of a
    gain the verdict rests on; ``reason``: one line for pages and the CLI."""

    verdict: Verdict
    z: FiniteFloat | None = None
    ecm: PositiveFloat | None = None
    implausible: Implausibility | None = None
    confirmations: int = 0
    p_gain: FiniteFloat | None = None
    reason: str


# --------------------------------------------------------------------------------------------------
# The rule


@dataclass(frozen=True)
class Posterior:
    """Normal posterior over a true mean z (mean, sd), from ``n`` observations."""

    mean: float
    sd: float
    n: int

    @property
    def p_gain(self) -> float:
        """Posterior probability that the true mean z is positive."""
        return 0.5 * (1.0 + math.erf(self.mean / (self.sd * math.sqrt(2.0))))


@dataclass(frozen=True)
class Prior:
    """Normal prior over a true mean z: N(mean, sd²)."""

    mean: float = 0.0
    sd: float = PRIOR_SD


def posterior(mean_z: float | None, n: int, *, pseudo_zeros: int = 0, prior: Prior = Prior()) -> Posterior:
    """Normal–Normal posterior of a mean z from ``n`` observations averaging ``mean_z`` (noise
    OBS_SD); ``pseudo_zeros`` extra observations of z = 0 (the engine's live claims)."""
    total = n + pseudo_zeros
    precision = 1.0 / prior.sd**2 + total / OBS_SD**2
    observed = (mean_z or 0.0) * n if n else 0.0
    mean = (prior.mean / prior.sd**2 + observed / OBS_SD**2) / precision
    return Posterior(mean=mean, sd=math.sqrt(1.0 / precision), n=total)


def gain_probability(zs: Sequence[float]) -> float:
    """Posterior probability of a true gain from independent z observations (prior N(0, PRIOR_SD²))."""
    if not zs:
        return 0.5
    return posterior(sum(zs) / len(zs), len(zs)).p_gain


def implausibility(candidate: Candidate) -> Implausibility | None:
    """Why a calibrated run is implausible against its reference curve and the track's history, or
    None: ``below_asymptote`` (:data:`ASYMPTOTE_MARGIN`), ``step_beyond_track``
    (:data:`STEP_BEYOND_Z`)."""
    run, cal = candidate.run, candidate.run.calibration
    if cal is None:
        return None
    headroom = cal.fit.a * cal.time_budget_seconds ** (-cal.fit.b)  # bpb(T) − c of the reference
    if run.val_bpb < cal.fit.c - ASYMPTOTE_MARGIN * headroom:
        return "below_asymptote"
    z = run.z
    if z is not None and z > candidate.z_ceiling + STEP_BEYOND_Z:
        return "step_beyond_track"
    return None


def confirming_zs(candidate: Candidate) -> list[float]:
    """One z per confirming key: the mean z of its runs of the experiment, each on its own
    calibration, from keys other than the author's whose calibration fingerprint differs from the
    author's (see the module docstring for what this can and cannot tell)."""
    own = candidate.run.calibration.fingerprint if candidate.run.calibration else None
    by_key: dict[str, list[float]] = {}
    for rep in candidate.replications[:MAX_REPLICATION_RUNS]:
        z = rep.z
        if rep.key_id == candidate.run.key_id or z is None or rep.calibration is None:
            continue
        if rep.calibration.fingerprint == own:
            continue
        by_key.setdefault(rep.key_id, []).append(z)
    return [sum(v) / len(v) for _, v in sorted(by_key.items())]


def assess(candidate: Candidate) -> Assessment:
    """The verdict of the one community-best rule on a candidate (module docstring)."""
    run, cal = candidate.run, candidate.run.calibration
    z = run.z
    if cal is None or z is None:
        why = "no calibration verified by the hub" if cal is None else "no z (no parent val_bpb, or σ = 0)"
        return Assessment(verdict="provisional", reason=f"provisional: {why}")
    value = ecm(cal, run.val_bpb)[0]
    implausible = implausibility(candidate)
    others = confirming_zs(candidate)
    n = len(others)
    if implausible is None and z < MIN_Z:
        return Assessment(verdict="not_significant", z=z, ecm=value, confirmations=n,
                          reason=f"z {z:+.2f} below {MIN_Z:g}: not a significant gain")
    evidence = others if implausible is not None else [z, *others]
    p = gain_probability(evidence) if evidence else None
    agree = not others or sum(others) / n > 0.0
    verdict: Verdict
    if p is not None and p >= TRUST_P and agree:
        verdict = "qualified"
    elif others and (not agree or n >= MAX_CONFIRMATIONS):
        verdict = "refuted"
    else:
        verdict = "needs_replication"
    return Assessment(verdict=verdict, z=z, ecm=value, implausible=implausible, confirmations=n, p_gain=p,
                      reason=_why(verdict, implausible, n, p))


def _why(verdict: Verdict, implausible: Implausibility | None, n: int, p: float | None) -> str:
    what = {"below_asymptote": "far below the reference curve's asymptote",
            "step_beyond_track": f"a step more than {STEP_BEYOND_Z:g} σ beyond the track's largest"}
    basis = f"implausible ({what[implausible]})" if implausible else "plausible"
    prob = f"P(gain) {p:.3f}" if p is not None else "no confirmation yet"
    return f"{verdict.replace('_', ' ')}: {basis}, {n} confirming key{'s' if n != 1 else ''}, {prob}"


def qualified_ranking(candidates: Iterable[Candidate], *, hardware_class: str | None) -> list[tuple[Candidate, Assessment]]:
    """The qualified candidates, best first: of one hardware class by val_bpb (lowest first), or
    across classes (``None``) by ECM (highest first; candidates without an ECM left out). Ties: the
    smaller experiment id."""
    scored = [(c, a) for c in candidates if (a := assess(c)).verdict == "qualified"]
    if hardware_class is not None:
        mine = [(c, a) for c, a in scored if c.hardware_class == hardware_class]
        return sorted(mine, key=lambda ca: (ca[0].run.val_bpb, ca[0].run.experiment_id))
    with_ecm = [(c, a) for c, a in scored if a.ecm is not None]
    return sorted(with_ecm, key=lambda ca: (-(ca[1].ecm or 0.0), ca[0].run.experiment_id))


def community_best(candidates: Iterable[Candidate], *, hardware_class: str | None) -> Candidate | None:
    """The community best: the first of :func:`qualified_ranking`, or None (the track's reference)."""
    ranking = qualified_ranking(candidates, hardware_class=hardware_class)
    return ranking[0][0] if ranking else None
