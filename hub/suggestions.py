"""The suggestion engine: what an agent should try next on a track (DESIGN.md, "Suggestions").

Pure logic over protocol models, except :func:`for_client`, which fills the inputs from the store
exactly as ``GET /api/v1/tracks/{track}/suggestions`` serves them (the route and the research
simulator both call it). Entry point of the engine (stable)::

    suggest(
        track: str,
        stats: Sequence[DirectionStats],      # per-direction aggregates of the track
        kept: Sequence[ExperimentView],       # kept (status "keep", outcome "ok") experiments, newest
                                              #   first; a few hundred at most
        *,
        hardware_class: str | None,           # the asking client's class (None: any)
        client: str | None,                   # the asking client's key id (None: anonymous)
        source_of: Callable[[str], str | None],   # sha256 -> train.py source (None: unknown)
        reference_source: str,                # the track's reference train.py
        now: datetime,                        # the request time (UTC)
        limit: int = 10,
        in_flight: Mapping[str, int] | None = None,   # direction -> live claims on it (optional)
        best_id: str | None = None,           # experiment id of the current community best
    ) -> list[Suggestion]

The rule, in one place (constants below; the reasons and the simulator figures behind them are in
docs/suggestions.md):

* **Normalised gain** is ``z`` (improvement of the child over its parent in units of the
  calibration's seed noise σ; positive is better). Every direction carries a Normal–Normal posterior
  over its true mean z. Prior: empirical Bayes (:func:`empirical_prior`) from the directions already
  tried, mean clamped to ≤ 0, sd in [MIN_PRIOR_SD, PRIOR_SD]; N(0, 1) until EB_MIN_DIRECTIONS are
  tried. Each ok try is an observation with noise ``OBS_SD = √2`` (z compares two noisy runs). Only
  single-direction experiments feed a direction's gain (:func:`counts_toward_gain`). Live claims on
  a direction count as observations of z = 0 ("hallucinated" results, as in batch Thompson sampling,
  Kandasamy et al. 2018), so parallel clients spread out.
* **Thompson sampling** (Thompson 1933; Russo et al., "A Tutorial on Thompson Sampling", 2018): each
  candidate's score is one draw from its posterior. The random stream is seeded by SHA-256 of
  (track, client, 10-minute time bucket): one client asking twice in a bucket gets the same list
  (deterministic for a seeded input), two clients asking at the same moment get independent draws, so
  their top suggestions differ unless one direction dominates the posterior.
* ``exploit``: a direction with a positive observed mean z and a positive posterior mean.
  ``explore``: every other direction that is not ``avoid``: the directions derivable from the
  reference ``train.py`` (:func:`autoresearch.protocol.source.possible_directions`) and those seen in
  results. Both are scored by their draw, so one rule balances them; the rationale names the area of
  ``train.py`` (optimizer, attention, …) and how tried it is.
* ``combine``: two kept experiments with z ≥ COMBINE_MIN_Z on the same parent whose directions are
  disjoint, merged by :func:`autoresearch.hub.combine.combine_sources` (parses, exact union of
  changes, policy check). Once a community best is known (``best_id``), only pairs that build on it
  (the best and one of its siblings, or two children of the best), plus one greedy merge of the best
  with all its disjoint siblings. Score: the sum of the experiments' own posterior draws.
* ``replicate``: exactly the runs the community-best rule flags ``needs_replication``
  (:mod:`autoresearch.protocol.best`: one threshold for the flag and the request) that would become
  the best of their hardware class once confirmed (nothing qualified of that class beats them),
  with BEST_BONUS; never asked of their author. They stay on offer until the rule says
  ``qualified`` or ``refuted``.
* ``avoid``: a direction with ≥ AVOID_MIN_TRIES tries that crashes at least half the time, or whose
  posterior puts less than AVOID_MAX_P_GAIN on a positive effect. Listed last (at most MAX_AVOID),
  score = posterior mean.
* A direction the asking hardware class has tried ≥ HARDWARE_MIN_TRIES times without a mean ECM gain
  above 1 is not suggested to that class (hardware-dependent findings).
* ``seed`` is never suggested: a seed change is not a finding. A list holds at most MAX_PER_KIND of
  ``combine`` and ``replicate`` each.

For the hub's store: :func:`counts_toward_gain` (which runs feed a direction's gain distribution).
The trust rule for a community best is :mod:`autoresearch.protocol.best`.
"""

