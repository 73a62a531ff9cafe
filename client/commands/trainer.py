"""``autoresearch prepare`` and ``autoresearch train``: track data and one harness run.

``train`` prints the upstream summary block on stdout (``--json OUT`` also writes the full
:class:`~autoresearch.trainer.result.RunResult`); live progress goes to stderr. Exit status 0 for
outcome ``ok``, 1 for any other outcome (the summary block is printed either way).
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Annotated

import typer

from autoresearch.protocol import TrackSpec

from .. import console
from ..errors import UsageError

if TYPE_CHECKING:
    from autoresearch.trainer.result import RunResult, TrainProgress


def _track(name: str, time_budget: float | None = None) -> TrackSpec:
    from autoresearch.trainer import tracks

    try:
        return tracks.get_track(name, time_budget=time_budget)
    except tracks.UnknownTrack as exc:
        raise UsageError(str(exc), hint="pick one of: " + ", ".join(tracks.TRACK_NAMES)) from None
    except ValueError as exc:
        raise UsageError(str(exc), hint="--time-budget takes seconds, e.g. --time-budget 30") from None


def _resolve_train_py(file: Path | None, track: TrackSpec, run_dir: Path) -> Path:
    from autoresearch.trainer import tracks

    if file is not None:
        if not file.is_file():
            raise UsageError(f"{file} does not exist", hint="pass a train.py, or omit FILE to use ./train.py or the track's reference")
        return file
    if Path("train.py").is_file():
        return Path("train.py")
    reference = run_dir / "train.py"
    reference.write_text(tracks.reference_source(track), encoding="utf-8")
    console.info(f"no ./train.py: running the reference train.py of track {track.name}")
    return reference


def register(app: typer.Typer) -> None:
    @app.command("prepare")
    def prepare(
        track: Annotated[str, typer.Option("--track", "-t", envvar="AUTORESEARCH_TRACK", help="climbmix, cpu or tiny.")] = "cpu",
        num_shards: Annotated[int, typer.Option("--num-shards", min=1, help="climbmix: training shards to download (the validation shard is always added).")] = 10,
    ) -> None:
        """Download or check a track's data and tokenizer."""
        spec = _track(track)
        if spec.name == "climbmix":
            from autoresearch.trainer import climbmix

            try:
                summary = _prepare_climbmix(climbmix, num_shards)
            except climbmix.PrepareError as exc:
                raise UsageError(str(exc), hint="re-run `autoresearch prepare --track climbmix`: finished shards are kept and partial ones resume") from None
            console.out().print(summary, highlight=False)
            return
        from autoresearch.trainer import data

        try:
            corpus = data.load_corpus(spec)
        except data.DataError as exc:
            raise UsageError(str(exc), hint="reinstall autoresearch-hub; the offline corpus ships with it") from None
        n_train = sum(len(d) for d in corpus.train_docs)
        n_val = sum(len(d) for d in corpus.val_docs)
        console.out().print(
            f"track {spec.id}: offline corpus ok (sha256 {(spec.data_sha256 or '')[:12]}…), "
            f"{len(corpus.train_docs)} train docs / {n_train:,} tokens, {len(corpus.val_docs)} val docs / {n_val:,} tokens",
            highlight=False,
        )

    @app.command("doctor")
    def doctor(
        json_out: Annotated[bool, typer.Option("--json", help="Print the findings as JSON.")] = False,
    ) -> None:
        """How this machine confines train.py: the isolation level, bubblewrap, what a worker sees."""
        import json

        from autoresearch.trainer import sandbox

        support = sandbox.detect()
        roots = [str(p) for p in sandbox.python_roots()]
        if json_out:
            body = {"isolation": support.isolation, "bwrap": support.bwrap, "bwrap_version": support.version,
                    "reason": support.reason, "hint": support.hint, "python_roots": roots}  # fmt: skip
            sys.stdout.write(json.dumps(body, indent=2) + "\n")
            return
        out = console.out()
        out.print(support.line(), highlight=False, markup=False)
        out.print("read-only in the sandbox: /usr, the loader cache, " + ", ".join(roots), highlight=False, markup=False)
        out.print("not in the sandbox: your home, workspaces, keys, track data, the network, other processes", highlight=False, markup=False)
        if support.isolation != "sandbox":
            console.error("train.py from agents or hubs will not run here without --allow-unsandboxed", hint=support.hint or "install bubblewrap")

    @app.command("train")
    def train(
        file: Annotated[Path | None, typer.Argument(help="train.py to run (default: ./train.py, else the track's reference).")] = None,
        track: Annotated[str, typer.Option("--track", "-t", envvar="AUTORESEARCH_TRACK", help="climbmix, cpu, tiny or a track id.")] = "cpu",
        time_budget: Annotated[float | None, typer.Option("--time-budget", help="Training budget in seconds (a derived track with its own id).")] = None,
        json_out: Annotated[Path | None, typer.Option("--json", help="Also write the full result as JSON to this file ('-' for stdout instead of the summary).")] = None,
        run_dir: Annotated[Path | None, typer.Option("--run-dir", help="Where run.log and result.json go (default: a new temp dir).")] = None,
        seed: Annotated[int, typer.Option("--seed", help="Run seed (data order; added to train.py's SEED).")] = 0,
    ) -> None:
        """One run of a train.py under a track's harness; prints the summary block."""
        from autoresearch.trainer.result import summary_block
        from autoresearch.trainer.run import run_training

        spec = _track(track, time_budget)
        # absolute: the harness hands the folder to workers whose working directory is not ours
        directory = run_dir.expanduser().resolve() if run_dir else Path(tempfile.mkdtemp(prefix="autoresearch-run-"))
        directory.mkdir(parents=True, exist_ok=True)
        train_py = _resolve_train_py(file, spec, directory)
        from autoresearch.trainer import sandbox

        console.info(f"track {spec.id}: {spec.time_budget:g} s budget; run dir {directory}; {sandbox.detect().line()}")
        result = _run_with_progress(run_training, train_py, spec, directory, seed)
        if json_out is not None and str(json_out) == "-":
            sys.stdout.write(result.model_dump_json(indent=2) + "\n")
        else:
            console.out().print(summary_block(result), highlight=False, markup=False)
            if json_out is not None:
                json_out.write_text(result.model_dump_json(indent=2), encoding="utf-8")
        if not result.ok:
            last_line = next(iter(reversed((result.error or "").strip().splitlines())), "no error text")
            console.error(f"run ended with outcome {result.outcome}: {last_line}", hint=f"full log: {result.log_path}")
            raise typer.Exit(1)


