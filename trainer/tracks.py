"""Track specs: the fixed evaluation settings results are compared within (torch-free).

A track fixes the dataset and split, tokenizer, ``MAX_SEQ_LEN``, ``EVAL_TOKENS``, ``TIME_BUDGET``,
harness version and the reference ``train.py`` (by hash). Its id is ``<name>-<12 hex>`` over all of
that (:meth:`autoresearch.protocol.TrackSpec.build`), so a ``--time-budget`` override gives a derived
track with its own id and results never mix across ids.

Three tracks ship:

``climbmix``  upstream-equivalent GPU track: climbmix parquet shards, 8192-token BPE, 2048 context, 300 s.
``cpu``       offline: the pycorpus shipped in ``trainer/corpus/`` (pydoc topics + stdlib docstrings),
              bytes + BOS, 256 context, 60 s on CPU.
``tiny``      the ``cpu`` corpus with a 2-layer, 64-wide model and a 4 s budget, for tests.

The reference ``train.py`` of every track is one template (``trainer/reference_train.py``, written
for ``climbmix``) whose UPPER_CASE hyperparameters are overridden per track by
:func:`reference_source`, so the model code exists once while each track's reference is a plain file
with plain constants the offline proposer can mutate.

This module also holds the harness limits per track (:class:`HarnessLimits`); they are part of the
harness, so changing one means bumping :data:`HARNESS_VERSION` (which changes every track id).
"""

from __future__ import annotations

import functools
import hashlib
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Literal

from autoresearch.protocol import TrackSpec

HARNESS_VERSION = "2.0"
"""Version of the fixed harness (data, tokenizer, dataloader, evaluate_bpb, budget rules)."""

PYCORPUS_FILE = "pycorpus-v1.jsonl.xz"
PYCORPUS_SHA256 = "fa73ecb518a50f5449c418849d5d49a679bb2841f0b0a6cf6aa706b15ebdeb62"
BYTES_VOCAB_SIZE = 257  # 256 byte values + BOS (id 256)

CLIMBMIX_BASE_URL = "https://huggingface.co/datasets/karpathy/climbmix-400b-shuffle/resolve/main"
CLIMBMIX_MAX_SHARD = 6542  # the last shard, shard_06542.parquet, is the pinned validation shard
CLIMBMIX_VOCAB_SIZE = 8192

TRACK_NAMES = ("climbmix", "cpu", "tiny")