from __future__ import annotations

import hashlib
import logging
import math
import random
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from functools import lru_cache
from itertools import combinations
from typing import TYPE_CHECKING, Literal

from autoresearch.protocol import AST_LOCK, DirectionStats, ExperimentView, Suggestion, TrackSpec
from autoresearch.protocol.best import OBS_SD, PRIOR_SD, TRUST_P, Prior, gain_probability, posterior
from autoresearch.protocol.source import MODULE, SEED, possible_directions

from .combine import Combined, CombineRefused, combine_sources

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

_logger = logging.getLogger(__name__)

MIN_PRIOR_SD = 0.25
"""Floor of the empirical prior's sd: never rule out an untried direction completely."""
EB_MIN_DIRECTIONS = 5
"""Tried directions needed before the prior is estimated from them (empirical Bayes)."""
TIME_BUCKET_SECONDS = 600
"""Width of the time bucket in the Thompson seed: lists are stable for a client within it."""
EXPLORE_MAX_TRIES = 2
"""Below this many tries an ``explore`` rationale says "untried" / "only N tries"."""
AVOID_MIN_TRIES = 3
"""Tries a direction needs before it can be called a dead end."""
AVOID_CRASH_RATE = 0.5
AVOID_MAX_P_GAIN = 0.1
"""``avoid`` when the posterior probability of a positive effect is below this."""
MAX_AVOID = 3
BEST_BONUS = 2.0
"""Score added to replicating a run that would become its class's community best once confirmed
(z units): confirming it moves every client onto it, so it is worth more than one more experiment."""
HARDWARE_MIN_TRIES = 2
COMBINE_MIN_Z = 1.0
"""Kept experiments below this z are not merged: most of them were kept by noise."""
MAX_COMBINE_PAIRS = 12
"""Pairs of kept experiments merged per request (the most promising first); bounds the work."""
MAX_EVIDENCE = 10
MAX_PER_KIND = {"combine": 4, "replicate": 3}
"""Most suggestions of one kind in a list, so every list offers different kinds of work."""
ReplicatePolicy = Literal["flagged", "decisive", "decisive_top1"]
"""Which ``needs_replication`` runs are offered for replication. ``flagged`` (the default): every one
that would be its class's best. ``decisive``: only those that one confirming run at their own z would
make qualify (:func:`autoresearch.protocol.best.gain_probability` of ``[z, z]`` ≥ ``TRUST_P``):
below that, one replica cannot change the best, so it is not asked for. ``decisive_top1``: of those,
only the one with the largest z. Variants measured by ``bench/search_sim.py`` (docs/suggestions.md)."""

_AREAS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "schedule",
        ("warmup", "warmdown", "schedule", "multiplier", "decay_steps", "final_lr", "cooldown"),
    ),
    (
        "optimizer",
        ("lr", "adam", "muon", "beta", "momentum", "weight_decay", "optim", "eps", "grad_clip"),
    ),
    (
        "attention",
        ("attn", "attention", "head", "window", "rope", "rotary", "kv", "softcap", "causal"),
    ),
    ("embeddings", ("embed", "vocab", "wte", "lm_head", "unembed")),
    ("mlp", ("mlp", "ffn", "expansion", "relu", "gelu")),
    ("normalisation", ("norm",)),
    ("model size", ("depth", "layer", "dim", "width", "aspect", "n_embd", "params")),
    ("batch", ("batch", "seq_len", "accum", "tokens")),
    ("training loop", (MODULE.lower(), "train", "step", "loop")),
)


