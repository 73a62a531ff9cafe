"""What the person watching ``autoresearch run`` sees: a live rich panel on a TTY, log lines otherwise.

Both implement the loop's ``LoopEvents``. The live panel shows the experiment number and description,
a bar of the training budget, the current loss, the best val_bpb so far and the keep/discard/crash
counts. The plain form (not a TTY, e.g. each volunteer of ``autoresearch demo``) writes one line when
an experiment starts, one at each quarter of its training budget (step, loss, time left) and one when
it ends: no escape codes, and never silent for more than a quarter of the budget.
"""

from __future__ import annotations

import logging
import threading

from rich.console import Console, Group
from rich.live import Live
from rich.logging import RichHandler
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.text import Text

from autoresearch.trainer.result import TrainProgress

from .loop import LoopStats
from .results import PROVISIONAL_NOTE, is_provisional_keep
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
    """Log lines on a console (stderr): one per start, one at each quarter of the budget, one per
    result, notes as they come."""

    def __init__(self, console: Console) -> None:
        self.console = console
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
        if progress.time_budget <= 0:
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
