"""Research simulator: does the hub make a community of agents find improvements faster?

A deterministic (seeded) simulation of volunteers running the keep/discard loop on mixed hardware,
used to compare three strategies without GPUs (issue 9; results in docs/suggestions.md):

- ``independent``: each agent alone, greedy, random proposals (upstream's solo loop);
- ``global_best``: agents adopt the community best every 5 runs and skip proposals whose exact
  description (parent + change) was already published (the community fork's approach);
- ``hub``: claims (no two agents run the same experiment), suggestions from the real
  :func:`autoresearch.hub.suggestions.suggest` (directions extracted by the real
  :func:`autoresearch.protocol.source.extract_directions` from generated ``train.py`` sources, merged
  files from the real :func:`autoresearch.hub.combine.combine_sources`), and the community best of
  the one rule the hub applies (:func:`autoresearch.protocol.best.community_best`: calibrated,
  significant, plausible or confirmed by another key on its own calibration).

The hidden landscape (one per seed). ``train.py`` is a list of numeric hyperparameters and boolean
switches. A hyperparameter moves in steps (×1.25 up, ÷1.25 down); its contribution to the true
improvement (bits per byte, higher is better) is ``−w·((x − o)² − o²)`` for step count ``x``: zero
at the reference, best at the optimum ``o`` (diminishing returns, then overshoot). Most optima are
0 (every change hurts a little), a few lie 1–3 steps away, a few differ by hardware class. Switches
add a fixed effect, mostly ≈0 or harmful. A few pairs of hyperparameters interact (``w·x_i·x_j``).
Some changes crash (learning rates pushed high, risky switches). Hardware classes differ in seed
noise σ (bits per byte) and speed (runs per hour); every run costs its duration in GPU-hours,
including baseline runs of a newly adopted parent.

Figures per strategy (mean and spread over seeds): GPU-hours until the community best's *true*
improvement reaches the target (a fraction of the best reachable), duplicate-run rate, runs on known
dead ends, false keeps (kept by noise: true change ≤ 0), false community bests (the community best
moved to something truly no better), and the best true improvement reached.

Usage::

    python bench/search_sim.py                 # table
    python bench/search_sim.py --json          # {"strategies": {"independent": {...}, ...}}
    python bench/search_sim.py --seeds 5 --agents 6 --gpu-hours 20
"""

from __future__ import annotations

import argparse
import ast
import heapq
import json
import math
import random
import statistics
import sys
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal

from autoresearch.hub.suggestions import counts_toward_gain, suggest
from autoresearch.protocol import (
    CurveFit,
    DirectionByClass,
    DirectionStats,
    ExperimentRecord,
    ExperimentView,
    Normalised,
    Replications,
    RunMetrics,
    SoftwareVersions,
    canonical_source_sha256,
    sha256_hex,
)
from autoresearch.protocol import best as rule
from autoresearch.protocol.source import extract_directions

Strategy = Literal["independent", "global_best", "hub"]
STRATEGIES: tuple[Strategy, ...] = ("independent", "global_best", "hub")
TRACK = "sim-000000000000"
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
STEP = 1.25  # one ↑ multiplies a hyperparameter by this, one ↓ divides
BASE_VAL_BPB = 1.0
ADOPT_EVERY = 5  # global_best: runs between adoptions of the community best
DEAD_END_TRIES = (
    3  # a direction with this many tries and no keep (or half crashes) is a known dead end
)


@dataclass(frozen=True)
class HardwareClass:
    """A simulated GPU class: seed noise σ (bits per byte), speed (runs per hour), share of agents.

    Every agent is calibrated: its calibration (one per agent, so confirmations across agents count)
    has this σ and the reference curve :data:`SIM_CURVE` (``bpb(t) = c + a·t^(−b)`` in units of the
    budget: 1.0 at the full budget, asymptote 0.9), the shape real calibrations have."""

    name: str
    sigma: float
    runs_per_hour: float
    share: float


HARDWARE: tuple[HardwareClass, ...] = (
    HardwareClass("NVIDIA H100 80GB HBM3", 0.0015, 12.0, 0.25),
    HardwareClass("NVIDIA A100-SXM4-80GB", 0.0020, 8.0, 0.35),
    HardwareClass("NVIDIA GeForce RTX 4090", 0.0030, 6.0, 0.40),
)

SIM_CURVE = CurveFit(a=0.1, b=0.5, c=BASE_VAL_BPB - 0.1, rmse=0.0)
"""The simulated reference curve: ``bpb(1) = BASE_VAL_BPB`` at the full budget (t in budgets)."""

