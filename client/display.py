"""What the person watching ``autoresearch run`` sees: a live rich panel on a TTY, log lines otherwise.

Both implement the loop's ``LoopEvents``. The live panel shows the experiment number and description,
a bar of the training budget, the current loss, the best val_bpb so far and the keep/discard/crash
counts. The plain form (not a TTY, e.g. each volunteer of ``autoresearch demo``) writes one line when
an experiment starts, one at each quarter of its training budget (step, loss, time left) and one when
it ends: no escape codes, and never silent for more than a quarter of the budget.

:class:`StatusFile` keeps a JSON snapshot (:class:`VolunteerStatus`) for a watcher in another process:
each volunteer of ``autoresearch demo`` writes one, and the demo shows them in one live table.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError
from rich.console import Console, Group
from rich.live import Live
from rich.logging import RichHandler
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.text import Text

from autoresearch.trainer.result import TrainProgress

from .loop import LoopStats
from .results import PROVISIONAL_NOTE, atomic_write_text, is_provisional_keep
from .safetext import SafeLogFilter, safe_text
from .workspace import LocalExperiment


def _fmt_bpb(value: float | None) -> str:
    return "-" if value is None else f"{value:.6f}"


def _summary(exp: LocalExperiment) -> str:
    record = exp.record
    description = safe_text(exp.description, one_line=True)  # may quote a hub's suggestion
    if record is None:
        return f"[{exp.number:04d}] {exp.kind}: {description}"
    delta = record.normalised.delta_val_bpb
    z = record.normalised.z
    extra = f" Δ {delta:+.6f}" if delta is not None else ""
    extra += f" z {z:+.2f}" if z is not None else ""
    why = f" ({record.outcome})" if record.outcome != "ok" else ""
    why += f" ({PROVISIONAL_NOTE})" if is_provisional_keep(record) else ""
    paired = exp.paired_parent
    if paired is not None:
        extra += f" (parent re-measured: {_fmt_bpb(paired.val_bpb)}, first {_fmt_bpb(paired.first_val_bpb)})"
    return f"[{exp.number:04d}] {record.status}{why} val_bpb {_fmt_bpb(record.metrics.val_bpb)}{extra}  {description}"


def _counts(stats: LoopStats) -> str:
    paired = f", {stats.paired} parent re-measured" if stats.paired else ""
    return (
        f"best {_fmt_bpb(stats.best_val_bpb)} | {stats.keeps} keep, {stats.discards} discard, "
        f"{stats.crashes} crash, {stats.rejected} rejected{paired}"
    )


PROGRESS_MARKS = 4  # plain progress lines per experiment: at ¼, ½ and ¾ of the training budget


class PlainDisplay:
    """Log lines on a console (stderr): one per start, one at each quarter of the budget (unless
    ``progress_lines`` is False: a :class:`StatusFile` watcher shows progress), one per result, notes
    as they come."""

    def __init__(self, console: Console, *, progress_lines: bool = True) -> None:
        self.console = console
        self.progress_lines = progress_lines
        self._number = 0
        self._marks_shown = 0

    def experiment_started(self, number: int, description: str, time_budget: float) -> None:
        self._number, self._marks_shown = number, 0
        self.console.print(
            f"[{number:04d}] start ({time_budget:g} s budget): {safe_text(description, one_line=True)}",
            highlight=False, markup=False, emoji=False,
        )

    def progress(self, progress: TrainProgress) -> None:
        """One line each time training passes the next quarter of the budget (¼, ½, ¾)."""
        if progress.time_budget <= 0 or not self.progress_lines:
            return
        mark = min(int(PROGRESS_MARKS * progress.training_seconds / progress.time_budget), PROGRESS_MARKS - 1)
        if mark <= self._marks_shown:
            return
        self._marks_shown = mark
        left = max(progress.time_budget - progress.training_seconds, 0.0)
        self.console.print(
            f"[{self._number:04d}] step {progress.step} loss {progress.loss:.4f} "
            f"{progress.training_seconds:.0f}/{progress.time_budget:g} s ({left:.0f} s left)",
            highlight=False, markup=False, emoji=False,
        )

    def experiment_finished(self, exp: LocalExperiment, stats: LoopStats) -> None:
        self.console.print(f"{_summary(exp)}  | {_counts(stats)}", highlight=False, markup=False, emoji=False)

    def note(self, message: str) -> None:
        self.console.print(safe_text(message), highlight=False, markup=False, emoji=False)


class LiveDisplay:
    """A rich live panel; use as a context manager around ``AgentLoop.run``."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self._lock = threading.Lock()
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.completed:>5.1f}/{task.total:g} s"),
            TextColumn("loss {task.fields[loss]}"),
            TimeElapsedColumn(),
            console=console,
        )
        self._task = self._progress.add_task("waiting", total=1.0, loss="-")
        self._saved_handlers: list[logging.Handler] = []
        self._header = Text("")
        self._footer = Text("")
        self._live = Live(Group(self._header, self._progress, self._footer), console=console, refresh_per_second=4, transient=False)

    def __enter__(self) -> LiveDisplay:
        self._live.__enter__()
        # log records print above the live panel instead of tearing it
        root = logging.getLogger()
        self._saved_handlers = root.handlers[:]
        handler = RichHandler(console=self._live.console, show_path=False, markup=False)
        handler.addFilter(SafeLogFilter())
        root.handlers = [handler]
        return self

    def __exit__(self, *exc: object) -> None:
        logging.getLogger().handlers = self._saved_handlers
        self._live.__exit__(None, None, None)

    def experiment_started(self, number: int, description: str, time_budget: float) -> None:
        with self._lock:
            self._header.plain = f"experiment {number}: {safe_text(description, one_line=True)}"
            self._progress.reset(self._task, total=time_budget, completed=0, description="training", loss="-")

    def progress(self, progress: TrainProgress) -> None:
        with self._lock:
            self._progress.update(
                self._task, completed=min(progress.training_seconds, progress.time_budget), loss=f"{progress.loss:.4f}"
            )

    def experiment_finished(self, exp: LocalExperiment, stats: LoopStats) -> None:
        with self._lock:
            self._live.console.print(_summary(exp), highlight=False, markup=False, emoji=False)
            self._footer.plain = _counts(stats)
            self._progress.update(self._task, description="proposing")

    def note(self, message: str) -> None:
        self._live.console.print(safe_text(message), highlight=False, markup=False, emoji=False)


