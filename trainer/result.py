"""What one harness run produces (torch-free): :class:`RunResult`, :class:`TrainProgress`, the
progress events the child sends to the parent, and the upstream-compatible summary block.

These models cross the process boundary between the harness subprocess and the parent
(``run.py``): the child writes ``result.json`` and one JSON event per line on the progress pipe.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from autoresearch.protocol import LossPoint, Outcome, RunMetrics, SoftwareVersions
from autoresearch.protocol.records import MAX_LOSS_POINTS, MAX_TRAIN_LOSS

MAX_ERROR_CHARS = 4000  # the experiment record allows 4096


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=True)


class TrainProgress(_Model):
    """Live training progress: optimizer ``step``, its ``loss`` (nats per token, may be NaN),
    ``training_seconds`` on the harness clock and the track's ``time_budget`` (seconds)."""

    step: int
    loss: float
    training_seconds: float
    time_budget: float


class ProgressEvent(_Model):
    """One line on the child → parent progress pipe.

    ``phase`` events mark harness phases (``train`` when ``train(h)`` is called, ``clock`` when the
    training clock starts, ``eval`` when ``train`` returned); ``progress`` carries a
    :class:`TrainProgress`.
    """

    kind: Literal["phase", "progress"]
    phase: Literal["train", "clock", "eval"] | None = None
    progress: TrainProgress | None = None


class RunResult(_Model):
    """The outcome and metrics of one run of a ``train.py`` under a track.

    ``metrics.val_bpb`` is set only for ``ok`` (it is None for every failure, never 0.0);
    ``error`` holds the traceback tail or the reason for any other outcome; ``log_path`` is the
    run's combined stdout/stderr; ``track`` the track id; ``mfu_estimated`` is true when the device's
    peak FLOPS came from an estimate rather than the table; ``flops_per_token`` the training FLOPs
    per token of the model (its own ``estimate_flops()``, else 6 × parameters; reported from inside
    the worker, so untrusted: the loop's drift guard reads it only to decide whether to re-measure
    the parent, never to keep); ``isolation`` how ``train.py`` was
    confined (:mod:`autoresearch.trainer.sandbox`); ``probes`` how many evaluation probes passed.
    """

    outcome: Outcome
    metrics: RunMetrics = Field(default_factory=RunMetrics)
    error: str | None = None
    log_path: Path
    seed: int = 0
    track: str
    harness_version: str
    train_py_sha256: str | None = None
    hardware_class: str | None = None
    software: SoftwareVersions | None = None
    mfu_estimated: bool = False
    flops_per_token: float | None = Field(default=None, gt=0.0, allow_inf_nan=False)
    isolation: Literal["sandbox", "process"] = "process"
    probes: int = 0
    loss_curve: list[LossPoint] = Field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when the run produced a trustworthy val_bpb."""
        return bool(self.outcome == "ok")


def loss_curve(points: list[tuple[int, float, float]], limit: int = MAX_LOSS_POINTS) -> list[LossPoint]:
    """At most ``limit`` of ``(step, seconds, loss)`` reports, evenly spread, the last one kept;
    reports a record cannot carry (negative, huge, non-finite loss) are left out."""
    usable = [p for p in points if 0.0 <= p[2] <= MAX_TRAIN_LOSS and p[0] >= 0 and p[1] >= 0]
    if len(usable) > limit:
        step = (len(usable) - 1) / (limit - 1)
        usable = [usable[round(i * step)] for i in range(limit)]
    return [LossPoint(step=s, seconds=t, loss=v) for s, t, v in usable]


def write_result(result: RunResult, path: Path) -> None:
    """Write ``result`` as JSON to ``path`` atomically (temp file + rename)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(result.model_dump_json(indent=2), encoding="utf-8")
    os.replace(tmp, path)


def truncate_error(text: str, limit: int = MAX_ERROR_CHARS) -> str:
    """The last ``limit`` characters of ``text`` (a traceback's tail is where the cause is)."""
    text = text.strip()
    return text if len(text) <= limit else "…" + text[-(limit - 1) :]


def summary_block(result: RunResult) -> str:
    """Upstream's ``---`` summary block (an interface: keys and formats stay stable).

    Upstream keys first (``val_bpb``, ``training_seconds``, ``total_seconds``, ``peak_vram_mb``,
    ``mfu_percent``, ``total_tokens_M``, ``num_steps``, ``num_params_M``, ``depth``), then ours
    (``startup_seconds``, ``eval_seconds``, ``tokens_per_second``, ``outcome``). Missing values print
    as ``nan`` (floats) or ``0`` (counts).
    """
    m = result.metrics

    def f(value: float | None, digits: int) -> str:
        return "nan" if value is None else f"{value:.{digits}f}"

    mfu = f(m.mfu_percent, 2) + (" (estimated)" if result.mfu_estimated and m.mfu_percent is not None else "")
    lines = [
        "---",
        f"val_bpb:          {f(m.val_bpb, 6)}",
        f"training_seconds: {f(m.training_seconds, 1)}",
        f"total_seconds:    {f(m.total_seconds, 1)}",
        f"peak_vram_mb:     {f(m.peak_vram_mib, 1)}",
        f"mfu_percent:      {mfu}",
        f"total_tokens_M:   {f(None if m.total_tokens is None else m.total_tokens / 1e6, 3)}",
        f"num_steps:        {m.num_steps or 0}",
        f"num_params_M:     {f(None if m.num_params is None else m.num_params / 1e6, 3)}",
        f"depth:            {m.depth or 0}",
        f"startup_seconds:  {f(m.startup_seconds, 1)}",
        f"eval_seconds:     {f(m.eval_seconds, 1)}",
        f"tokens_per_second: {f(m.tokens_per_second, 0)}",
        f"outcome:          {result.outcome}",
    ]
    return "\n".join(lines)