PARAM_NAMES = (
    "MATRIX_LR",
    "EMBEDDING_LR",
    "UNEMBEDDING_LR",
    "SCALAR_LR",
    "WEIGHT_DECAY",
    "ADAM_BETA1",
    "ADAM_BETA2",
    "MUON_MOMENTUM",
    "WARMUP_RATIO",
    "WARMDOWN_RATIO",
    "FINAL_LR_FRAC",
    "DEPTH",
    "ASPECT_RATIO",
    "HEAD_DIM",
    "MLP_RATIO",
    "TOTAL_BATCH_SIZE",
    "DEVICE_BATCH_SIZE",
    "ROPE_BASE",
    "LOGIT_SOFTCAP",
    "INIT_SCALE",
    "VE_GATE_SCALE",
    "NORM_EPS",
    "GRAD_CLIP",
    "X0_LAMBDA",
)
SWITCH_NAMES = (
    "USE_QK_NORM_SCALE",
    "USE_VALUE_EMBEDS_ALL",
    "USE_SWIGLU",
    "USE_FP8_MATMUL",
    "USE_SLIDING_WINDOW",
    "USE_ZERO_INIT_PROJ",
)


# --------------------------------------------------------------------------------------------------
# Landscape


@dataclass
class Landscape:
    """The hidden truth of one seed: what each change does, by hardware class."""

    weights: list[float]  # w_i of each hyperparameter, bits per byte per step²
    optima: list[list[float]]  # optima[i][c]: optimum step count of hyperparameter i on class c
    crash_up: list[float]  # per-step crash probability beyond the first step up
    switch_effects: list[list[float]]  # switch_effects[f][c], bits per byte
    switch_crash: list[float]
    pairs: list[tuple[int, int, float]]  # interacting hyperparameters (i, j, w_ij)
    base_values: list[float]

    @classmethod
    def generate(cls, rng: random.Random) -> Landscape:
        n, c = len(PARAM_NAMES), len(HARDWARE)
        weights, optima, crash_up = [], [], []
        for _ in range(n):
            kind = rng.random()
            if kind < 0.70:  # at its optimum already: every step hurts a little
                o = [0.0] * c
                w = rng.uniform(0.0004, 0.002)
            elif kind < 0.90:  # helpful 1–3 steps away (diminishing returns, then overshoot)
                sign = rng.choice((-1.0, 1.0))
                o = [sign * rng.uniform(1.0, 3.0)] * c
                w = rng.uniform(0.003, 0.009) / (o[0] ** 2)
            else:  # hardware-dependent: helpful on one class, neutral or harmful elsewhere
                good = rng.randrange(c)
                sign = rng.choice((-1.0, 1.0))
                o = [
                    sign * rng.uniform(1.0, 2.5) if k == good else rng.uniform(-0.5, 0.0) * sign
                    for k in range(c)
                ]
                w = rng.uniform(0.004, 0.008) / max(abs(v) for v in o) ** 2
            weights.append(w)
            optima.append(o)
            crash_up.append(rng.uniform(0.2, 0.5) if rng.random() < 0.2 else 0.01)
        switch_effects, switch_crash = [], []
        for _ in SWITCH_NAMES:
            kind = rng.random()
            if kind < 0.25:
                e = rng.uniform(0.003, 0.008)
            elif kind < 0.6:
                e = rng.uniform(-0.0005, 0.0005)
            else:
                e = rng.uniform(-0.006, -0.001)
            switch_effects.append([e * rng.uniform(0.7, 1.3) for _ in range(c)])
            switch_crash.append(rng.uniform(0.3, 0.7) if rng.random() < 0.25 else 0.02)
        pairs = [(*rng.sample(range(n), 2), rng.uniform(-0.002, 0.002)) for _ in range(3)]
        base_values = [round(rng.uniform(0.01, 2.0), 4) for _ in range(n)]
        return cls(weights, optima, crash_up, switch_effects, switch_crash, pairs, base_values)

    def quality(self, state: State, c: int) -> float:
        """True improvement of a state over the reference on class ``c`` (bits per byte, higher=better)."""
        q = 0.0
        for i, x in enumerate(state.steps):
            if x:
                o = self.optima[i][c]
                q -= self.weights[i] * ((x - o) ** 2 - o**2)
        for f, on in enumerate(state.switches):
            if on:
                q += self.switch_effects[f][c]
        for i, j, w in self.pairs:
            q += w * state.steps[i] * state.steps[j]
        return q

    def mean_quality(self, state: State) -> float:
        """True improvement averaged over hardware classes, weighted by their share of agents."""
        return sum(h.share * self.quality(state, c) for c, h in enumerate(HARDWARE))

    def crash_probability(self, parent: State, child: State) -> float:
        p = 0.01
        for i, (a, b) in enumerate(zip(parent.steps, child.steps, strict=True)):
            if b > a and b >= 2:
                p = max(p, self.crash_up[i])
        for f, (a, b) in enumerate(zip(parent.switches, child.switches, strict=True)):
            if b and not a:
                p = max(p, self.switch_crash[f])
        return p

    def reachable(self) -> float:
        """Best mean true improvement of any single-class optimum (a yardstick for the target)."""
        steps = [
            round(sum(h.share * self.optima[i][c] for c, h in enumerate(HARDWARE)))
            for i in range(len(PARAM_NAMES))
        ]
        switches = [
            sum(h.share * self.switch_effects[f][c] for c, h in enumerate(HARDWARE)) > 0
            for f in range(len(SWITCH_NAMES))
        ]
        best = State(tuple(steps), tuple(switches))
        return self.mean_quality(best)