def _run_with_progress(run_training: Callable[..., RunResult], train_py: Path, spec: TrackSpec, directory: Path, seed: int) -> RunResult:
    """Run with a progress bar on stderr (training seconds of the budget, step and loss)."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[status]}"), TimeElapsedColumn(),
        console=console.err(), transient=True,
    ) as bar:  # fmt: skip
        task = bar.add_task("training", total=spec.time_budget, status="starting")

        def on_progress(p: TrainProgress) -> None:
            bar.update(task, completed=min(p.training_seconds, p.time_budget), status=f"step {p.step} loss {p.loss:.3f}")

        # `train FILE` runs a file the user chose: allowed at isolation "process" where no sandbox exists
        return run_training(train_py, spec, directory, seed=seed, on_progress=on_progress, allow_unsandboxed=True)


def _prepare_climbmix(climbmix: ModuleType, num_shards: int) -> object:
    """``climbmix.prepare`` with one progress bar per shard on stderr."""
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TaskID,
        TextColumn,
        TransferSpeedColumn,
    )

    with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(), console=console.err()) as bar:
        tasks: dict[str, TaskID] = {}

        def on_progress(name: str, done: int, total: int | None) -> None:
            if name not in tasks:
                tasks[name] = bar.add_task(name, total=total)
            bar.update(tasks[name], completed=done, total=total)

        return climbmix.prepare(num_shards=num_shards, on_progress=on_progress)
