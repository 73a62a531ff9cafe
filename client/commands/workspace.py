"""``autoresearch init`` and ``autoresearch run``: the workspace and the agent loop."""

from __future__ import annotations

import signal
from collections.abc import Callable
from contextlib import nullcontext
from datetime import datetime
from importlib import resources
from pathlib import Path
from types import FrameType
from typing import Annotated, Any, TypeAlias

import typer

from autoresearch.protocol import TrackSpec

from .. import console
from ..errors import UsageError
from ..loop import AgentLoop
from ..proposers import DEFAULT_MODEL, PROPOSER_NAMES, choose_proposer
from ..workspace import Workspace
from . import AgentCommandOpt, AgentRetriesOpt, AgentTimeoutOpt, AllowUnsandboxedOpt

# What ``signal.signal`` returns: the previous handler, to be restored later.
_SignalHandler: TypeAlias = Callable[[int, FrameType | None], Any] | int | signal.Handlers | None


def program_template() -> str:
    """The ``program.md`` a new workspace starts with (client/templates/program.md)."""
    return resources.files("autoresearch.client").joinpath("templates", "program.md").read_text(encoding="utf-8")


def _track(name: str) -> TrackSpec:
    from autoresearch.trainer import tracks

    try:
        return tracks.get_track(name)
    except tracks.UnknownTrack as exc:
        raise UsageError(str(exc), hint=f"known tracks: {', '.join(tracks.TRACK_NAMES)}") from exc


def default_tag(ws: Workspace) -> str:
    """The interrupted or last tag of the workspace (so `run` resumes), else today's date (``nov29``)."""
    pending = ws.pending()
    if pending is not None:
        return pending.tag
    experiments = ws.experiments()
    if experiments:
        return experiments[-1].tag
    return datetime.now().strftime("%b%d").lower()


def _stop_on_sigint(loop: AgentLoop) -> _SignalHandler:
    """First Ctrl-C: stop after the current experiment is recorded; second: abort now."""

    def handler(signum: int, frame: FrameType | None) -> None:
        if loop.stopping:
            signal.default_int_handler(signum, frame)
        loop.request_stop()
        console.info("stopping after this experiment is recorded (Ctrl-C again to abort; `run` resumes)")

    return signal.signal(signal.SIGINT, handler)


def register(app: typer.Typer) -> None:
    @app.command("init")
    def init(
        directory: Annotated[Path, typer.Argument(help="Folder of the workspace (created when missing).")],
        track: Annotated[str | None, typer.Option("--track", "-t", envvar="AUTORESEARCH_TRACK", help="Track: cpu, tiny, climbmix or a track id (default: cpu; climbmix with --adopt).")] = None,
        adopt: Annotated[bool, typer.Option("--adopt", help="Adopt an upstream autoresearch checkout in DIRECTORY (keeps its train.py, branch and results.tsv).")] = False,
    ) -> None:
        """Create a workspace: git repo with train.py, program.md, results.tsv and .autoresearch/."""
        from autoresearch.trainer import tracks

        track = track or ("climbmix" if adopt else "cpu")
        spec = _track(track)
        ws = Workspace.init(
            directory, track=track, reference_source=tracks.reference_source(spec), program_md=program_template(), adopt=adopt
        )
        console.out().print(str(ws.root), highlight=False)
        console.info(f"workspace for track {spec.id} ready; edit program.md, then: cd {directory} && autoresearch run")

    @app.command("run")
    def run(
        proposer: Annotated[str | None, typer.Option("--proposer", "-p", envvar="AUTORESEARCH_PROPOSER", help=f"One of {', '.join(PROPOSER_NAMES)} (default: command when an agent command is set, else anthropic when ANTHROPIC_API_KEY is set, else offline).")] = None,
        max_experiments: Annotated[int | None, typer.Option("--experiments", "-n", "--max-experiments", min=1, help="Stop after this many experiments (default: until Ctrl-C; --max-experiments: the same).")] = None,
        tag: Annotated[str | None, typer.Option("--tag", help="Run tag; the branch is autoresearch/<tag> (default: the last tag, else today's date).")] = None,
        min_z: Annotated[float | None, typer.Option("--min-z", help="With a calibration, keep only improvements of at least this many seed-noise σ.")] = None,
        workspace: Annotated[Path, typer.Option("--workspace", "-w", envvar="AUTORESEARCH_WORKSPACE", help="Workspace folder.")] = Path("."),
        model: Annotated[str, typer.Option("--model", envvar="AUTORESEARCH_MODEL", help="Claude model of the anthropic proposer.")] = DEFAULT_MODEL,
        agent_command: AgentCommandOpt = None,
        agent_timeout: AgentTimeoutOpt = None,
        agent_retries: AgentRetriesOpt = None,
        seed: Annotated[int, typer.Option("--seed", help="Harness run seed.")] = 0,
        no_prefetch: Annotated[bool, typer.Option("--no-prefetch", help="Propose only after each run (no background proposal).")] = False,
        json_: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
        allow_unsandboxed: AllowUnsandboxedOpt = False,
    ) -> None:
        """Run the agent loop in a workspace: propose, train, keep or discard, repeat."""
        from ..display import LiveDisplay, PlainDisplay
        from ..loop import LoopOptions

        ws = Workspace.open(workspace)
        spec = _track(ws.config.track)
        name, chosen = choose_proposer(
            proposer, ws, model=model, agent_command=agent_command, agent_timeout=agent_timeout, agent_retries=agent_retries
        )
        options = LoopOptions(
            tag=tag or default_tag(ws), max_experiments=max_experiments, min_z=min_z, seed=seed, prefetch=not no_prefetch,
            allow_unsandboxed=allow_unsandboxed,
        )
        err = console.err()
        display = LiveDisplay(err) if err.is_terminal else PlainDisplay(err)
        loop = AgentLoop(ws, spec, chosen, options, events=display)
        with ws.lock():
            previous = _stop_on_sigint(loop)
            try:
                with display if isinstance(display, LiveDisplay) else nullcontext():
                    stats = loop.run()
            finally:
                signal.signal(signal.SIGINT, previous)
        summary = {
            "workspace": str(ws.root),
            "branch": f"autoresearch/{options.tag}",
            "proposer": name,
            "runs": stats.runs,
            "keeps": stats.keeps,
            "discards": stats.discards,
            "crashes": stats.crashes,
            "rejected": stats.rejected,
            "skipped": stats.skipped,
            "best_val_bpb": stats.best_val_bpb,
            "training_seconds": round(stats.training_seconds, 3),
            "wall_seconds": round(stats.wall_seconds, 3),
        }
        if json_:
            console.print_json(summary)
        else:
            best = "-" if stats.best_val_bpb is None else f"{stats.best_val_bpb:.6f}"
            console.out().print(
                f"{stats.runs} runs on {summary['branch']}: {stats.keeps} keep, {stats.discards} discard, "
                f"{stats.crashes} crash, {stats.rejected} rejected; best val_bpb {best}",
                highlight=False,
            )