@dataclass(frozen=True)
class State:
    """One ``train.py``: step counts of each hyperparameter and the switches."""

    steps: tuple[int, ...]
    switches: tuple[bool, ...]

    @classmethod
    def reference(cls) -> State:
        return cls((0,) * len(PARAM_NAMES), (False,) * len(SWITCH_NAMES))

    def apply(self, action: Action) -> State:
        kind, index = action
        if kind == "up" or kind == "down":
            steps = list(self.steps)
            steps[index] += 1 if kind == "up" else -1
            return State(tuple(steps), self.switches)
        switches = list(self.switches)
        switches[index] = not switches[index]
        return State(self.steps, tuple(switches))


SWEEP_FRACTIONS = (0.25, 0.5, 0.75)
"""Fractions of the reachable improvement whose GPU-hours are reported besides the target."""
RUN_SOURCES = ("baseline", "random", "explore", "exploit", "combine", "replicate")
"""What chose a run: a baseline of a new parent, a random proposal (the solo strategies, the hub's
fallback) or a suggestion kind."""
Action = tuple[str, int]  # ("up" | "down" | "flip", index)
ALL_ACTIONS: tuple[Action, ...] = tuple(
    [(k, i) for i in range(len(PARAM_NAMES)) for k in ("up", "down")]
    + [("flip", f) for f in range(len(SWITCH_NAMES))]
)


class Sources:
    """Renders states as ``train.py`` sources and reads them back (for the real hub code path)."""

    def __init__(self, land: Landscape) -> None:
        self.land = land
        self.by_sha: dict[str, str] = {}
        self._render_cache: dict[State, str] = {}

    def render(self, state: State) -> str:
        text = self._render_cache.get(state)
        if text is None:
            lines = ['"""Simulated train.py (bench/search_sim.py)."""', ""]
            for i, name in enumerate(PARAM_NAMES):
                lines.append(f"{name} = {self.land.base_values[i] * STEP ** state.steps[i]!r}")
            for f, name in enumerate(SWITCH_NAMES):
                lines.append(f"{name} = {state.switches[f]!r}")
            text = "\n".join(lines) + "\n"
            self._render_cache[state] = text
            self.by_sha[sha256_hex(text)] = text
        return text

    def parse(self, source: str) -> State:
        values: dict[str, object] = {}
        for node in ast.parse(source).body:
            if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
                values[node.targets[0].id] = ast.literal_eval(node.value)
        steps = tuple(
            round(math.log(float(values[n]) / self.land.base_values[i]) / math.log(STEP))  # type: ignore[arg-type]
            for i, n in enumerate(PARAM_NAMES)
        )
        return State(steps, tuple(bool(values[n]) for n in SWITCH_NAMES))


def action_direction(action: Action) -> str:
    kind, index = action
    if kind == "flip":
        return SWITCH_NAMES[index]
    return f"{PARAM_NAMES[index]} {'↑' if kind == 'up' else '↓'}"


DIRECTION_ACTIONS = {action_direction(a): a for a in ALL_ACTIONS}


# --------------------------------------------------------------------------------------------------
# Community


@dataclass
class Run:
    """One completed run as the community sees it."""

    id: str
    agent: int
    cls: int
    parent: State
    child: State
    kind: str  # experiment | baseline | replicate
    crashed: bool
    measured: float | None  # val_bpb
    parent_measured: float | None
    status: str  # keep | discard | crash | baseline
    directions: list[str]
    true_delta: float  # true change of quality on this class
    finished_at: float
    source: str = "random"  # what chose the run (see Plan.source)


@dataclass
class Agent:
    index: int
    cls: int
    parent: State = field(default_factory=State.reference)
    parent_measured: float | None = None
    measured: dict[State, float] = field(
        default_factory=dict
    )  # own val_bpb of states on this machine
    runs: int = 0
    tried: set[tuple[State, State]] = field(default_factory=set)

    @property
    def key_id(self) -> str:
        return sha256_hex(f"agent-{self.index}")


@dataclass
class Plan:
    parent: State
    child: State
    kind: str  # experiment | baseline | replicate
    replicate_of: str | None = None
    source: str = (
        "random"  # what chose it: random | exploit | explore | combine | replicate | baseline
    )


@dataclass
class Metrics:
    curve: list[tuple[float, float]] = field(
        default_factory=list
    )  # (gpu_hours, true best improvement)
    runs: int = 0
    experiment_runs: int = 0
    duplicates: int = 0
    dead_end_runs: int = 0
    false_keeps: int = 0
    false_bests: int = 0
    keeps: int = 0
    crashes: int = 0
    sources: dict[str, int] = field(
        default_factory=lambda: defaultdict(int)
    )  # runs by what chose them