def area_of(direction: str) -> str:
    """The area of ``train.py`` a direction belongs to (``optimizer``, ``attention``, …, ``other``),
    by keywords in its name: a coarse map for rationales and the explore list."""
    name = direction.split(" ", 1)[0].lower()
    for area, keywords in _AREAS:
        if any(k in name for k in keywords):
            return area
    return "other"


def empirical_prior(stats: Sequence[DirectionStats]) -> Prior:
    """The prior of a direction nobody tried, estimated from the directions that were tried.

    Hierarchical normal model fitted by the method of moments (empirical Bayes: Efron & Morris
    1975; Gelman et al., *Bayesian Data Analysis*, ch. 5): the mean is the try-weighted mean of the
    directions' mean z, the variance is the spread of those means less the part observation noise
    explains, clamped to [MIN_PRIOR_SD², PRIOR_SD²]. With fewer than EB_MIN_DIRECTIONS tried
    directions the default N(0, PRIOR_SD²) stands. On a track where most changes hurt, untried
    directions then start below zero, so Thompson sampling stops spraying the budget over dozens of
    untried directions and spends it on what pays, and on replications.
    """
    tried = [
        (s.mean_z, s.tries - s.crashes)
        for s in stats
        if s.direction != SEED and s.mean_z is not None and s.tries - s.crashes > 0
    ]
    if len(tried) < EB_MIN_DIRECTIONS:
        return Prior()
    weight = sum(n for _, n in tried)
    mean = sum(z * n for z, n in tried) / weight
    spread = sum((z - mean) ** 2 for z, _ in tried) / (len(tried) - 1)
    noise = sum(OBS_SD**2 / n for _, n in tried) / len(tried)
    var = min(max(spread - noise, MIN_PRIOR_SD**2), PRIOR_SD**2)
    return Prior(mean=min(mean, 0.0), sd=math.sqrt(var))


def counts_toward_gain(directions: Sequence[str]) -> bool:
    """Whether an experiment's z and gain belong in its direction's gain distribution.

    Only an experiment that changes exactly one direction isolates that direction's effect; a
    combined or multi-change experiment credits every direction it touches with the whole gain, so
    one real gain makes its passengers look good (and exploit then pushes the passengers). Tries,
    keeps and crashes still count every experiment. Seed-only changes never count.
    """
    return len(directions) == 1 and directions[0] != SEED