class UnknownTrack(KeyError):
    """No track has this name or id. The message lists the known names."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name

    def __str__(self) -> str:
        return f"unknown track {self.name!r}; known tracks: {', '.join(TRACK_NAMES)} (or a full track id)"


@dataclass(frozen=True)
class HarnessLimits:
    """Budget, evaluation and confinement limits the harness applies to a track (times in seconds).

    ``clock`` names the budget clock (:mod:`autoresearch.trainer.budget`): ``cpu`` counts the
    training worker's CPU time, ``wall`` wall time minus a warm-up allowance of the first
    ``warmup_batches`` batches, capped at ``warmup_seconds``. A run whose training time exceeds
    ``budget × (1 + budget_tolerance) + budget_slack_seconds`` is ``over_budget`` (the harness stops
    it there). Killed as ``timeout``: start-up (until the worker has loaded torch) longer than
    ``startup_seconds``; training longer than ``wall_factor × budget + grace_seconds`` of wall time
    (a worker that sleeps spends no CPU); evaluation longer than ``eval_seconds``.

    Confinement: ``memory_bytes`` is the workers' address-space limit (None on CUDA, whose driver
    reserves huge address ranges), ``tmp_bytes`` the size of each of their tmpfs, ``max_model_bytes``
    the largest model ``train(h)`` may hand back. ``probe_batches`` evaluation batches of causality
    probes and replays are scored by a second, fresh evaluation worker (:mod:`.evaluate`).
    """

    warmup_batches: int
    warmup_seconds: float
    budget_tolerance: float
    budget_slack_seconds: float
    startup_seconds: float
    grace_seconds: float
    eval_seconds: float
    eval_batch_size: int  # rows per evaluation forward pass; halved on retry after a failure
    num_threads: int | None = None  # torch CPU threads (None: torch's default, or OMP_NUM_THREADS)
    clock: Literal["cpu", "wall"] = "wall"
    wall_factor: float = 2.0
    memory_bytes: int | None = None
    tmp_bytes: int = 256 << 20
    max_model_bytes: int = 512 << 20
    probe_batches: int = 1


_LIMITS = {
    "climbmix": HarnessLimits(20, 60.0, 0.02, 1.0, 900.0, 60.0, 900.0, 128, clock="wall", wall_factor=2.0,
                              tmp_bytes=8 << 30, max_model_bytes=8 << 30, probe_batches=1),
    # CPU tracks train on one thread: the other core stays free for the agent preparing the next
    # proposal (and the demo's second volunteer); measured under load, 1 thread gave 1.8× the
    # tokens/s of 2 (docs/trainer.md); a single thread also sums in a fixed order. Their clock is
    # CPU time, so machine load cannot move a result; wall_factor leaves room for a loaded machine.
    "cpu": HarnessLimits(0, 0.0, 0.05, 1.0, 300.0, 30.0, 300.0, 64, num_threads=1, clock="cpu", wall_factor=5.0,
                         memory_bytes=8 << 30, probe_batches=2),
    "tiny": HarnessLimits(0, 0.0, 0.05, 1.0, 300.0, 10.0, 120.0, 32, num_threads=1, clock="cpu", wall_factor=5.0,
                          memory_bytes=6 << 30, probe_batches=2),
}  # fmt: skip

# Per-track hyperparameters written into the reference template (Python literals as source text).
# cpu/tiny LRs tuned for upstream's optimizer at the steps their budgets give on one thread (115 /
# 65), on the unique evaluation rows (docs/trainer.md has the sweep); weight decay off: no gain at
# these lengths.
_REFERENCE_OVERRIDES: dict[str, dict[str, str]] = {
    "climbmix": {},
    "cpu": {
        "DEPTH": "4",
        "ASPECT_RATIO": "32",
        "HEAD_DIM": "32",
        "WINDOW_PATTERN": '"SSSL"',
        "TOTAL_BATCH_SIZE": "2**11",
        "DEVICE_BATCH_SIZE": "8",
        "MATRIX_LR": "0.12",
        "EMBEDDING_LR": "0.3",
        "UNEMBEDDING_LR": "0.005",
        "SCALAR_LR": "0.5",
        "WEIGHT_DECAY": "0.0",
        "WARMUP_RATIO": "0.0",
        "WARMDOWN_RATIO": "0.5",
    },
    "tiny": {
        "DEPTH": "2",
        "ASPECT_RATIO": "32",
        "HEAD_DIM": "32",
        "WINDOW_PATTERN": '"SL"',
        "TOTAL_BATCH_SIZE": "2**9",
        "DEVICE_BATCH_SIZE": "4",
        "MATRIX_LR": "0.2",
        "EMBEDDING_LR": "0.3",
        "UNEMBEDDING_LR": "0.01",
        "SCALAR_LR": "0.5",
        "WEIGHT_DECAY": "0.0",
        "WARMUP_RATIO": "0.0",
        "WARMDOWN_RATIO": "0.5",
    },
}


def _template() -> str:
    return resources.files(__package__).joinpath("reference_train.py").read_text(encoding="utf-8")


def _render(template: str, overrides: dict[str, str]) -> str:
    """Replace the value of each ``NAME = value  # comment`` line named in ``overrides``.

    Raises:
        ValueError: an override names a constant the template does not define exactly once.
    """
    for name, value in overrides.items():
        pattern = re.compile(rf"^({re.escape(name)} = )([^#\n]*?)(\s*#.*)?$", re.MULTILINE)
        def replace(m: re.Match[str], v: str = value) -> str:
            return f"{m.group(1)}{v}{m.group(3) or ''}"

        template, count = pattern.subn(replace, template)
        if count != 1:
            raise ValueError(f"reference template defines {name} {count} times (expected once)")
    return template


@functools.cache
def _reference_source_by_name(name: str) -> str:
    return _render(_template(), _REFERENCE_OVERRIDES[name])


def _base_fields(name: str) -> dict[str, object]:
    reference = _reference_source_by_name(name)
    common: dict[str, object] = {
        "harness_version": HARNESS_VERSION,
        "reference_sha256": hashlib.sha256(reference.encode("utf-8")).hexdigest(),
    }
    if name == "climbmix":
        return {
            **common,
            "name": "climbmix",
            "description": "Upstream-equivalent GPU track: climbmix-400b-shuffle parquet shards, "
            "BPE vocab 8192 (rustbpe, upstream split pattern), 2048 context, 300 s of training.",
            "dataset": "karpathy/climbmix-400b-shuffle",
            "split": f"val=shard_{CLIMBMIX_MAX_SHARD:05d}",
            "data_sha256": None,
            "tokenizer": f"rustbpe-{CLIMBMIX_VOCAB_SIZE}",
            "vocab_size": CLIMBMIX_VOCAB_SIZE,
            "max_seq_len": 2048,
            "eval_tokens": 40 * 524288,
            "time_budget": 300.0,
            "device": "cuda",
        }
    small = name == "tiny"
    return {
        **common,
        "name": name,
        "description": (
            "Test track: the cpu corpus with a 2-layer, 64-wide model and a 4 s budget."
            if small
            else "Offline CPU track: pydoc topics and stdlib docstrings of CPython 3.11 (shipped, "
            "checksummed), byte tokenizer with BOS, 256 context, 60 s of training on CPU."
        ),
        "dataset": PYCORPUS_FILE,
        "split": "val",
        "data_sha256": PYCORPUS_SHA256,
        "tokenizer": "bytes+bos",
        "vocab_size": BYTES_VOCAB_SIZE,
        "max_seq_len": 128 if small else 256,
        "eval_tokens": 2**14 if small else 2**16,
        "time_budget": 4.0 if small else 60.0,
        "device": "cpu",
    }


@functools.cache
def _builtin(name: str) -> TrackSpec:
    return TrackSpec.build(**_base_fields(name))


def builtin_tracks() -> list[TrackSpec]:
    """The shipped tracks (``climbmix``, ``cpu``, ``tiny``) at their default budgets."""
    return [_builtin(name) for name in TRACK_NAMES]


def get_track(name_or_id: str, time_budget: float | None = None) -> TrackSpec:
    """A track by short name or full id; ``time_budget`` (seconds) gives a derived track.

    A derived track differs only in ``time_budget`` and therefore has its own id.

    Raises:
        UnknownTrack: neither a shipped name nor the id of a shipped track.
        ValueError: ``time_budget`` is not a positive finite number.
    """
    base: TrackSpec | None = None
    if name_or_id in TRACK_NAMES:
        base = _builtin(name_or_id)
    else:
        for spec in builtin_tracks():
            if spec.id == name_or_id:
                base = spec
    if base is None:
        raise UnknownTrack(name_or_id)
    if time_budget is None or float(time_budget) == base.time_budget:
        return base
    if not (float(time_budget) > 0 and float(time_budget) < float("inf")):
        raise ValueError(f"time budget must be a positive number of seconds, got {time_budget!r}")
    return derive(base, time_budget=float(time_budget))


def derive(base: TrackSpec, *, time_budget: float) -> TrackSpec:
    """``base`` with another training budget (seconds); the id changes with it."""
    fields = base.model_dump(mode="json")
    fields["time_budget"] = float(time_budget)
    return TrackSpec.build(**fields)


def limits(track: TrackSpec) -> HarnessLimits:
    """The harness limits for a track (by its name).

    Raises:
        UnknownTrack: the track's name is not a shipped track.
    """
    try:
        return _LIMITS[track.name]
    except KeyError:
        raise UnknownTrack(track.name) from None


def reference_source(track: TrackSpec | str) -> str:
    """The reference ``train.py`` of a track (a spec, name or id), as source text.

    Raises:
        UnknownTrack: no such track.
    """
    name = track.name if isinstance(track, TrackSpec) else get_track(track).name
    if name not in _REFERENCE_OVERRIDES:
        raise UnknownTrack(name)
    return _reference_source_by_name(name)


def pycorpus_path() -> Path:
    """Path of the shipped offline corpus (``trainer/corpus/pycorpus-v1.jsonl.xz``)."""
    return Path(str(resources.files(__package__).joinpath("corpus", PYCORPUS_FILE)))