class VolunteerStatus(BaseModel):
    """A loop's state for a watcher: ``phase`` (``starting``, ``training``, ``proposing``,
    ``done``), the current experiment ``number`` of ``of`` (None: no limit) and its description,
    the last training ``step``, ``loss`` (nats per token), ``training_seconds`` of ``time_budget``
    (s), the branch's best val_bpb (bits per byte) and the counters."""

    model_config = ConfigDict(frozen=True)

    phase: Literal["starting", "training", "proposing", "done"] = "starting"
    number: int = 0
    of: int | None = None
    description: str = ""
    step: int | None = None
    loss: float | None = None
    training_seconds: float = 0.0
    time_budget: float = 0.0
    best_val_bpb: float | None = None
    keeps: int = 0
    discards: int = 0
    crashes: int = 0

    @classmethod
    def read(cls, path: Path) -> VolunteerStatus | None:
        """The snapshot at ``path``; None when it is missing or not (yet) a valid snapshot."""
        try:
            return cls.model_validate_json(path.read_bytes())
        except (OSError, ValidationError):
            return None


STATUS_INTERVAL_SECONDS = 0.5  # at most two snapshot writes a second while training


class StatusFile:
    """Loop events that go to ``inner`` (the volunteer's own display) and keep a
    :class:`VolunteerStatus` snapshot at ``path``, written atomically (a reader never sees half a
    file). ``of``: the number of experiments asked for (``--experiments``), for "n of N"."""

    def __init__(self, path: Path, inner: PlainDisplay | LiveDisplay, *, of: int | None = None) -> None:
        self.path = path
        self.inner = inner
        self.status = VolunteerStatus(of=of)
        self._written = 0.0
        self._write()

    def _update(self, *, force: bool = False, **changes: object) -> None:
        self.status = self.status.model_copy(update=changes)
        if force or time.monotonic() - self._written >= STATUS_INTERVAL_SECONDS:
            self._write()

    def _write(self) -> None:
        atomic_write_text(self.path, self.status.model_dump_json())
        self._written = time.monotonic()

    def experiment_started(self, number: int, description: str, time_budget: float) -> None:
        self.inner.experiment_started(number, description, time_budget)
        self._update(force=True, phase="training", number=number, description=safe_text(description, one_line=True)[:200],
                     step=None, loss=None, training_seconds=0.0, time_budget=time_budget)

    def progress(self, progress: TrainProgress) -> None:
        self.inner.progress(progress)
        self._update(step=progress.step, loss=progress.loss, training_seconds=progress.training_seconds,
                     time_budget=progress.time_budget)

    def experiment_finished(self, exp: LocalExperiment, stats: LoopStats) -> None:
        self.inner.experiment_finished(exp, stats)
        self._update(force=True, phase="proposing", best_val_bpb=stats.best_val_bpb, keeps=stats.keeps,
                     discards=stats.discards, crashes=stats.crashes)

    def note(self, message: str) -> None:
        self.inner.note(message)

    def close(self) -> None:
        """Mark the loop as done (the watcher shows the final counters)."""
        self._update(force=True, phase="done")