class Community:
    """The shared state of one simulation: runs, claims, stats and the community best."""

    def __init__(
        self, strategy: Strategy, land: Landscape, n_agents: int, rng: random.Random
    ) -> None:
        self.strategy = strategy
        self.land = land
        self.rng = rng
        self.sources = Sources(land)
        self.reference_source = self.sources.render(State.reference())
        self.agents = [Agent(i, self._pick_class(i, n_agents)) for i in range(n_agents)]
        self.runs: list[Run] = []
        self.done: set[tuple[State, State]] = set()
        self.in_flight: dict[tuple[State, State], int] = {}
        self.dir_tries: dict[str, list[Run]] = defaultdict(list)
        self.kept_views: dict[str, ExperimentView] = {}
        self.kept_runs: dict[str, Run] = {}
        self.replications: dict[str, list[Run]] = defaultdict(list)
        self.best: State = State.reference()
        self.best_id: str | None = None
        self.best_estimate = 0.0
        self.gpu_hours = 0.0
        self.metrics = Metrics()
        self._stats_cache: dict[str, DirectionStats] = {}
        self._directions: dict[tuple[State, State], list[str]] = {}
        self._views: dict[str, tuple[int, ExperimentView]] = {}
        self._class_values: dict[tuple[State, int], float] = {}
        self._calibrations: dict[int, rule.CalibrationFacts] = {}
        self._assessments: dict[str, tuple[int, rule.Assessment, rule.Candidate]] = {}
        self._qualified: dict[str, rule.Candidate] = {}
        self._ceilings: dict[str, float] = {}
        self._z_ceiling = 0.0

    def directions_of(self, parent: State, child: State) -> list[str]:
        """Direction keys of parent → child, by the hub's real extractor (memoised)."""
        key = (parent, child)
        if key not in self._directions:
            self._directions[key] = extract_directions(
                self.sources.render(parent), self.sources.render(child)
            )
        return self._directions[key]

    @staticmethod
    def _pick_class(i: int, n: int) -> int:
        bounds, acc = [], 0.0
        for h in HARDWARE:
            acc += h.share
            bounds.append(acc)
        position = (i + 0.5) / n
        return next(c for c, b in enumerate(bounds) if position <= b + 1e-9)

    # ---- the community best -----------------------------------------------------------------------

    def community_best_true(self) -> float:
        return self.land.mean_quality(self.best)

    def _set_best(self, state: State, estimate: float, run_id: str | None) -> None:
        if state == self.best:
            return
        if self.land.mean_quality(state) <= self.land.mean_quality(self.best):
            self.metrics.false_bests += 1
        self.best, self.best_estimate, self.best_id = state, estimate, run_id

    def update_best_solo(self, run: Run) -> None:
        """independent / global_best: the community best is the best measured improvement published."""
        if run.status != "keep" or run.measured is None:
            return
        agent = self.agents[run.agent]
        reference = agent.measured.get(State.reference())
        estimate = (reference - run.measured) if reference is not None else 0.0
        if estimate > self.best_estimate:
            self._set_best(run.child, estimate, run.id)

    def calibration(self, agent: int) -> rule.CalibrationFacts:
        """The calibration of one agent's machine (its own: fingerprints differ between agents)."""
        cal = self._calibrations.get(agent)
        if cal is None:
            h = HARDWARE[self.agents[agent].cls]
            cal = self._calibrations[agent] = rule.CalibrationFacts(
                id=sha256_hex(f"sim-calibration-{agent}"), fingerprint=sha256_hex(f"sim-points-{agent}"),
                sigma=h.sigma, fit=SIM_CURVE, time_budget_seconds=1.0, min_budget_seconds=0.25,
                max_budget_seconds=2.0,
            )
        return cal

    def evidence(self, run: Run) -> rule.Evidence | None:
        if run.measured is None:
            return None
        return rule.Evidence(experiment_id=run.id, key_id=self.agents[run.agent].key_id, val_bpb=run.measured,
                             parent_val_bpb=run.parent_measured, calibration=self.calibration(run.agent))

    def candidate(self, run: Run) -> rule.Candidate:
        """A kept run as the hub's rule sees it: the run, its replications, the track's z ceiling then."""
        reps = [e for e in (self.evidence(r) for r in self.replications.get(run.id, [])) if e is not None]
        own = self.evidence(run)
        assert own is not None
        return rule.Candidate(track=TRACK, hardware_class=HARDWARE[run.cls].name, run=own, replications=reps,
                              z_ceiling=self._ceilings.setdefault(run.id, self._z_ceiling))

    def assessment(self, run: Run) -> rule.Assessment:
        n = len(self.replications.get(run.id, []))
        cached = self._assessments.get(run.id)
        if cached is None or cached[0] != n:
            cand = self.candidate(run)
            cached = self._assessments[run.id] = (n, rule.assess(cand), cand)
        return cached[1]

    def update_best_hub(self, run: Run) -> None:
        """hub: apply the one community-best rule (:func:`autoresearch.protocol.best.community_best`)
        after ``run`` (a keep or a replication) changed the evidence of one experiment."""
        a = self.assessment(run)
        if a.verdict == "qualified":
            self._qualified[run.id] = self._assessments[run.id][2]
            self._z_ceiling = max(self._z_ceiling, a.z or 0.0)
        else:
            self._qualified.pop(run.id, None)
        best = rule.community_best(self._qualified.values(), hardware_class=None)
        if best is not None:
            winner = self.kept_runs[best.run.experiment_id]
            self._set_best(winner.child, self.best_estimate, winner.id)

    def _z(self, run: Run) -> float | None:
        """The hub's z of a run (:attr:`autoresearch.protocol.best.Evidence.z`)."""
        evidence = self.evidence(run)
        return evidence.z if evidence is not None else None

    # ---- bookkeeping ------------------------------------------------------------------------------

    def class_measurement(self, state: State, cls: int) -> float | None:
        """A published val_bpb of ``state`` on hardware class ``cls`` (the latest), if any.

        Adopting agents of ``global_best`` and ``hub`` take it as their parent's value instead of
        spending a baseline run: results compare within a hardware class.
        """
        return self._class_values.get((state, cls))

    def known_dead_end(self, direction: str) -> bool:
        tries = self.dir_tries.get(direction, [])
        if len(tries) < DEAD_END_TRIES:
            return False
        return not any(r.status == "keep" for r in tries) or sum(
            r.crashed for r in tries
        ) * 2 >= len(tries)

    def record(self, run: Run) -> None:
        self.runs.append(run)
        if run.measured is not None:
            self._class_values[(run.child, run.cls)] = run.measured
        m = self.metrics
        m.runs += 1
        if run.kind == "experiment":
            m.experiment_runs += 1
            if (run.parent, run.child) in self.done:
                m.duplicates += 1
            if any(self.known_dead_end(d) for d in run.directions):
                m.dead_end_runs += 1
            if run.status == "keep":
                m.keeps += 1
                if run.true_delta <= 0:
                    m.false_keeps += 1
            m.crashes += run.crashed
            for d in run.directions:
                self.dir_tries[d].append(run)
                self._stats_cache.pop(d, None)
            self.done.add((run.parent, run.child))

    # ---- hub views --------------------------------------------------------------------------------

    def direction_stats(self) -> list[DirectionStats]:
        out = []
        for d, tries in self.dir_tries.items():
            cached = self._stats_cache.get(d)
            if cached is None:
                cached = self._stats_cache[d] = self._build_stats(d, tries)
            out.append(cached)
        return out

    def _build_stats(self, direction: str, tries: list[Run]) -> DirectionStats:
        # The gain distribution comes from experiments that isolate the direction (the engine's
        # counts_toward_gain); tries, keeps and crashes count every experiment touching it.
        isolated = [r for r in tries if counts_toward_gain(r.directions)]
        zs = [z for z in (self._z(r) for r in isolated) if z is not None]
        by_class: dict[str, DirectionByClass] = {}
        for c, h in enumerate(HARDWARE):
            mine = [r for r in tries if r.cls == c]
            if not mine:
                continue
            deltas = [
                r.parent_measured - r.measured
                for r in mine
                if r.measured is not None
                and r.parent_measured is not None
                and counts_toward_gain(r.directions)
            ]
            gain = (
                1.0 + 10.0 * statistics.fmean(deltas) if deltas else None
            )  # ECM gain > 1 iff better
            by_class[h.name] = DirectionByClass(
                tries=len(mine),
                keeps=sum(r.status == "keep" for r in mine),
                mean_gain=max(gain, 1e-6) if gain is not None else None,
            )
        return DirectionStats(
            direction=direction,
            tries=len(tries),
            keeps=sum(r.status == "keep" for r in tries),
            crashes=sum(r.crashed for r in tries),
            mean_z=statistics.fmean(zs) if zs else None,
            std_gain=None,
            by_hardware_class=by_class,
            evidence=[r.id for r in tries[-10:]],
        )

    def view(self, run: Run) -> ExperimentView:
        reps = self.replications.get(run.id, [])
        cached = self._views.get(run.id)
        if cached is not None and cached[0] == len(reps):
            return cached[1]
        parent_src, child_src = self.sources.render(run.parent), self.sources.render(run.child)
        record = ExperimentRecord(
            track=TRACK,
            parent_sha256=sha256_hex(parent_src),
            child_sha256=sha256_hex(child_src),
            parent_canonical_sha256=canonical_source_sha256(parent_src),
            child_canonical_sha256=canonical_source_sha256(child_src),
            diff="",
            description=" + ".join(run.directions),
            outcome="ok",
            status="keep",
            metrics=RunMetrics(val_bpb=run.measured),
            parent_val_bpb=run.parent_measured,
            normalised=Normalised(z=self._z(run), sigma=HARDWARE[run.cls].sigma),
            calibration_id=self.calibration(run.agent).id,
            hardware_class=HARDWARE[run.cls].name,
            software=SoftwareVersions(python="3.11"),
            harness_version="sim",
            created_at=EPOCH + timedelta(hours=run.finished_at),
        )
        classes = sorted({HARDWARE[r.cls].name for r in [run, *reps]})
        assessment = self.assessment(run)
        view = ExperimentView(
            id=run.id,
            normalised=Normalised(z=assessment.z, sigma=HARDWARE[run.cls].sigma, ecm=assessment.ecm),
            calibration_id=self.calibration(run.agent).id,
            verdict=assessment.verdict,
            assessment=assessment,
            needs_replication=assessment.verdict == "needs_replication",
            key_id=self.agents[run.agent].key_id,
            client_name=f"agent-{run.agent}",
            received_at=record.created_at,
            record=record,
            directions=run.directions,
            replications=Replications(
                n=1 + len(reps),
                hardware_classes=classes,
                experiment_ids=[run.id, *(r.id for r in reps)],
            ),
        )
        self._views[run.id] = (len(reps), view)
        return view


