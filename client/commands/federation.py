"""``autoresearch join|pull|findings|show|outbox``: working with a hub.

Hub URL resolution for the read commands: ``--hub`` / ``AUTORESEARCH_HUB``, else the hub the
workspace joined (``.autoresearch/federation.json``). The token comes from ``--token`` /
``AUTORESEARCH_HUB_TOKEN`` and is never written to disk.
"""

from __future__ import annotations

import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.syntax import Syntax
from rich.table import Table

from autoresearch.protocol import ExperimentView

from .. import console
from ..errors import PolicyViolation, UsageError, WorkspaceError
from ..federation import dump_json, is_trusted, load_federation
from ..hubclient import HubClient
from ..hubhooks import HubHooks, policy_findings
from ..join import DEFAULT_ADOPT_EVERY, JoinOptions, join
from ..outbox import Outbox, OutboxItem
from ..pull import fetch_pull, pull_message
from ..safetext import safe_text
from ..workspace import Workspace
from . import AgentCommandOpt, AgentRetriesOpt, AgentTimeoutOpt, AllowUnsandboxedOpt

if TYPE_CHECKING:  # the loop imports the trainer; keep it out of `autoresearch --help`
    from autoresearch.protocol import TrackSpec

    from ..loop import LoopStats

HubOpt = Annotated[
    str | None, typer.Option("--hub", envvar="AUTORESEARCH_HUB", help="Hub URL (default: the hub this workspace joined).")
]
TokenOpt = Annotated[
    str | None,
    typer.Option("--token", envvar="AUTORESEARCH_HUB_TOKEN", help="Bearer token of a private hub (enrollment or read)."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON to stdout.")]
DirOpt = Annotated[Path, typer.Option("--dir", "-C", help="Workspace folder.")]


def _open_workspace(path: Path) -> Workspace:
    return Workspace.open(path)


def _resolve_hub(hub: str | None, start: Path) -> str:
    """The hub URL from ``--hub``, else the workspace's federation settings."""
    if hub:
        return hub
    try:
        fed = load_federation(_open_workspace(start).root)
    except WorkspaceError:
        fed = None
    if fed is None:
        raise UsageError("no hub given", hint="pass --hub URL (or set AUTORESEARCH_HUB), or run it in a joined workspace")
    return fed.hub_url


def _resolve_track(track: str | None, start: Path) -> str:
    if track:
        return track
    try:
        ws = _open_workspace(start)
    except WorkspaceError:
        return "cpu"
    fed = load_federation(ws.root)
    return fed.track if fed else ws.config.track


def _fmt(value: float | None, spec: str = ".6f") -> str:
    return "—" if value is None else format(value, spec)


# --------------------------------------------------------------------------------------------------
# findings, show


def findings_cmd(
    hub: HubOpt = None,
    track: Annotated[str | None, typer.Option("--track", help="Track name or id (default: the workspace's, else cpu).")] = None,
    hardware_class: Annotated[str | None, typer.Option("--hardware-class", help="Only this hardware class's leaderboard.")] = None,
    limit: Annotated[int, typer.Option("--limit", help="Rows per table.")] = 10,
    token: TokenOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Leaderboard, recent keeps and top directions of a track on a hub."""
    here = Path.cwd()
    url = _resolve_hub(hub, here)
    track_ = _resolve_track(track, here)
    with HubClient(url, token=token) as client:
        board = client.leaderboard(track_)
        recent = _recent_keeps(client, track_, hardware_class, limit)
        directions = sorted(client.directions(track_), key=lambda d: (-d.keeps, -d.tries))[:limit]
    classes = {k: v for k, v in board.by_hardware_class.items() if hardware_class in (None, k)}
    if json_:
        console.print_json(
            {
                "hub": url,
                "track": board.track,
                "leaderboard": {k: [dump_json(e) for e in v[:limit]] for k, v in classes.items()},
                "ecm_leaderboard": [dump_json(e) for e in board.ecm[:limit]],
                "recent_keeps": [dump_json(v) for v in recent],
                "directions": [dump_json(d) for d in directions],
            }
        )
        return
    # Every string below came from the hub: shown through console.text (no markup, escapes visible).
    t = console.text
    out = console.out()
    out.print(t(board.track, "bold") + t(f" on {url}   page: {url.rstrip('/')}/tracks/{board.track}"))
    for klass, entries in classes.items():
        table = Table(title=t(f"leaderboard — {klass}"), title_justify="left")
        for col in ("#", "val_bpb", "ECM", "z", "mark", "client", "description", "experiment"):
            table.add_column(col)
        for e in entries[:limit]:
            table.add_row(
                str(e.rank), _fmt(e.val_bpb), _fmt(e.ecm, ".2f"), _fmt(e.z, "+.1f"), _mark(e.community_best, e.needs_replication, e.provisional),
                t(e.client_name), t(e.description), t(e.experiment_id[:12]),
            )  # fmt: skip
        out.print(table)
    if not classes:
        out.print("no kept experiments yet")
    table = Table(title="recent keeps", title_justify="left")
    for col in ("val_bpb", "Δ", "z", "mark", "hardware class", "client", "description", "experiment"):
        table.add_column(col)
    for v in recent:
        r = v.record
        table.add_row(  # the hub's figures (from the signer's verified calibration), never the claim
            _fmt(r.metrics.val_bpb), _fmt(v.normalised.delta_val_bpb, "+.4f"), _fmt(v.normalised.z, "+.1f"),
            _mark(v.verdict == "qualified", v.needs_replication, v.provisional), t(r.hardware_class), t(v.client_name),
            t(r.description), t(v.id[:12]),
        )  # fmt: skip
    out.print(table)
    table = Table(title="top directions", title_justify="left")
    for col in ("direction", "tries", "keeps", "crashes", "ECM ratio", "val_bpb ratio", "hardware-dependent"):
        table.add_column(col)
    for d in directions:
        table.add_row(
            t(d.direction), str(d.tries), str(d.keeps), str(d.crashes), _fmt(d.mean_gain, ".3f"),
            _fmt(d.mean_bpb_ratio, ".3f"), "yes" if d.hardware_dependent else "",
        )  # fmt: skip
    out.print("marks: best = community best; needs replication = waiting for another key's calibrated run; "
              "provisional = no calibration the hub verified (never best)", highlight=False)
    out.print(table)


def _mark(best: bool, needs_replication: bool, provisional: bool) -> str:
    """The findings tables' mark column: ``best``, ``needs replication``, ``provisional`` (or empty)."""
    return ", ".join(m for m, on in (("best", best), ("needs replication", needs_replication), ("provisional", provisional)) if on)


def _recent_keeps(client: HubClient, track: str, hardware_class: str | None, limit: int) -> list[ExperimentView]:
    keeps: list[ExperimentView] = []
    for view in client.iter_experiments(track=track, hardware_class=hardware_class, outcome="ok"):
        if view.record.status == "keep":
            keeps.append(view)
        if len(keeps) >= limit:
            break
    return keeps


def show_cmd(
    experiment_id: Annotated[str, typer.Argument(help="Experiment id (64 hex), or a unique prefix of at least 8 hex digits as tables show.")],
    hub: HubOpt = None,
    token: TokenOpt = None,
    json_: JsonOpt = False,
) -> None:
    """One experiment: figures, coloured diff, replications and lineage."""
    url = _resolve_hub(hub, Path.cwd())
    with HubClient(url, token=token) as client:
        detail = client.experiment(experiment_id)
    if json_:
        console.print_json(dump_json(detail))
        return
    r = detail.record
    n = detail.normalised  # the hub's figures; the record's own claim is r.normalised
    t = console.text  # every string of the record and the view came from a hub
    out = console.out()
    out.print(t(r.description, "bold") + t(f"   {detail.id}"))
    out.print(
        t(
            f"{r.outcome}/{r.status}  val_bpb {_fmt(r.metrics.val_bpb)}  parent {_fmt(r.parent_val_bpb)}  "
            f"Δ {_fmt(n.delta_val_bpb, '+.6f')}  z {_fmt(n.z, '+.2f')}  ECM {_fmt(n.ecm, '.3f')}"
            f"{' (extrapolated)' if n.ecm_extrapolated else ''}  gain {_fmt(n.gain, '.3f')}"
        )
    )
    line = t(f"{detail.client_name} ({detail.key_id[:16]})  {r.hardware_class}  track {r.track}  {r.created_at:%Y-%m-%d %H:%M:%S}Z")
    out.print(line + t("  revoked key", "red") if detail.revoked else line)
    if detail.directions:
        out.print(t("directions: " + ", ".join(detail.directions)))
    if r.error:
        out.print(t(f"error: {r.error}", one_line=False))
    out.print(_diff(r.diff or "(no change)\n"))
    rep = detail.replications
    out.print(
        t(
            f"replications: n={rep.n}  mean {_fmt(rep.val_bpb_mean)}  std {_fmt(rep.val_bpb_std)}  "
            f"on {', '.join(rep.hardware_classes) or '—'}"
            f"{'  (needs replication)' if detail.needs_replication else ''}{'  (provisional)' if detail.provisional else ''}"
        )
    )
    if detail.lineage:
        out.print(t("lineage: " + " ← ".join(i[:12] for i in detail.lineage)))


def _diff(diff: str) -> Syntax:
    """A unified diff (from a hub or another client) coloured as a diff, its control characters
    escaped first (``Syntax`` reads no markup, but would pass escape sequences through)."""
    return Syntax(safe_text(diff), "diff", theme="ansi_dark", background_color="default")


# --------------------------------------------------------------------------------------------------
# outbox


def outbox_cmd(
    directory: DirOpt = Path("."),
    all_: Annotated[bool, typer.Option("--all", help="Also list delivered items.")] = False,
    send: Annotated[bool, typer.Option("--send", help="Deliver pending items to the hub now.")] = False,
    retry_rejected: Annotated[bool, typer.Option("--retry-rejected", help="Put rejected items back in the queue.")] = False,
    hub: HubOpt = None,
    token: TokenOpt = None,
    json_: JsonOpt = False,
) -> None:
    """List records waiting for (or refused by) the hub; --send delivers them now."""
    ws = _open_workspace(directory)
    outbox = Outbox.for_workspace(ws.root)
    if retry_rejected:
        console.info(f"{outbox.requeue()} rejected item(s) queued again")
    if send:
        with HubClient(_resolve_hub(hub, ws.root), token=token) as client:
            report = outbox.send_pending(client, force=True)
        console.info(
            f"sent {report.sent}, already on the hub {report.already_there}, rejected {len(report.rejected)}, "
            f"pending {report.pending}" + (f" (hub unavailable: {report.unavailable})" if report.unavailable else "")
        )
    items = outbox.items(("pending", "rejected", "sent") if all_ else ("pending", "rejected"))
    if json_:
        console.print_json({"counts": outbox.counts(), "items": [dump_json(i) for i in items]})
        return
    _print_items(items, outbox.counts())


def _print_items(items: list[OutboxItem], counts: dict[str, int]) -> None:
    out = console.out()
    out.print(f"pending {counts['pending']}  rejected {counts['rejected']}  sent {counts['sent']}", highlight=False)
    if not items:
        return
    table = Table()
    for col in ("#", "kind", "record", "state", "attempts", "reason / last error", "queued"):
        table.add_column(col)
    for i in items:
        table.add_row(
            str(i.seq), i.kind, i.record_id[:12], i.state, str(i.attempts),
            console.text((i.reason or "") + (f": {i.last_error}" if i.last_error and i.state != "sent" else "")),
            f"{i.created_at:%Y-%m-%d %H:%M:%S}",
        )  # the reason and error quote the hub
    out.print(table)


# --------------------------------------------------------------------------------------------------
# pull


def pull_cmd(
    experiment_id: Annotated[str | None, typer.Argument(help="Experiment id or unique prefix (≥ 8 hex) to pull (default: --best).")] = None,
    best: Annotated[bool, typer.Option("--best", help="Pull the community best of the hardware class.")] = False,
    hardware_class: Annotated[
        str | None, typer.Option("--hardware-class", help="Hardware class for --best (default: this machine's; 'any': best by ECM).")
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Apply without asking (after the policy check).")] = False,
    directory: DirOpt = Path("."),
    hub: HubOpt = None,
    token: TokenOpt = None,
) -> None:
    """Apply someone else's train.py: show the diff, check the policy, ask, commit."""
    if experiment_id and best:
        raise UsageError("give either an EXPERIMENT_ID or --best, not both")
    ws = _open_workspace(directory)
    fed = load_federation(ws.root)
    url = _resolve_hub(hub, ws.root)
    track = fed.track if fed else ws.config.track
    with HubClient(url, token=token) as client:
        pulled = fetch_pull(client, track, experiment_id=experiment_id, hardware_class=hardware_class)
    local = ws.train_py.read_text(encoding="utf-8")
    if pulled.source == local:
        console.info(f"train.py already equals {pulled.record_id[:12]}; nothing to do")
        return
    from autoresearch.protocol.source import unified_diff

    console.out().print(_diff(unified_diff(local, pulled.source)))
    console.info(
        safe_text(f"{pulled.description}  (val_bpb {_fmt(pulled.val_bpb)}, signed by {pulled.key_id[:16]}, {pulled.hardware_class})", one_line=True)
    )
    findings = policy_findings(pulled.source)
    if findings:
        raise PolicyViolation(findings)
    if not (yes or is_trusted(pulled.key_id) or ask("apply this train.py from an untrusted key?")):
        raise typer.Exit(1)
    lock = ws.lock()
    try:
        commit = ws.commit_train_py(pulled.source, pull_message(pulled))
    finally:
        lock.close()
    console.out().print(f"applied {pulled.record_id} as commit {commit[:12]}", highlight=False)


def ask(question: str) -> bool:
    """Ask ``question`` (y/N) on the terminal; the commands' one way of asking (library code asks
    through the ``confirm`` callable it is given).

    Raises:
        UsageError: no terminal to ask on (stdin is not a TTY), with the hint to re-run with --yes.
    """
    if not sys.stdin.isatty():
        raise UsageError(f"not answered (no terminal to ask on): {question}", hint="read the above, then re-run with --yes")
    return typer.confirm(question, default=False, err=True)


# --------------------------------------------------------------------------------------------------
# join


def join_cmd(
    hub_url: Annotated[str, typer.Argument(help="The hub's URL, e.g. http://127.0.0.1:8000.")],
    init: Annotated[Path | None, typer.Option("--init", help="Create a new workspace in this folder first.")] = None,
    track: Annotated[str | None, typer.Option("--track", help="Track of the new workspace (with --init).")] = None,
    token: TokenOpt = None,
    name: Annotated[str | None, typer.Option("--name", envvar="AUTORESEARCH_NAME", help="Display name on the hub (default: host name).")] = None,
    proposer: Annotated[
        str,
        typer.Option(
            "--proposer", envvar="AUTORESEARCH_PROPOSER",
            help="offline, anthropic or command (default: command when an agent command is set, else anthropic with ANTHROPIC_API_KEY, else offline).",
        ),
    ] = "auto",
    agent_command: AgentCommandOpt = None,
    agent_timeout: AgentTimeoutOpt = None,
    agent_retries: AgentRetriesOpt = None,
    max_experiments: Annotated[int | None, typer.Option("--experiments", "-n", "--max-experiments", min=0, help="Stop after this many experiments (0: register and calibrate only; --max-experiments: the same).")] = None,
    tag: Annotated[str | None, typer.Option("--tag", help="Run tag (branch autoresearch/<tag>).")] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Unattended: calibrate without asking; adopt the community best without asking.")] = False,
    adopt_every: Annotated[int, typer.Option("--adopt-every", help="Check the community best every N experiments (0: never).")] = DEFAULT_ADOPT_EVERY,
    no_calibrate: Annotated[
        bool, typer.Option("--no-calibrate", help="Skip calibration: records carry Δ val_bpb only (no z, no ECM).")
    ] = False,
    directory: DirOpt = Path("."),
    allow_unsandboxed: AllowUnsandboxedOpt = False,
    status_file: Annotated[
        Path | None, typer.Option("--status-file", hidden=True, help="Keep a JSON snapshot of the loop here (the demo's live table).")
    ] = None,
) -> None:
    """Join a hub and run the agent loop connected to it."""
    from ..demo import quiet_libraries

    quiet_libraries()
    _check_agent_early(proposer, agent_command, init or directory)  # before calibration, which takes minutes
    opts = JoinOptions(
        hub_url=hub_url,
        init=init,
        track=track,
        token=token,
        display_name=name or socket.gethostname()[:64] or "volunteer",
        proposer=proposer,
        agent_command=agent_command,
        agent_timeout=agent_timeout,
        agent_retries=agent_retries,
        max_experiments=max_experiments,
        tag=tag,
        yes=yes,
        adopt_every=adopt_every,
        calibrate=not no_calibrate,
        directory=directory,
    )
    stats = join(opts, lambda ws, spec, hooks: _run_loop(ws, spec, hooks, opts, allow_unsandboxed, status_file), confirm=ask)
    best = "-" if stats.best_val_bpb is None else f"{stats.best_val_bpb:.6f}"
    console.out().print(
        f"{stats.runs} runs: {stats.keeps} keep, {stats.discards} discard, {stats.crashes} crash, "
        f"{stats.rejected} rejected, {stats.skipped} answered by the hub or held; best val_bpb {best}",
        highlight=False,
    )


def _check_agent_early(proposer: str, agent_command: str | None, folder: Path) -> None:
    """Refuse a missing agent CLI (from the option or the workspace's ``agent`` entry), or
    ``--proposer command`` without one, before ``join`` registers and calibrates.

    Raises:
        UsageError: no agent command for ``--proposer command``, or its program is not found.
    """
    from ..proposers.command import check_agent_command

    if not agent_command:
        try:
            configured = Workspace.open(folder).config.agent
        except WorkspaceError:
            configured = None  # a new workspace (--init), or none: the loop decides later
        agent_command = configured.command if configured is not None else None
    if agent_command and proposer in ("auto", "command"):
        check_agent_command(agent_command)
    elif proposer == "command" and not agent_command:
        raise UsageError(
            "the command proposer needs --agent-command",
            hint='e.g. --agent-command "my-agent --headless", or an "agent" entry in .autoresearch/config.json',
        )


def _run_loop(
    ws: Workspace, spec: TrackSpec, hooks: HubHooks, opts: JoinOptions, allow_unsandboxed: bool = False,
    status_file: Path | None = None,
) -> LoopStats:
    """The agent loop with the hub's hooks, the CLI's display and Ctrl-C handling of ``run``;
    ``status_file``: also keep a :class:`~autoresearch.client.display.VolunteerStatus` snapshot there
    (the plain display then leaves progress lines to whoever watches it)."""
    import signal
    from contextlib import nullcontext

    from ..display import LiveDisplay, PlainDisplay, StatusFile
    from ..loop import AgentLoop, LoopOptions
    from ..proposers import choose_proposer
    from .workspace import _stop_on_sigint, default_tag

    _, proposer = choose_proposer(
        opts.proposer, ws, agent_command=opts.agent_command, agent_timeout=opts.agent_timeout, agent_retries=opts.agent_retries
    )
    options = LoopOptions(tag=opts.tag or default_tag(ws), max_experiments=opts.max_experiments, adopt_every=opts.adopt_every,
                          allow_unsandboxed=allow_unsandboxed)  # fmt: skip
    err = console.err()
    display = LiveDisplay(err) if err.is_terminal else PlainDisplay(err, progress_lines=status_file is None)
    status = StatusFile(status_file, display, of=opts.max_experiments) if status_file is not None else None
    loop = AgentLoop(ws, spec, proposer, options, hooks=hooks, events=status or display)
    with ws.lock():
        previous = _stop_on_sigint(loop)
        try:
            with display if isinstance(display, LiveDisplay) else nullcontext():
                return loop.run()
        finally:
            signal.signal(signal.SIGINT, previous)
            if status is not None:
                status.close()


def register(app: typer.Typer) -> None:
    app.command("join")(join_cmd)
    app.command("pull")(pull_cmd)
    app.command("findings")(findings_cmd)
    app.command("show")(show_cmd)
    app.command("outbox")(outbox_cmd)

