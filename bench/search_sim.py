"""Research simulator: does the shipped hub make a community of agents find improvements faster?

A seeded simulation of volunteers running the keep/discard loop on mixed hardware (issue 17;
figures and verdict in docs/suggestions.md). Every strategy uses the same agents and the same
learning proposer (:class:`Proposer`); they differ only in what the agents can see and share:

- ``independent``: upstream's solo loop: greedy on its own noisy measurements; the proposer learns
  from the agent's own history only.
- ``global_best``: the autoresearch-at-home style swarm: every result is shared (the proposer learns
  from all of them), a claim on (parent, change) expires after 15 minutes, an exact published
  (parent, change) is skipped, and every ADOPT_EVERY_SWARM runs an agent tries the shared global best
  (lowest val_bpb anyone reported, raw) and keeps it if it beats its own best on its machine.
- ``hub`` (and its variants, :data:`VARIANTS`): the **shipped hub** (:mod:`sim_hub`): a migrated
  SQLite store driven through the functions the routes call, with signed records, the hub's own z
  from each client's DEFAULT_SEEDS-seed σ estimate, the one community-best rule, the store's claims, and the
  suggestions exactly as ``GET /suggestions`` serves them (:func:`autoresearch.hub.suggestions.for_client`).
  Agents adopt their class's community best every ``adopt_every`` runs like the client
  (``client/federation.py`` ``adopt``: trained here, kept only if it beats the local best).

The landscape (:class:`Landscape`, parameters and sources in docs/suggestions.md) is calibrated to
real runs: bounded quality (a floor ``BASE − HEADROOM`` that the true val_bpb never crosses),
diminishing returns (saturating), per-class seed noise σ, machine offsets, hardware-dependent
effects, interactions and crashes.

Usage::

    python bench/search_sim.py                 # table
    python bench/search_sim.py --json          # {"strategies": {"independent": {...}, ...}, ...}
    python bench/search_sim.py --seeds 5 --agents 6 --gpu-hours 20 --variants hub
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
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sim_hub import ShippedHub  # noqa: E402

from autoresearch.client.calibration import DEFAULT_SEEDS  # noqa: E402
from autoresearch.client.fitting import seed_sigma  # noqa: E402
from autoresearch.hub.suggestions import ReplicatePolicy  # noqa: E402
from autoresearch.protocol import sha256_hex  # noqa: E402
from autoresearch.protocol.source import extract_directions  # noqa: E402

EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
STEP = 1.25  # one ↑ multiplies a hyperparameter by this, one ↓ divides
BASE_VAL_BPB = 1.0  # reference val_bpb on the fastest class at the 300 s budget (upstream H100: ≈0.998)
HEADROOM = 0.035  # bits per byte the best train.py can gain: the floor is BASE − HEADROOM on a class
MACHINE_SD = 0.0015  # per-machine offset of val_bpb within a class (bits per byte)
CLAIM_EXPIRY_H = 0.25  # global_best: a claim lapses after 15 minutes
ADOPT_EVERY_SWARM = 5  # global_best: runs between tries of the shared global best
LEASE_MARGIN_S = 120  # hub: lease = run duration + this
HELPFUL_SHARE = 0.40  # hyperparameters not at their optimum (the sweep varies it, :func:`scenario`)
HARDWARE_DEPENDENT = 0.3  # of those, the share helpful on one class only (0.40 · 0.3 = 12 %)


@dataclass(frozen=True)
class HardwareClass:
    """A simulated GPU class: seed noise σ (bits per byte, std across seeds at the full budget), speed
    (runs per hour: 300 s of training plus start-up and evaluation), share of agents, and the offset
    of its val_bpb at the fixed budget (slower GPUs train fewer tokens in 300 s)."""

    name: str
    sigma: float
    runs_per_hour: float
    share: float
    offset: float


HARDWARE: tuple[HardwareClass, ...] = (
    HardwareClass("NVIDIA H100 80GB HBM3", 0.0003, 10.0, 0.25, 0.0),
    HardwareClass("NVIDIA A100-SXM4-80GB", 0.0005, 7.0, 0.35, 0.015),
    HardwareClass("NVIDIA GeForce RTX 4090", 0.0008, 5.5, 0.40, 0.030),
)

PARAM_NAMES = (
    "MATRIX_LR", "EMBEDDING_LR", "UNEMBEDDING_LR", "SCALAR_LR", "WEIGHT_DECAY", "ADAM_BETA1",
    "ADAM_BETA2", "MUON_MOMENTUM", "WARMUP_RATIO", "WARMDOWN_RATIO", "FINAL_LR_FRAC", "DEPTH",
    "ASPECT_RATIO", "HEAD_DIM", "MLP_RATIO", "TOTAL_BATCH_SIZE", "DEVICE_BATCH_SIZE", "ROPE_BASE",
    "LOGIT_SOFTCAP", "INIT_SCALE", "VE_GATE_SCALE", "NORM_EPS", "GRAD_CLIP", "X0_LAMBDA",
)
SWITCH_NAMES = (
    "USE_QK_NORM_SCALE", "USE_VALUE_EMBEDS_ALL", "USE_SWIGLU", "USE_FP8_MATMUL", "USE_SLIDING_WINDOW",
    "USE_ZERO_INIT_PROJ",
)


# --------------------------------------------------------------------------------------------------
# Landscape


def _log_uniform(rng: random.Random, lo: float, hi: float) -> float:
    return math.exp(rng.uniform(math.log(lo), math.log(hi)))


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
        if kind in ("up", "down"):
            steps = list(self.steps)
            steps[index] += 1 if kind == "up" else -1
            return State(tuple(steps), self.switches)
        switches = list(self.switches)
        switches[index] = not switches[index]
        return State(self.steps, tuple(switches))


Action = tuple[str, int]  # ("up" | "down" | "flip", index)
ALL_ACTIONS: tuple[Action, ...] = tuple(
    [(k, i) for i in range(len(PARAM_NAMES)) for k in ("up", "down")] + [("flip", f) for f in range(len(SWITCH_NAMES))]
)


@dataclass
class Landscape:
    """The hidden truth of one seed. ``raw(state, c)`` sums the effects (bits per byte, higher is
    better): hyperparameter i contributes ``−w·((x − o)² − o²)`` at step count x (optimum o, by class),
    a switch its effect, an interacting pair ``w·x_i·x_j``. The true improvement saturates:
    ``HEADROOM·(1 − exp(−raw/HEADROOM))`` for raw ≥ 0 (diminishing returns; never more than HEADROOM,
    so the true val_bpb never crosses the floor), ``raw`` below 0."""

    weights: list[float]
    optima: list[list[float]]
    crash_up: list[float]
    switch_effects: list[list[float]]
    switch_crash: list[float]
    pairs: list[tuple[int, int, float]]
    base_values: list[float]

    @classmethod
    def generate(cls, rng: random.Random) -> Landscape:
        n, c = len(PARAM_NAMES), len(HARDWARE)
        weights, optima, crash_up = [], [], []
        for _ in range(n):
            kind = rng.random()
            if kind < 1 - HELPFUL_SHARE:  # at its optimum already: every step hurts
                o, w = [0.0] * c, _log_uniform(rng, 3e-4, 3e-3)
            elif kind < 1 - HARDWARE_DEPENDENT * HELPFUL_SHARE:  # helpful 1–5 steps away
                sign = rng.choice((-1.0, 1.0))
                o = [sign * rng.uniform(1.0, 5.0)] * c
                w = _log_uniform(rng, 1e-3, 6e-3) / o[0] ** 2
            else:  # hardware-dependent: helpful on one class, at its optimum elsewhere
                good, sign = rng.randrange(c), rng.choice((-1.0, 1.0))
                o = [sign * rng.uniform(1.0, 2.5) if k == good else 0.0 for k in range(c)]
                w = _log_uniform(rng, 2e-3, 5e-3) / max(abs(v) for v in o) ** 2
            weights.append(w)
            optima.append(o)
            crash_up.append(rng.uniform(0.2, 0.5) if rng.random() < 0.2 else 0.0)
        switch_effects, switch_crash = [], []
        for _ in SWITCH_NAMES:
            kind = rng.random()
            if kind < 0.25:
                e = rng.uniform(1e-3, 4e-3)
            elif kind < 0.6:
                e = rng.uniform(-2e-4, 2e-4)
            else:
                e = -rng.uniform(5e-4, 4e-3)
            switch_effects.append([e * rng.uniform(0.7, 1.3) for _ in range(c)])
            switch_crash.append(rng.uniform(0.2, 0.6) if rng.random() < 0.25 else 0.0)
        pairs = []
        for _ in range(4):  # |w_ij| < √(w_i·w_j): the quadratic form stays bounded (no runaway pair)
            i, j = rng.sample(range(n), 2)
            pairs.append((i, j, rng.choice((-1.0, 1.0)) * rng.uniform(0.2, 0.6) * math.sqrt(weights[i] * weights[j])))
        base_values = [round(rng.uniform(0.01, 2.0), 4) for _ in range(n)]
        return cls(weights, optima, crash_up, switch_effects, switch_crash, pairs, base_values)

    def raw(self, state: State, c: int) -> float:
        q = 0.0
        for i, x in enumerate(state.steps):
            if x:
                o = self.optima[i][c]
                q -= self.weights[i] * ((x - o) ** 2 - o * o)
        for f, on in enumerate(state.switches):
            if on:
                q += self.switch_effects[f][c]
        for i, j, w in self.pairs:
            q += w * state.steps[i] * state.steps[j]
        return q

    def quality(self, state: State, c: int) -> float:
        """True improvement over the reference on class ``c`` (bits per byte, ≤ HEADROOM)."""
        r = self.raw(state, c)
        return HEADROOM * -math.expm1(-r / HEADROOM) if r > 0 else r

    def mean_quality(self, state: State) -> float:
        """True improvement averaged over classes, weighted by their share of agents."""
        return sum(h.share * self.quality(state, c) for c, h in enumerate(HARDWARE))

    def crash_probability(self, child: State) -> float:
        """Crash chance of a run of ``child``: a 2 % base rate (broken edits), more for risky settings."""
        p = 0.02
        for i, x in enumerate(child.steps):
            if x >= 2:
                p = max(p, self.crash_up[i])
        for f, on in enumerate(child.switches):
            if on:
                p = max(p, self.switch_crash[f])
        return p

    def reachable(self) -> float:
        """The best mean true improvement a greedy search over single changes finds from the
        share-weighted optimum (the yardstick of the targets)."""
        steps = tuple(round(sum(h.share * self.optima[i][c] for c, h in enumerate(HARDWARE))) for i in range(len(PARAM_NAMES)))
        switches = tuple(sum(h.share * self.switch_effects[f][c] for c, h in enumerate(HARDWARE)) > 0 for f in range(len(SWITCH_NAMES)))
        state = State(steps, switches)
        value = self.mean_quality(state)
        while True:
            cand = max((state.apply(a) for a in ALL_ACTIONS), key=self.mean_quality)
            if self.mean_quality(cand) <= value + 1e-12:
                return value
            state, value = cand, self.mean_quality(cand)


class Sources:
    """Renders states as ``train.py`` sources and reads them back (for the real hub code path)."""

    def __init__(self, land: Landscape) -> None:
        self.land = land
        self._cache: dict[State, str] = {}

    def render(self, state: State) -> str:
        text = self._cache.get(state)
        if text is None:
            lines = ['"""Simulated train.py (bench/search_sim.py)."""', ""]
            lines += [f"{n} = {self.land.base_values[i] * STEP ** state.steps[i]!r}" for i, n in enumerate(PARAM_NAMES)]
            lines += [f"{n} = {state.switches[f]!r}" for f, n in enumerate(SWITCH_NAMES)]
            text = self._cache[state] = "\n".join(lines) + "\n"
        return text

    def parse(self, source: str) -> State:
        """The state of a rendered (or merged) source.

        Raises:
            ValueError: a constant is missing or not a number/boolean.
        """
        values: dict[str, object] = {}
        for node in ast.parse(source).body:
            if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
                values[node.targets[0].id] = ast.literal_eval(node.value)
        try:
            steps = tuple(
                round(math.log(float(values[n]) / self.land.base_values[i]) / math.log(STEP))  # type: ignore[arg-type]
                for i, n in enumerate(PARAM_NAMES)
            )
            return State(steps, tuple(bool(values[n]) for n in SWITCH_NAMES))
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not a simulated train.py: {exc}") from exc


def action_direction(action: Action) -> str:
    kind, index = action
    if kind == "flip":
        return SWITCH_NAMES[index]
    return f"{PARAM_NAMES[index]} {'↑' if kind == 'up' else '↓'}"


DIRECTION_ACTIONS = {action_direction(a): a for a in ALL_ACTIONS}


# --------------------------------------------------------------------------------------------------
# The learning proposer (the same model for every strategy)


class Proposer:
    """A proposer that learns from the results it can see: Thompson sampling over directions.

    Each direction's mean z (improvement in the reporter's σ) has a N(0, 1) prior; an ok result of a
    single-direction run is an observation with sd √2 (as :mod:`autoresearch.protocol.best`), a crash
    an observation of z = CRASH_Z. Proposing draws once per direction and returns the best draw that
    ``allowed`` accepts. It stands for an LLM agent reading a results table: it repeats what paid and
    stops what failed, and knows nothing more about the landscape."""

    CRASH_Z = -3.0

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.n: dict[str, int] = defaultdict(int)
        self.total: dict[str, float] = defaultdict(float)

    def observe(self, directions: Sequence[str], z: float | None) -> None:
        if len(directions) != 1:
            return
        d = directions[0]
        self.n[d] += 1
        self.total[d] += self.CRASH_Z if z is None else max(-10.0, min(10.0, z))

    def ranked(self) -> list[Action]:
        """Every action, best draw first."""
        draws = []
        for action in ALL_ACTIONS:
            d = action_direction(action)
            precision = 1.0 + self.n[d] / 2.0
            mean = self.total[d] / 2.0 / precision
            draws.append((mean + self.rng.gauss(0.0, 1.0) / math.sqrt(precision), action))
        draws.sort(key=lambda t: -t[0])
        return [a for _, a in draws]


# --------------------------------------------------------------------------------------------------
# Agents and the community


@dataclass
class Agent:
    index: int
    cls: int
    offset: float  # this machine's val_bpb offset (bits per byte)
    sigma_estimate: float  # the σ its calibration measured (DEFAULT_SEEDS seeds, calibrated_sigma)
    proposer: Proposer
    parent: State = field(default_factory=State.reference)
    measured: dict[State, float] = field(default_factory=dict)  # own val_bpb of states
    runs: int = 0
    tried: set[tuple[State, State]] = field(default_factory=set)
    calibration_id: str = ""

    @property
    def name(self) -> str:
        return f"agent-{self.index}"

    @property
    def parent_measured(self) -> float | None:
        return self.measured.get(self.parent)


@dataclass
class Plan:
    parent: State
    child: State
    kind: str  # experiment | baseline | replicate | adopt
    source: str = "proposer"  # proposer | exploit | explore | combine | replicate | baseline | adopt
    runs: int = 1  # runs it takes (a replication of an unmeasured parent measures it first)


@dataclass(frozen=True)
class Variant:
    """A hub policy variant: which suggestion kinds agents follow before their own proposer, and how
    often they try the community best."""

    name: str
    follow: tuple[str, ...]
    adopt_every: int
    replicate: ReplicatePolicy = "flagged"  # the hub's replicate policy (hub/suggestions.py)


VARIANTS: dict[str, Variant] = {
    "hub": Variant("hub", ("exploit", "explore", "combine", "replicate"), 10),
    "hub_adopt_every_run": Variant("hub_adopt_every_run", ("exploit", "explore", "combine", "replicate"), 1),
    "hub_combine_replicate": Variant("hub_combine_replicate", ("combine", "replicate"), 1),
    "hub_no_replicate": Variant("hub_no_replicate", ("exploit", "explore", "combine"), 1),
    "hub_decisive": Variant("hub_decisive", ("exploit", "explore", "combine", "replicate"), 10, "decisive"),
    "hub_decisive_top1": Variant("hub_decisive_top1", ("exploit", "explore", "combine", "replicate"), 10, "decisive_top1"),
    "hub_decisive_adopt_every_run": Variant(
        "hub_decisive_adopt_every_run", ("exploit", "explore", "combine", "replicate"), 1, "decisive"
    ),
}
"""``hub`` is the client's defaults (adopt every 10 runs, follow every suggestion); the others are the
variants tried (docs/suggestions.md reports all of them)."""
BASELINES = ("independent", "global_best")


@dataclass
class Metrics:
    curve: list[tuple[float, float]] = field(default_factory=list)  # (GPU-hours, true community best)
    experiments: list[bool] = field(default_factory=list)  # kept?, per experiment run in order
    duplicates: int = 0
    false_keeps: int = 0
    false_bests: int = 0
    noise_bests: int = 0
    crashes: int = 0
    hours: dict[str, float] = field(default_factory=lambda: defaultdict(float))  # GPU-hours by source


class Community:
    """One simulated community: agents, what they share, the community best."""

    def __init__(self, strategy: str, land: Landscape, n_agents: int, seed: int) -> None:
        self.strategy = strategy
        self.variant = VARIANTS.get(strategy)
        self.land = land
        self.sources = Sources(land)
        self.rng = random.Random(seed * 7919 + 1)
        setup = random.Random(seed * 31 + 5)  # the same machines for every strategy
        shared = Proposer(random.Random(seed * 101 + 3))
        self.agents = []
        for i in range(n_agents):
            c = _pick_class(i, n_agents)
            est = calibrated_sigma(HARDWARE[c].sigma, setup)
            own = shared if strategy != "independent" else Proposer(random.Random(seed * 101 + 7 * i + 11))
            self.agents.append(Agent(i, c, setup.gauss(0.0, MACHINE_SD), est, own))
        self.done: set[tuple[State, State]] = set()
        self.by_sha: dict[str, State] = {}  # sha256 of a published source → its state (hub)
        self.claims: dict[tuple[State, State], float] = {}  # global_best: claim → expiry (hours)
        self.best: State = State.reference()
        self.best_reported: float = math.inf
        self.best_id: str | None = None  # hub: id of the community best across classes
        self.offered: dict[int, str] = {}  # hub: agent → the class best last offered to it
        self.metrics = Metrics()
        self.hub: ShippedHub | None = None
        if self.variant is not None:
            self.hub = ShippedHub(self.sources.render(State.reference()))
            for a in self.agents:
                h = HARDWARE[a.cls]
                self.hub.register(a.name, h.name, EPOCH)
                a.calibration_id = self.hub.calibrate(
                    a.name, h.name, asymptote=BASE_VAL_BPB + h.offset + a.offset - 0.2,
                    sigma=a.sigma_estimate, now=EPOCH,
                )

    def true_val_bpb(self, state: State, agent: Agent) -> float:
        return BASE_VAL_BPB + HARDWARE[agent.cls].offset + agent.offset - self.land.quality(state, agent.cls)

    def floor(self, agent: Agent) -> float:
        return BASE_VAL_BPB + HARDWARE[agent.cls].offset + agent.offset - HEADROOM

    def set_best(self, state: State) -> None:
        if state == self.best:
            return
        before, after = self.land.mean_quality(self.best), self.land.mean_quality(state)
        if after <= before:
            self.metrics.false_bests += 1
            if all(self.land.quality(state, c) <= self.land.quality(self.best, c) for c in range(len(HARDWARE))):
                self.metrics.noise_bests += 1  # no class gains: only noise made it the best
        self.best = state

    def refresh_hub_best(self) -> None:
        assert self.hub is not None
        best_id = self.hub.best_id(None)
        if best_id is not None and best_id != self.best_id:
            self.best_id = best_id
            self.set_best(self.sources.parse(self.hub.best(None).train_py))


def calibrated_sigma(sigma: float, rng: random.Random) -> float:
    """The seed noise a client's calibration reports on a machine whose true seed noise is ``sigma``
    (bits per byte): ``seed_sigma`` (sample std, ddof = 1, the client's own function) of
    ``DEFAULT_SEEDS`` full-budget runs (``client/calibration.py``), so σ̂/σ ~ √(χ²ₖ₋₁/(k − 1)) with
    k = 5: within ×0.42–1.54 of σ on 90 % of machines (χ²₄ quantiles 0.711 and 9.488). Floored at
    0.05 σ (a zero would make every z infinite; at k = 5 a draw that low has odds below 1e-5)."""
    return max(0.05 * sigma, seed_sigma([rng.gauss(0.0, sigma) for _ in range(DEFAULT_SEEDS)]))


def _pick_class(i: int, n: int) -> int:
    bounds, acc = [], 0.0
    for h in HARDWARE:
        acc += h.share
        bounds.append(acc)
    position = (i + 0.5) / n
    return next(c for c, b in enumerate(bounds) if position <= b + 1e-9)


def now_of(hours: float) -> datetime:
    return EPOCH + timedelta(hours=hours)


# --------------------------------------------------------------------------------------------------
# Choosing the next run


def propose(com: Community, agent: Agent, allowed: Callable[[State], bool]) -> Plan:
    """The agent's own proposer on its parent: the best draw not yet tried by it and ``allowed``; when
    every single change is used up, two at once."""
    ranked = agent.proposer.ranked()
    for action in ranked:
        child = agent.parent.apply(action)
        if (agent.parent, child) not in agent.tried and allowed(child):
            return Plan(agent.parent, child, "experiment")
    for _ in range(200):
        child = agent.parent.apply(com.rng.choice(ranked[:10])).apply(com.rng.choice(ALL_ACTIONS))
        if child != agent.parent and (agent.parent, child) not in agent.tried and allowed(child):
            return Plan(agent.parent, child, "experiment")
    return Plan(agent.parent, agent.parent.apply(ranked[0]), "experiment")


def choose_independent(com: Community, agent: Agent, t: float) -> Plan:
    if agent.parent_measured is None:
        return Plan(agent.parent, agent.parent, "baseline", "baseline")
    return propose(com, agent, lambda _c: True)


def choose_global_best(com: Community, agent: Agent, t: float) -> Plan:
    if agent.parent_measured is None:
        return Plan(agent.parent, agent.parent, "baseline", "baseline")
    mine = agent.parent_measured
    if agent.runs % ADOPT_EVERY_SWARM == 0 and com.best != agent.parent and com.best_reported < mine:
        if (agent.parent, com.best) not in agent.tried:
            return Plan(agent.parent, com.best, "adopt", "adopt")

    def allowed(child: State) -> bool:
        key = (agent.parent, child)
        return key not in com.done and com.claims.get(key, -1.0) < t

    plan = propose(com, agent, allowed)
    com.claims[(plan.parent, plan.child)] = t + CLAIM_EXPIRY_H
    return plan


def choose_hub(com: Community, agent: Agent, t: float) -> Plan:
    hub, variant = com.hub, com.variant
    assert hub is not None and variant is not None
    h = HARDWARE[agent.cls]
    if agent.parent_measured is None:
        return Plan(agent.parent, agent.parent, "baseline", "baseline")
    key_id = hub.keys[agent.name].key_id
    if agent.runs % variant.adopt_every == 0 and hub.best_id(h.name) not in (None, com.offered.get(agent.index)):
        best = hub.best(h.name)  # each community best is offered once (client/federation.py adopt)
        com.offered[agent.index] = best.experiment.id if best.experiment is not None else ""
        if best.experiment is not None and best.experiment.key_id != key_id and best.val_bpb is not None \
                and best.val_bpb < agent.parent_measured:
            state = com.sources.parse(best.train_py)
            if state != agent.parent and (agent.parent, state) not in agent.tried:
                return Plan(agent.parent, state, "adopt", "adopt")
    now = now_of(t)
    duration = 1.0 / h.runs_per_hour
    lease = int(duration * 3600) + LEASE_MARGIN_S

    def claim(child: State) -> bool:
        if (agent.parent, child) in agent.tried:
            return False
        parent_src, child_src = com.sources.render(agent.parent), com.sources.render(child)
        return hub.claim(agent.name, parent_src, child_src, lease_seconds=lease, now=now) == "granted"

    for item in hub.suggestions(h.name, key_id, now, replicate=variant.replicate):
        if item.kind not in variant.follow:
            continue
        if item.kind in ("exploit", "explore"):
            action = DIRECTION_ACTIONS.get(item.direction)
            if action is not None and claim(child := agent.parent.apply(action)):
                return Plan(agent.parent, child, "experiment", item.kind)
        elif item.kind == "combine" and item.train_py is not None:
            child = com.sources.parse(item.train_py)
            if child != agent.parent and claim(child):
                return Plan(agent.parent, child, "experiment", "combine")
        elif item.kind == "replicate" and item.train_py is not None and item.parent_sha256 is not None:
            child = com.sources.parse(item.train_py)
            parent = com.by_sha.get(item.parent_sha256)
            if parent is not None and (parent, child) not in agent.tried:
                return Plan(parent, child, "replicate", "replicate", runs=1 if parent in agent.measured else 2)
    tries = 0

    def allowed(child: State) -> bool:
        nonlocal tries
        tries += 1
        return tries > 30 or claim(child)

    return propose(com, agent, allowed)


# --------------------------------------------------------------------------------------------------
# Running and publishing


def finish(com: Community, agent: Agent, plan: Plan, noise: random.Random, t: float) -> None:
    """Measure the planned run(s) on the agent's machine, decide keep/discard, share/publish."""
    land, m, h = com.land, com.metrics, HARDWARE[agent.cls]
    agent.runs += 1

    def measure(state: State) -> float:
        return max(self_floor, com.true_val_bpb(state, agent) + noise.gauss(0.0, h.sigma))

    self_floor = com.floor(agent)
    crashed = plan.kind != "baseline" and noise.random() < land.crash_probability(plan.child)
    if plan.kind == "baseline":
        agent.measured[plan.parent] = measure(plan.parent)
        return
    if plan.parent not in agent.measured:  # a replication of a parent this machine never ran
        agent.measured[plan.parent] = measure(plan.parent)
    parent_measured = agent.measured[plan.parent]
    measured = None if crashed else measure(plan.child)
    agent.tried.add((plan.parent, plan.child))
    directions = extract_directions(com.sources.render(plan.parent), com.sources.render(plan.child))
    true_delta = land.quality(plan.child, agent.cls) - land.quality(plan.parent, agent.cls)
    keep = measured is not None and measured < parent_measured and plan.kind != "replicate"
    status = "crash" if crashed else ("keep" if keep else "discard")
    z = None if measured is None else (parent_measured - measured) / agent.sigma_estimate
    if plan.kind == "experiment":
        m.duplicates += (plan.parent, plan.child) in com.done
        m.experiments.append(keep)
        m.crashes += crashed
        m.false_keeps += keep and true_delta <= 0
        com.done.add((plan.parent, plan.child))
        agent.proposer.observe(directions, z)
    if keep:
        assert measured is not None
        agent.measured[plan.child] = measured
        agent.parent = plan.child
    if com.hub is not None:
        if plan.kind != "adopt":  # the loop publishes its experiments; an adoption is not a finding
            parent_src, child_src = com.sources.render(plan.parent), com.sources.render(plan.child)
            com.by_sha[sha256_hex(parent_src)] = plan.parent
            com.by_sha[sha256_hex(child_src)] = plan.child
            com.hub.publish(
                agent.name, parent_src, child_src, val_bpb=measured, parent_val_bpb=parent_measured,
                status="keep" if (keep or (plan.kind == "replicate" and measured is not None and measured < parent_measured)) else status,
                hardware_class=h.name, calibration_id=agent.calibration_id, sigma=agent.sigma_estimate,
                description=" + ".join(directions) or "no change", now=now_of(t),
            )
            com.refresh_hub_best()
    elif keep and com.strategy == "global_best" or keep and com.strategy == "independent":
        # the shared/community best of the solo strategies: the lowest val_bpb anyone reported
        # (independent: the best own improvement over its own reference measurement)
        if com.strategy == "global_best":
            if measured is not None and measured < com.best_reported:
                com.best_reported = measured
                com.set_best(plan.child)
        else:
            ref = agent.measured.get(State.reference())
            gain = (ref - measured) if ref is not None and measured is not None else 0.0
            if -gain < com.best_reported:
                com.best_reported = -gain
                com.set_best(plan.child)


def simulate(
    strategy: str, seed: int, *, n_agents: int, gpu_hours: float, target_fraction: float,
    inspect: Callable[[Community], None] | None = None,
) -> dict[str, object]:
    """One seeded simulation of one strategy (a baseline or a :data:`VARIANTS` key); its figures.
    ``inspect`` sees the community at the end, before its hub database is closed (tests).

    Raises:
        ValueError: unknown strategy.
    """
    if strategy not in BASELINES and strategy not in VARIANTS:
        raise ValueError(f"unknown strategy {strategy!r}; expected one of {[*BASELINES, *VARIANTS]}")
    land = Landscape.generate(random.Random(seed))
    com = Community(strategy, land, n_agents, seed)
    noise = random.Random(seed * 104729 + 17)
    reachable = land.reachable()
    choose = {"independent": choose_independent, "global_best": choose_global_best}.get(strategy, choose_hub)
    heap: list[tuple[float, int, int]] = []
    plans: dict[int, tuple[Plan, float]] = {}
    counter = 0
    spent = 0.0

    def start(agent: Agent, t: float) -> None:
        nonlocal counter
        plan = choose(com, agent, t)
        duration = plan.runs / HARDWARE[agent.cls].runs_per_hour * noise.uniform(0.95, 1.05)
        plans[agent.index] = (plan, duration)
        counter += 1
        heapq.heappush(heap, (t + duration, counter, agent.index))

    try:
        for agent in com.agents:
            start(agent, 0.0)
        while heap and spent < gpu_hours:
            t, _, index = heapq.heappop(heap)
            agent = com.agents[index]
            plan, duration = plans.pop(index)
            spent += duration
            com.metrics.hours[plan.source if plan.kind == "experiment" else plan.kind] += duration
            finish(com, agent, plan, noise, t)
            com.metrics.curve.append((spent, land.mean_quality(com.best)))
            start(agent, t)
        if inspect is not None:
            inspect(com)
    finally:
        if com.hub is not None:
            com.hub.close()
    m = com.metrics
    quarter = max(1, len(m.experiments) // 4)
    overhead = sum(v for k, v in m.hours.items() if k in ("baseline", "replicate", "adopt"))
    return {
        "gpu_hours_to_target": hours_to(m.curve, target_fraction * reachable),
        "gpu_hours_to_50pct": hours_to(m.curve, 0.5 * reachable),
        "gpu_hours_to_75pct": hours_to(m.curve, 0.75 * reachable),
        "duplicate_rate": m.duplicates / max(len(m.experiments), 1),
        "false_keeps": m.false_keeps,
        "false_community_bests": m.false_bests,
        "noise_only_community_bests": m.noise_bests,
        "best_improvement": land.mean_quality(com.best),
        "reachable": reachable,
        "keep_rate_early": statistics.fmean(m.experiments[:quarter]) if m.experiments else None,
        "keep_rate_late": statistics.fmean(m.experiments[-quarter:]) if m.experiments else None,
        "crash_rate": m.crashes / max(len(m.experiments), 1),
        "overhead_share": overhead / max(spent, 1e-9),
        "runs": len(m.experiments),
        "hours_by_source": dict(m.hours),
    }


def hours_to(curve: Sequence[tuple[float, float]], level: float) -> float | None:
    """First GPU-hours at which the curve's true best reaches ``level`` (None: never)."""
    return next((hours for hours, best in curve if best >= level), None)


def solo_keep_curve(seed: int, *, runs: int = 700, window: int = 100) -> list[float]:
    """Keep rate per ``window`` runs of one upstream agent on one H100 for ``runs`` runs (the shape
    to compare with real long runs)."""
    land = Landscape.generate(random.Random(seed))
    com = Community("independent", land, 1, seed)
    agent = com.agents[0]
    agent.cls, agent.offset = 0, 0.0
    agent.sigma_estimate = HARDWARE[0].sigma
    noise = random.Random(seed * 104729 + 17)
    for _ in range(runs + 1):
        finish(com, agent, choose_independent(com, agent, 0.0), noise, 0.0)
    kept = com.metrics.experiments
    return [statistics.fmean(kept[i : i + window]) for i in range(0, len(kept) - window + 1, window)]


# --------------------------------------------------------------------------------------------------
# Aggregation and output


def censored_median(values: Sequence[float | None]) -> float:
    """Median where None (never reached) counts as +∞."""
    return statistics.median(math.inf if v is None else float(v) for v in values)


def interval(values: Sequence[float | None], stat: Callable[[Sequence[float | None]], float], *, seed: int = 0,
             n_boot: int = 400) -> tuple[float, float]:
    """90 % bootstrap percentile interval of ``stat`` over the seeds (Efron & Tibshirani 1993, ch. 13)."""
    rng = random.Random(seed)
    draws = sorted(stat([rng.choice(values) for _ in values]) for _ in range(n_boot))
    return draws[int(0.05 * n_boot)], draws[int(0.95 * n_boot) - 1]


def _finite(x: float) -> float | None:
    return None if math.isinf(x) or math.isnan(x) else x


def summarise(per_seed: list[dict[str, object]], reference: list[dict[str, object]] | None) -> dict[str, object]:
    """Figures of one strategy over its seeds (medians of GPU-hours with +∞ for never, means else);
    with ``reference`` (global_best's seeds), the per-seed ratio of GPU-hours to 50 % and 75 %."""
    out: dict[str, object] = {}
    for key in ("gpu_hours_to_target", "gpu_hours_to_50pct", "gpu_hours_to_75pct"):
        values = [r[key] for r in per_seed]  # type: ignore[misc]
        lo, hi = interval(values, censored_median)  # type: ignore[arg-type]
        out[key] = _finite(censored_median(values))  # type: ignore[arg-type]
        out[f"{key}_interval"] = [_finite(lo), _finite(hi)]
        out[f"{key}_reached"] = sum(v is not None for v in values)
    if reference is not None:
        for key in ("gpu_hours_to_50pct", "gpu_hours_to_75pct"):
            ratios = [
                (math.inf if r[key] is None else float(r[key])) / (math.inf if g[key] is None else float(g[key]))  # type: ignore[arg-type]
                if not (r[key] is None and g[key] is None) else math.nan
                for r, g in zip(per_seed, reference, strict=True)
            ]
            ratios = [x for x in ratios if not math.isnan(x)]
            if ratios:
                lo, hi = interval(ratios, statistics.median)  # type: ignore[arg-type]
                out[f"ratio_to_global_best_{key[13:]}"] = {"median": _finite(statistics.median(ratios)),
                                                           "interval": [_finite(lo), _finite(hi)]}
    for key in ("duplicate_rate", "false_keeps", "false_community_bests", "noise_only_community_bests",
                "best_improvement", "keep_rate_early", "keep_rate_late", "crash_rate", "overhead_share", "runs"):
        values = [float(r[key]) for r in per_seed if r[key] is not None]  # type: ignore[arg-type]
        out[key] = statistics.fmean(values) if values else None
    out["reachable"] = statistics.fmean(float(r["reachable"]) for r in per_seed)  # type: ignore[arg-type]
    out["seeds"] = len(per_seed)
    return out


@contextmanager
def scenario(noise: float = 1.0, helpful: float = HELPFUL_SHARE) -> Iterator[None]:
    """Within it, every class's seed noise σ is × ``noise`` and a share ``helpful`` of the
    hyperparameters is not at its optimum (the sweep of docs/suggestions.md); restored on exit.

    Raises:
        ValueError: ``noise`` ≤ 0 or ``helpful`` outside [0, 1].
    """
    global HARDWARE, HELPFUL_SHARE
    if not noise > 0 or not 0 <= helpful <= 1:
        raise ValueError(f"noise must be > 0 and helpful in [0, 1], got noise={noise}, helpful={helpful}")
    saved = HARDWARE, HELPFUL_SHARE
    HARDWARE = tuple(replace(h, sigma=h.sigma * noise) for h in saved[0])
    HELPFUL_SHARE = helpful
    try:
        yield
    finally:
        HARDWARE, HELPFUL_SHARE = saved


def _job(args: tuple[str, int, int, float, float, float, float]) -> dict[str, object]:
    strategy, seed, n_agents, gpu_hours, target, noise, helpful = args
    with scenario(noise, helpful):
        return simulate(strategy, seed, n_agents=n_agents, gpu_hours=gpu_hours, target_fraction=target)


def compare(seeds: int, n_agents: int, gpu_hours: float, target_fraction: float, *, variants: Sequence[str] = ("hub",),
            workers: int = 1, progress: Callable[[str], None] | None = None, noise: float = 1.0,
            helpful: float = HELPFUL_SHARE) -> dict[str, object]:
    """Every baseline and hub variant on ``seeds`` seeds; the pinned JSON shape of DESIGN.md plus the
    issue-17 figures."""
    names = [*BASELINES, *variants]
    jobs = [(s, i, n_agents, gpu_hours, target_fraction, noise, helpful) for s in names for i in range(seeds)]
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            results = list(pool.map(_job, jobs))
    else:
        results = [_job(j) for j in jobs]
    per: dict[str, list[dict[str, object]]] = {s: results[k * seeds : (k + 1) * seeds] for k, s in enumerate(names)}
    out = {s: summarise(per[s], per["global_best"] if s != "global_best" else None) for s in names}
    if progress:
        progress("simulated " + ", ".join(names))
    curves = [solo_keep_curve(i) for i in range(min(seeds, 30))]
    return {
        "config": {"seeds": seeds, "agents": n_agents, "gpu_hours": gpu_hours, "target_fraction": target_fraction,
                   "hardware": [h.__dict__ for h in HARDWARE], "headroom": HEADROOM, "machine_sd": MACHINE_SD,
                   "noise_scale": noise, "helpful_share": helpful},
        "strategies": out,
        "landscape": {"solo_h100_keep_rate_per_100_runs": [statistics.fmean(c[k] for c in curves) for k in range(len(curves[0]))]},
    }


def _fmt(x: object, spec: str = ".1f") -> str:
    return "never" if x is None else format(x, spec)


def table(result: dict[str, object]) -> str:
    strategies = result["strategies"]
    assert isinstance(strategies, dict)
    header = (f"{'strategy':<22} {'GPU-h 50%':>20} {'GPU-h 75%':>20} {'×gb 50%':>8} {'×gb 75%':>8} {'keep e/l':>11} "
              f"{'dup':>6} {'false/noise bests':>17} {'overhead':>9} {'best Δbpb':>10}")
    lines = [header, "-" * len(header)]
    for name, s in strategies.items():
        cells = []
        for key in ("gpu_hours_to_50pct", "gpu_hours_to_75pct"):
            lo, hi = s[f"{key}_interval"]
            cells.append(f"{_fmt(s[key])} ({_fmt(lo, '.0f')}–{_fmt(hi, '.0f')})")
        ratios = [  # the reference itself has no ratio: "—", not "never"
            _fmt(s[f"ratio_to_global_best_{k}"]["median"], ".2f") if f"ratio_to_global_best_{k}" in s else "—"
            for k in ("50pct", "75pct")
        ]
        lines.append(
            f"{name:<22} {cells[0]:>20} {cells[1]:>20} {ratios[0]:>8} {ratios[1]:>8} "
            f"{s['keep_rate_early']:>5.1%}/{s['keep_rate_late']:<5.1%} {s['duplicate_rate']:>6.1%} "
            f"{s['false_community_bests']:>8.1f}/{s['noise_only_community_bests']:<8.1f} {s['overhead_share']:>9.1%} "
            f"{s['best_improvement']:>10.4f}"
        )
    landscape = result["landscape"]
    assert isinstance(landscape, dict)
    lines.append("")
    lines.append("solo H100 keep rate per 100 runs: " + "  ".join(f"{k:.1%}" for k in landscape["solo_h100_keep_rate_per_100_runs"]))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=30)
    parser.add_argument("--agents", type=int, default=12)
    parser.add_argument("--gpu-hours", type=float, default=40.0, help="simulated GPU-hours per community")
    parser.add_argument("--target", type=float, default=0.5, help="target: this fraction of the reachable improvement")
    parser.add_argument("--variants", default="hub", help=f"comma-separated hub variants, or 'all' ({', '.join(VARIANTS)})")
    parser.add_argument("--workers", type=int, default=2, help="processes (seeds run in parallel)")
    parser.add_argument("--noise", type=float, default=1.0, help="every class's seed noise σ × this (the sweep)")
    parser.add_argument("--helpful", type=float, default=HELPFUL_SHARE, help="share of hyperparameters not at their optimum")
    parser.add_argument("--json", action="store_true", help="print the pinned JSON shape")
    args = parser.parse_args(argv)
    variants = list(VARIANTS) if args.variants == "all" else [v for v in args.variants.split(",") if v]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}; expected some of {list(VARIANTS)}")
    result = compare(args.seeds, args.agents, args.gpu_hours, args.target, variants=variants, workers=args.workers,
                     progress=lambda s: print(s, file=sys.stderr), noise=args.noise, helpful=args.helpful)
    print(json.dumps(result, indent=2) if args.json else table(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