# --------------------------------------------------------------------------------------------------
# Strategies: choose the next run of an agent


def choose_solo(
    com: Community, agent: Agent, *, dedup: bool, avoid_in_flight: bool = False
) -> Plan:
    """independent / global_best (and the hub's fallback): a random change of the agent's parent
    (baseline first), not one it already ran; with ``dedup`` not one anybody published."""
    if agent.parent not in agent.measured:
        return Plan(agent.parent, agent.parent, "baseline")
    for attempt in range(100):
        # Single changes first; once those are used up (a converged parent), two changes at once,
        # as an agent that never runs out of ideas would.
        child = agent.parent.apply(com.rng.choice(ALL_ACTIONS))
        if attempt >= 50:
            child = child.apply(com.rng.choice(ALL_ACTIONS))
        key = (agent.parent, child)
        if child == agent.parent:
            continue
        if key in agent.tried:
            continue
        if dedup and key in com.done:
            continue  # the fork skips an exact duplicate of a published description
        if avoid_in_flight and com.in_flight.get(key):
            continue  # hub claims: held by another agent
        return Plan(agent.parent, child, "experiment")
    return Plan(agent.parent, agent.parent.apply(com.rng.choice(ALL_ACTIONS)), "experiment")


def adopt_global_best(com: Community, agent: Agent) -> None:
    if agent.runs % ADOPT_EVERY == 0 and com.best != agent.parent:
        mine = agent.measured.get(State.reference())
        own_estimate = (
            (mine - agent.parent_measured)
            if mine is not None and agent.parent_measured is not None
            else 0.0
        )
        if com.best_estimate > own_estimate:
            adopt(com, agent, com.best)