def thompson_rng(track: str, client: str | None, now: datetime) -> random.Random:
    """The random stream of one request: seeded by SHA-256 of (track, client, time bucket)."""
    bucket = int(now.timestamp() // TIME_BUCKET_SECONDS)
    seed = hashlib.sha256(f"{track}|{client or ''}|{bucket}".encode()).digest()
    return random.Random(int.from_bytes(seed[:8], "big"))


# --------------------------------------------------------------------------------------------------
# The engine


def suggest(
    track: str,
    stats: Sequence[DirectionStats],
    kept: Sequence[ExperimentView],
    *,
    hardware_class: str | None,
    client: str | None,
    source_of: Callable[[str], str | None],
    reference_source: str,
    now: datetime,
    limit: int = 10,
    in_flight: Mapping[str, int] | None = None,
    best_id: str | None = None,
    replicate: ReplicatePolicy = "flagged",
) -> list[Suggestion]:
    """Ranked suggestions for one client (see the module docstring for the rule and its constants).

    Args:
        track: track id (part of the Thompson seed).
        stats: per-direction aggregates of the track (``DirectionStats``); order does not matter.
        kept: kept experiments of the track (combine and replicate candidates).
        hardware_class: the asking client's hardware class, or None.
        client: the asking client's key id, or None.
        source_of: returns the ``train.py`` source with that SHA-256, or None when unknown.
        reference_source: the track's reference ``train.py`` (explore areas come from it).
        now: request time, timezone-aware.
        limit: most suggestions returned (≥ 1).
        in_flight: live claims per direction key (each counts as an observation of z = 0).
        best_id: experiment id of the current community best (its replication gets BEST_BONUS).
        replicate: which flagged runs get a ``replicate`` item (:data:`ReplicatePolicy`).

    Returns:
        At most ``limit`` suggestions: actionable ones by descending score, then up to MAX_AVOID
        ``avoid`` entries. Deterministic for the same inputs and time bucket.

    Raises:
        ValueError: ``limit`` < 1 or ``now`` is naive.
        SchemaError: the reference source does not parse.
    """
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware (UTC)")
    rng = thompson_rng(track, client, now)
    claims = in_flight or {}
    by_direction = {s.direction: s for s in stats}
    prior = empirical_prior(stats)

    actionable: list[Suggestion] = []
    avoid: list[Suggestion] = []
    candidates = sorted(set(by_direction) | set(possible_directions(reference_source)))
    for direction in candidates:
        if direction == SEED:
            continue
        draw = rng.gauss(0.0, 1.0)  # drawn for every candidate, in sorted order: reproducible
        item = _direction_suggestion(
            direction, by_direction.get(direction), draw, hardware_class, claims, prior
        )
        if item is None:
            continue
        (avoid if item.kind == "avoid" else actionable).append(item)

    ordered_kept = sorted(kept, key=lambda v: v.id)
    actionable.extend(_combine_suggestions(ordered_kept, source_of, rng, best_id))
    actionable.extend(
        _replicate_suggestions(ordered_kept, hardware_class, client, source_of, best_id, rng, replicate)
    )

    actionable.sort(key=lambda s: (-s.score, s.kind, s.direction))
    avoid.sort(key=lambda s: (s.score, s.direction))
    n_avoid = min(MAX_AVOID, len(avoid), limit // 3)
    return _capped(actionable, limit - n_avoid) + avoid[:n_avoid]


KEPT_FOR_SUGGESTIONS = 300
"""Most kept experiments (newest first) the served suggestions consider as combine/replicate candidates."""


def for_client(
    session: Session,
    spec: TrackSpec,
    reference_source: str,
    *,
    hardware_class: str | None,
    client: str | None,
    now: datetime,
    replicate: ReplicatePolicy = "flagged",
) -> list[Suggestion]:
    """The suggestions the hub serves at ``GET /api/v1/tracks/{track}/suggestions``: the store's
    direction statistics, its newest KEPT_FOR_SUGGESTIONS kept experiments and the community best of
    ``hardware_class`` (the one rule, :func:`autoresearch.hub.store.community_best`) fed to
    :func:`suggest` with its default limit and no live claims. Hub side: reads only stored records,
    whose figures the store recomputed itself. The route and the research simulator
    (``bench/search_sim.py``) both call this, so they serve the same list for the same database;
    ``replicate`` is the policy the route serves by default, other values are for the simulator's
    variants.

    Raises:
        ValueError: ``now`` is naive.
    """
    from . import store  # the store imports this module (counts_toward_gain)

    best = store.community_best(session, spec, reference_source, hardware_class)
    stats = store.direction_stats(session, spec.id)
    kept = store.recent_kept(session, spec.id, KEPT_FOR_SUGGESTIONS)
    wanted = {sha for v in kept for sha in (v.record.parent_sha256, v.record.child_sha256)}
    sources = store.get_sources(session, wanted)  # kept runs' shas: prefetched in one query
    with AST_LOCK:  # the engine parses train.py sources (see protocol.parse_source)
        return suggest(
            spec.id,
            stats,
            kept,
            hardware_class=hardware_class,
            client=client,
            source_of=lambda sha: sources[sha] if sha in sources else store.get_source(session, sha),
            reference_source=reference_source,
            now=now,
            best_id=best.experiment.id if best.experiment else None,
            replicate=replicate,
        )


def _capped(ranked: list[Suggestion], limit: int) -> list[Suggestion]:
    """The first ``limit`` suggestions, with at most MAX_PER_KIND of each kind (a list that is all
    combines would leave a client nothing else once those are claimed)."""
    taken: dict[str, int] = {}
    out: list[Suggestion] = []
    for item in ranked:
        if taken.get(item.kind, 0) >= MAX_PER_KIND.get(item.kind, limit):
            continue
        taken[item.kind] = taken.get(item.kind, 0) + 1
        out.append(item)
        if len(out) == limit:
            break
    return out


def _direction_suggestion(
    direction: str,
    stat: DirectionStats | None,
    draw: float,
    hardware_class: str | None,
    claims: Mapping[str, int],
    prior: Prior,
) -> Suggestion | None:
    """exploit / explore / avoid for one direction, or None when it is neither."""
    tries = stat.tries if stat else 0
    crashes = stat.crashes if stat else 0
    ok = max(tries - crashes, 0)
    post = posterior(
        stat.mean_z if stat else None,
        ok if stat and stat.mean_z is not None else 0,
        pseudo_zeros=claims.get(direction, 0),
        prior=prior,
    )
    evidence = list(stat.evidence[:MAX_EVIDENCE]) if stat else []
    area = area_of(direction)
    if tries >= AVOID_MIN_TRIES and (
        crashes / tries >= AVOID_CRASH_RATE or post.p_gain < AVOID_MAX_P_GAIN
    ):
        why = (
            f"crashed {crashes} of {tries} tries"
            if crashes / tries >= AVOID_CRASH_RATE
            else f"{tries} tries, {stat.keeps if stat else 0} kept, mean z {post.mean:+.2f} (P(gain) {post.p_gain:.0%})"
        )
        return Suggestion(
            kind="avoid",
            direction=direction,
            rationale=f"dead end: {why}",
            score=round(post.mean, 6),
            evidence=evidence,
        )
    if _fails_on_class(stat, hardware_class):
        return None
    score = round(post.mean + post.sd * draw, 6)
    if ok >= 1 and post.mean > 0 and stat is not None and (stat.mean_z or 0.0) > 0:
        keeps = stat.keeps if stat else 0
        return Suggestion(
            kind="exploit",
            direction=direction,
            score=score,
            evidence=evidence,
            rationale=f"{area}: {keeps}/{tries} kept, posterior mean z {post.mean:+.2f} ± {post.sd:.2f}; push further",
        )
    if tries < EXPLORE_MAX_TRIES:
        what = "untried" if tries == 0 else f"only {tries} tr{'y' if tries == 1 else 'ies'}"
    else:
        what = f"{tries} tries, inconclusive (mean z {post.mean:+.2f} ± {post.sd:.2f})"
    return Suggestion(
        kind="explore",
        direction=direction,
        score=score,
        evidence=evidence,
        rationale=f"{area}: {what} on this track",
    )


def _fails_on_class(stat: DirectionStats | None, hardware_class: str | None) -> bool:
    if stat is None or hardware_class is None:
        return False
    mine = stat.by_hardware_class.get(hardware_class)
    return bool(
        mine
        and mine.tries >= HARDWARE_MIN_TRIES
        and mine.mean_gain is not None
        and mine.mean_gain <= 1.0
    )


def _z_of(view: ExperimentView) -> float | None:
    """The hub's z of a run (from the signer's verified calibration), never the record's claim."""
    z: float | None = view.normalised.z
    return z


def _combine_suggestions(
    kept: Sequence[ExperimentView],
    source_of: Callable[[str], str | None],
    rng: random.Random,
    best_id: str | None,
) -> list[Suggestion]:
    best = next((v for v in kept if v.id == best_id), None)
    by_parent: dict[str, list[ExperimentView]] = {}
    for view in kept:
        if (
            view.directions
            and SEED not in view.directions
            and (_z_of(view) or 0.0) >= COMBINE_MIN_Z
        ):
            by_parent.setdefault(view.record.parent_canonical_sha256, []).append(view)
    pairs: list[tuple[float, ExperimentView, ExperimentView]] = []
    for siblings in by_parent.values():
        for a, b in combinations(siblings, 2):
            if set(_names(a.directions)) & set(_names(b.directions)):
                continue
            if best is not None and not _builds_on_best(a, b, best):
                continue
            pairs.append(
                (
                    posterior(_z_of(a), 1).mean + posterior(_z_of(b), 1).mean,
                    a,
                    b,
                )
            )
    pairs.sort(key=lambda p: (-p[0], p[1].id, p[2].id))
    out: list[Suggestion] = []
    for _, a, b in pairs[:MAX_COMBINE_PAIRS]:
        merged = _merge(a, b, source_of)
        if merged is None:
            continue
        pa, pb = posterior(_z_of(a), 1), posterior(_z_of(b), 1)
        score = pa.mean + pa.sd * rng.gauss(0.0, 1.0) + pb.mean + pb.sd * rng.gauss(0.0, 1.0)
        direction = " + ".join(merged.directions)
        out.append(
            Suggestion(
                kind="combine",
                direction=direction[:200],
                score=round(score, 6),
                evidence=[a.id, b.id],
                parent_sha256=a.record.parent_sha256,
                train_py=merged.train_py,
                rationale=f"both kept on the same parent (z {_z_of(a):+.2f} and {_z_of(b):+.2f}), disjoint changes; merged file ready to run",
            )
        )
    if best is not None:
        out.extend(_greedy_combines(best, by_parent, source_of, rng))
    return out


def _greedy_combines(
    best: ExperimentView,
    by_parent: Mapping[str, list[ExperimentView]],
    source_of: Callable[[str], str | None],
    rng: random.Random,
) -> list[Suggestion]:
    """The best merged with every disjoint sibling of it kept with z ≥ COMBINE_MIN_Z, strongest first.

    When the best moves, the other results kept on its old parent are not lost: one run folds them
    all in instead of one pair per round. Each step is a checked :func:`combine_sources` merge;
    fewer than two siblings merged: nothing (the pair suggestions cover that).
    """
    siblings = [
        v for v in by_parent.get(best.record.parent_canonical_sha256, []) if v.id != best.id
    ]
    merged = _greedy_merge(source_of(best.record.parent_sha256), best, _by_z(siblings), source_of)
    if merged is None:
        return []
    train_py, views = merged
    score = 0.0
    for view in views:
        post = posterior(_z_of(view), 1)
        score += post.mean + post.sd * rng.gauss(0.0, 1.0)
    directions = " + ".join(sorted({d for v in views for d in v.directions}))
    return [
        Suggestion(
            kind="combine",
            direction=directions[:200],
            score=round(score, 6),
            evidence=[v.id for v in views][:MAX_EVIDENCE],
            parent_sha256=best.record.parent_sha256,
            train_py=train_py,
            rationale=f"the community best plus {len(views) - 1} disjoint results kept beside it; merged file ready to run",
        )
    ]


def _by_z(views: Sequence[ExperimentView]) -> list[ExperimentView]:
    return sorted(views, key=lambda v: (-(_z_of(v) or 0.0), v.id))


def _greedy_merge(
    parent: str | None,
    first: ExperimentView,
    candidates: Sequence[ExperimentView],
    source_of: Callable[[str], str | None],
) -> tuple[str, list[ExperimentView]] | None:
    """Fold candidates one by one into ``first``'s child; None when fewer than three merged."""
    current = source_of(first.record.child_sha256)
    if parent is None or current is None:
        return None
    views = [first]
    for view in candidates:
        child = source_of(view.record.child_sha256)
        if child is None:
            continue
        try:
            current = _combine_cached(parent, current, child).train_py
        except CombineRefused:
            continue
        views.append(view)
    return (current, views) if len(views) >= 3 else None


def _builds_on_best(a: ExperimentView, b: ExperimentView, best: ExperimentView) -> bool:
    """A pair worth merging once a community best exists: the best and a sibling of it (the merge
    is the best plus the sibling's change), or two children of the best. Older pairs would throw
    the best's own change away."""
    on_best = best.record.child_canonical_sha256
    return best.id in (a.id, b.id) or a.record.parent_canonical_sha256 == on_best


def _merge(
    a: ExperimentView, b: ExperimentView, source_of: Callable[[str], str | None]
) -> Combined | None:
    parent = source_of(a.record.parent_sha256)
    left, right = source_of(a.record.child_sha256), source_of(b.record.child_sha256)
    if parent is None or left is None or right is None:
        _logger.debug("combine %s + %s skipped: a source is unknown", a.id[:12], b.id[:12])
        return None
    try:
        return _combine_cached(parent, left, right)
    except CombineRefused as exc:
        _logger.debug("combine %s + %s refused (%s): %s", a.id[:12], b.id[:12], exc.reason, exc)
        return None


@lru_cache(maxsize=512)
def _combine_cached(parent: str, left: str, right: str) -> Combined:
    return combine_sources(parent, left, right)


def _replicate_suggestions(
    kept: Sequence[ExperimentView],
    hardware_class: str | None,
    client: str | None,
    source_of: Callable[[str], str | None],
    best_id: str | None,
    rng: random.Random,
    policy: ReplicatePolicy = "flagged",
) -> list[Suggestion]:
    """``replicate`` for every run flagged ``needs_replication`` that would be its class's best once
    confirmed: no qualified run of its class in ``kept`` has a lower val_bpb; with ``policy``
    ``decisive``/``decisive_top1`` only those one confirmation could decide (:data:`ReplicatePolicy`)."""
    best_bpb: dict[str, float] = {}
    for view in kept:
        bpb = view.record.metrics.val_bpb
        if view.verdict == "qualified" and bpb is not None:
            cls = view.record.hardware_class
            best_bpb[cls] = min(bpb, best_bpb.get(cls, bpb))
    out: list[Suggestion] = []
    zs: dict[str, float] = {}  # experiment id → its z (decisive_top1)
    for view in kept:
        bpb = view.record.metrics.val_bpb
        if view.verdict != "needs_replication" or bpb is None or (client is not None and view.key_id == client):
            continue
        if bpb >= best_bpb.get(view.record.hardware_class, math.inf):
            continue  # beaten by a qualified run of its class: confirming it would move nobody
        child = source_of(view.record.child_sha256)
        if child is None:
            continue
        z = _z_of(view)
        if policy != "flagged" and (z is None or gain_probability([z, z]) < TRUST_P):
            continue  # one replica at its own z would not make it qualify: no decision hangs on it
        zs[view.id] = z if z is not None else -math.inf
        post = posterior(z, 1)
        score = post.mean + post.sd * rng.gauss(0.0, 1.0) + BEST_BONUS
        reason = view.assessment.reason if view.assessment is not None else "needs replication"
        where = f"on {hardware_class}" if hardware_class and hardware_class != view.record.hardware_class else "here"
        out.append(
            Suggestion(
                kind="replicate",
                direction=" + ".join(view.directions)[:200] or "(no direction)",
                score=round(score, 6),
                evidence=[view.id, *view.replications.experiment_ids][:MAX_EVIDENCE],
                experiment_id=view.id,
                parent_sha256=view.record.parent_sha256,
                train_py=child,
                rationale=(
                    f"would be the community best of {view.record.hardware_class} (val_bpb {bpb:.4f}, "
                    f"z {z if z is not None else float('nan'):+.2f}) — {reason}; re-run it {where} to confirm"
                )[:500],
            )
        )
    if policy == "decisive_top1" and out:
        top = max(out, key=lambda item: (zs[item.experiment_id or ""], item.experiment_id or ""))
        return [top]
    return out


def _names(directions: Sequence[str]) -> list[str]:
    return [d.split(" ", 1)[0] for d in directions]