def adopt(com: Community, agent: Agent, state: State) -> None:
    """Switch an agent to a new parent; reuse a published value on its class, else baseline later."""
    agent.parent = state
    known = agent.measured.get(state)
    if known is None:
        known = com.class_measurement(state, agent.cls)
        if known is not None:
            agent.measured[state] = known
    agent.parent_measured = known


def choose_hub(com: Community, agent: Agent, now_hours: float) -> Plan:
    """hub: work on the trusted best, follow the real suggestion engine, claim before running."""
    if agent.parent != com.best:
        adopt(com, agent, com.best)
    if agent.parent not in agent.measured:
        return Plan(agent.parent, agent.parent, "baseline")
    kept = [com.view(r) for r in com.kept_runs.values()]
    claims: dict[str, int] = defaultdict(int)
    for (p, c), n in com.in_flight.items():
        if n and p == agent.parent:
            for d in com.directions_of(p, c):
                claims[d] += n
    items = suggest(
        TRACK,
        com.direction_stats(),
        kept,
        hardware_class=HARDWARE[agent.cls].name,
        client=agent.key_id,
        source_of=com.sources.by_sha.get,
        reference_source=com.reference_source,
        now=EPOCH + timedelta(hours=now_hours),
        limit=60,
        in_flight=claims,
        best_id=com.best_id,
    )
    for item in items:
        plan = _plan_from(com, agent, item.kind, item.direction, item.train_py, item.experiment_id)
        if plan is None:
            continue
        key = (plan.parent, plan.child)
        if plan.kind == "experiment" and (key in com.done or com.in_flight.get(key)):
            continue  # the claim answers "done" or "held"
        plan.source = item.kind
        return plan
    return choose_solo(com, agent, dedup=True, avoid_in_flight=True)


def _plan_from(
    com: Community,
    agent: Agent,
    kind: str,
    direction: str,
    train_py: str | None,
    experiment_id: str | None,
) -> Plan | None:
    if kind in ("exploit", "explore"):
        action = DIRECTION_ACTIONS.get(direction)
        return (
            None if action is None else Plan(agent.parent, agent.parent.apply(action), "experiment")
        )
    if kind == "combine" and train_py is not None:
        child = com.sources.parse(train_py)
        com.sources.render(child)
        return None if child == agent.parent else Plan(agent.parent, child, "experiment")
    if kind == "replicate" and experiment_id in com.kept_runs:
        run = com.kept_runs[experiment_id]
        if run.parent != agent.parent or run.agent == agent.index:
            return None
        return Plan(run.parent, run.child, "replicate", replicate_of=experiment_id)
    return None


# --------------------------------------------------------------------------------------------------
# The event loop


def simulate(
    strategy: Strategy, seed: int, *, n_agents: int, gpu_hours: float, target_fraction: float
) -> dict[str, float | int | None]:
    """One seeded simulation of one strategy; returns its figures."""
    land = Landscape.generate(random.Random(seed))
    com = Community(
        strategy, land, n_agents, random.Random(seed * 7919 + STRATEGIES.index(strategy))
    )
    noise = random.Random(seed * 104729 + 17)  # the same noise stream for every strategy
    target = target_fraction * land.reachable()
    heap: list[tuple[float, int, int]] = []
    plans: dict[int, tuple[Plan, float]] = {}
    counter = 0

    def start(agent: Agent, t: float) -> None:
        nonlocal counter
        if strategy == "global_best":
            adopt_global_best(com, agent)
        plan = (
            choose_hub(com, agent, t)
            if strategy == "hub"
            else choose_solo(com, agent, dedup=strategy == "global_best")
        )
        duration = 1.0 / HARDWARE[agent.cls].runs_per_hour * noise.uniform(0.95, 1.05)
        plans[agent.index] = (plan, duration)
        com.metrics.sources["baseline" if plan.kind == "baseline" else plan.source] += 1
        com.in_flight[(plan.parent, plan.child)] = (
            com.in_flight.get((plan.parent, plan.child), 0) + 1
        )
        counter += 1
        heapq.heappush(heap, (t + duration, counter, agent.index))

    for agent in com.agents:
        start(agent, 0.0)
    reached: float | None = None
    while heap and com.gpu_hours < gpu_hours:
        finish, _, index = heapq.heappop(heap)
        agent = com.agents[index]
        plan, duration = plans.pop(index)
        com.in_flight[(plan.parent, plan.child)] -= 1
        com.gpu_hours += duration
        finish_run(com, agent, plan, noise, finish)
        true_best = com.community_best_true()
        com.metrics.curve.append((com.gpu_hours, true_best))
        if reached is None and true_best >= target:
            reached = com.gpu_hours
        start(agent, finish)
    m = com.metrics
    return {
        "gpu_hours_to_target": reached,
        **{
            f"gpu_hours_to_{round(f * 100)}pct": hours_to(com.metrics.curve, f * land.reachable())
            for f in SWEEP_FRACTIONS
        },
        "duplicate_rate": m.duplicates / max(m.experiment_runs, 1),
        "false_keeps": m.false_keeps,
        "best_improvement": com.community_best_true(),
        "dead_end_runs": m.dead_end_runs,
        "false_community_bests": m.false_bests,
        "runs": m.runs,
        "keeps": m.keeps,
        **{f"runs_{kind}": m.sources.get(kind, 0) for kind in RUN_SOURCES},
        "target": target,
    }


def hours_to(curve: Sequence[tuple[float, float]], level: float) -> float | None:
    """First GPU-hours at which the curve's true best reaches ``level`` (None: never)."""
    return next((hours for hours, best in curve if best >= level), None)


def finish_run(com: Community, agent: Agent, plan: Plan, noise: random.Random, t: float) -> None:
    land, c = com.land, agent.cls
    sigma = HARDWARE[c].sigma
    agent.runs += 1
    crashed = plan.kind == "experiment" and noise.random() < land.crash_probability(
        plan.parent, plan.child
    )
    measured = (
        None if crashed else BASE_VAL_BPB - land.quality(plan.child, c) + noise.gauss(0.0, sigma)
    )
    rid = sha256_hex(f"{com.strategy}-{len(com.runs)}-{agent.index}")
    if plan.kind == "baseline":
        assert measured is not None
        agent.measured[plan.child] = measured
        agent.parent_measured = measured
        com.record(
            Run(
                rid,
                agent.index,
                c,
                plan.parent,
                plan.child,
                "baseline",
                False,
                measured,
                None,
                "baseline",
                [],
                0.0,
                t,
            )
        )
        return
    parent_measured = agent.measured.get(plan.parent)
    directions = [] if plan.kind == "replicate" else com.directions_of(plan.parent, plan.child)
    true_delta = land.quality(plan.child, c) - land.quality(plan.parent, c)
    if plan.kind == "replicate":
        run = Run(
            rid,
            agent.index,
            c,
            plan.parent,
            plan.child,
            "replicate",
            False,
            measured,
            parent_measured,
            "replicate",
            [],
            true_delta,
            t,
        )
        com.record(run)
        com.replications[plan.replicate_of or ""].append(run)
        if measured is not None:
            agent.measured[plan.child] = measured
        if plan.replicate_of in com.kept_runs:
            com.update_best_hub(com.kept_runs[plan.replicate_of])
        return
    agent.tried.add((plan.parent, plan.child))
    keep = measured is not None and parent_measured is not None and measured < parent_measured
    status = "crash" if crashed else ("keep" if keep else "discard")
    run = Run(
        rid,
        agent.index,
        c,
        plan.parent,
        plan.child,
        "experiment",
        crashed,
        measured,
        parent_measured,
        status,
        directions,
        true_delta,
        t,
        plan.source,
    )
    com.record(run)
    if keep:
        assert measured is not None
        agent.measured[plan.child] = measured
        if com.strategy == "hub":
            com.kept_runs[rid] = run
            com.update_best_hub(run)
        else:
            agent.parent, agent.parent_measured = plan.child, measured
            com.update_best_solo(run)


# --------------------------------------------------------------------------------------------------
# Aggregation and output


def summarise(values: Sequence[float | int | None]) -> dict[str, float | int | None]:
    present = [float(v) for v in values if v is not None]
    if not present:
        return {"mean": None, "median": None, "p10": None, "p90": None, "n": 0}
    qs = (
        statistics.quantiles(present, n=10, method="inclusive")
        if len(present) > 1
        else [present[0]] * 9
    )
    return {
        "mean": statistics.fmean(present),
        "median": statistics.median(present),
        "p10": qs[0],
        "p90": qs[-1],
        "n": len(present),
    }


def censored_median(values: Sequence[float | int | None]) -> float | None:
    """Median where None (target never reached) counts as +∞; None when that median is +∞."""
    ordered = sorted(math.inf if v is None else float(v) for v in values)
    median = statistics.median(ordered) if ordered else math.inf
    return None if math.isinf(median) else median


def compare(
    seeds: int,
    n_agents: int,
    gpu_hours: float,
    target_fraction: float,
    progress: Callable[[str], None] | None = None,
) -> dict[str, object]:
    """Run every strategy on ``seeds`` seeds; the pinned JSON shape of DESIGN.md."""
    out: dict[str, dict[str, object]] = {}
    for strategy in STRATEGIES:
        per_seed = [
            simulate(
                strategy, s, n_agents=n_agents, gpu_hours=gpu_hours, target_fraction=target_fraction
            )
            for s in range(seeds)
        ]
        if progress:
            progress(strategy)
        spread = {
            key: summarise([r[key] for r in per_seed]) for key in per_seed[0] if key != "target"
        }
        hours = spread["gpu_hours_to_target"]
        out[strategy] = {
            "gpu_hours_to_target": censored_median([r["gpu_hours_to_target"] for r in per_seed]),
            "gpu_hours_to_fraction": {
                f"{f:.2f}": censored_median(
                    [r[f"gpu_hours_to_{round(f * 100)}pct"] for r in per_seed]
                )
                for f in SWEEP_FRACTIONS
            },
            "reached_target": hours["n"],
            "duplicate_rate": spread["duplicate_rate"]["mean"],
            "false_keeps": spread["false_keeps"]["mean"],
            "best_improvement": spread["best_improvement"]["mean"],
            "dead_end_runs": spread["dead_end_runs"]["mean"],
            "false_community_bests": spread["false_community_bests"]["mean"],
            "spread": spread,
        }
    return {
        "config": {
            "seeds": seeds,
            "agents": n_agents,
            "gpu_hours": gpu_hours,
            "target_fraction": target_fraction,
            "hardware": [h.__dict__ for h in HARDWARE],
        },
        "strategies": out,
    }


def table(result: dict[str, object]) -> str:
    strategies = result["strategies"]
    assert isinstance(strategies, dict)
    header = f"{'strategy':<12} {'GPU-h to target':>16} {'reached':>8} {'dup rate':>9} {'dead ends':>10} {'false keeps':>12} {'false bests':>12} {'best Δbpb':>10}"
    lines = [header, "-" * len(header)]
    for name, s in strategies.items():
        hours = s["gpu_hours_to_target"]
        sp = s["spread"]["gpu_hours_to_target"]
        hrs = "never" if hours is None else f"{hours:.1f} ({sp['p10']:.0f}–{sp['p90']:.0f})"
        lines.append(
            f"{name:<12} {hrs:>16} {s['reached_target']:>8} {s['duplicate_rate']:>9.1%} {s['dead_end_runs']:>10.1f} "
            f"{s['false_keeps']:>12.1f} {s['false_community_bests']:>12.1f} {s['best_improvement']:>10.4f}"
        )
    lines += [
        "",
        "GPU-hours (median over seeds) until the community best reaches a share of the reachable:",
    ]
    for name, s in strategies.items():
        cells = "  ".join(
            f"{frac}: {'never' if hours is None else f'{hours:.1f}'}"
            for frac, hours in s["gpu_hours_to_fraction"].items()
        )
        lines.append(f"{name:<12} {cells}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--agents", type=int, default=12)
    parser.add_argument(
        "--gpu-hours", type=float, default=60.0, help="simulated GPU-hours per community"
    )
    parser.add_argument(
        "--target",
        type=float,
        default=0.5,
        help="target: this fraction of the reachable improvement",
    )
    parser.add_argument("--json", action="store_true", help="print the pinned JSON shape")
    args = parser.parse_args(argv)
    result = compare(
        args.seeds,
        args.agents,
        args.gpu_hours,
        args.target,
        progress=lambda s: print(f"simulated {s}", file=sys.stderr),
    )
    print(json.dumps(result, indent=2) if args.json else table(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
