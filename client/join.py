"""``autoresearch join``: key, registration, track check, calibration, then the loop with :class:`HubHooks`.

Library code: it asks no questions itself. Where ``join --help`` promises a question (calibrating
for minutes), the command layer passes a ``confirm`` callable (client/commands/federation.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict

from autoresearch.protocol import (
    ClientRegistration,
    Envelope,
    KeyPair,
    TrackSpec,
    sha256_hex,
    sign,
    utc_now,
)

from . import config
from .errors import BadHubResponse, HubError, HubUnavailable, RecordRejected, UsageError
from .federation import FederationConfig, local_hardware_class, save_federation
from .hubclient import HubClient, format_duration
from .hubhooks import HOOKS_DEADLINE_SECONDS, HubHooks
from .outbox import Outbox, OutboxSender, SendReport

if TYPE_CHECKING:  # client/loop.py imports the trainer (torch); keep it out of import time
    from .loop import LoopStats
    from .workspace import Workspace

    RunLoop = Callable[[Workspace, TrackSpec, HubHooks], LoopStats]

_logger = logging.getLogger(__name__)

Confirm = Callable[[str], bool]  # asks the user a yes/no question; may raise UsageError (no terminal)

DEFAULT_ADOPT_EVERY = 5  # experiments between adoption checks


class JoinOptions(BaseModel):
    """What ``autoresearch join`` was asked to do."""

    model_config = ConfigDict(frozen=True)

    hub_url: str
    init: Path | None = None
    track: str | None = None
    token: str | None = None
    display_name: str
    proposer: str = "auto"
    agent_command: str | None = None
    agent_timeout: float | None = None
    agent_retries: int | None = None
    max_experiments: int | None = None
    tag: str | None = None
    yes: bool = False
    adopt_every: int = DEFAULT_ADOPT_EVERY
    calibrate: bool = True
    directory: Path = Path(".")


def register_key(
    hub: HubClient, outbox: Outbox, keys: KeyPair, display_name: str, hardware_class: str, *, offline: bool = False
) -> bool:
    """Register ``keys`` with the hub; True when the hub answered, False when it is down (the
    registration then waits at the head of the outbox). ``offline``: the hub is known to be down
    (the caller logged why): queue the registration without asking it.

    The key is the identity: a key registered before under another display name keeps that name
    (``key_already_registered`` is fine); a display name another key holds gets ``-<6 hex of the key
    id>`` appended.

    Raises:
        RecordRejected: the hub refused the key (revoked, private hub without a valid token, …).
    """

    def registration(name: str) -> Envelope:
        record = ClientRegistration(
            public_key=keys.public_key_hex, display_name=name[:64], hardware_class=hardware_class[:200], created_at=utc_now()
        )
        return sign(record, keys)

    env = registration(display_name)
    if offline:
        outbox.enqueue("client", env)
        return False
    try:
        try:
            hub.register(env)
        except RecordRejected as exc:
            if exc.reason == "display_name_taken":
                hub.register(registration(f"{display_name[:57]}-{keys.key_id[:6]}"))
            elif exc.reason != "key_already_registered":
                raise
        view = hub.client(keys.key_id)
    except (HubUnavailable, BadHubResponse) as exc:
        _logger.warning("hub unavailable, carrying on solo (registration and records wait in the outbox): %s", exc)
        outbox.enqueue("client", env)
        return False
    if view.status == "revoked":
        raise RecordRejected(
            f"the hub revoked key {keys.key_id[:16]}…; it accepts no new records from it",
            status=403,
            reason="key_revoked",
            hint="your experiments stay in this workspace (.autoresearch/) and its outbox",
        )
    if view.status == "pending":
        _logger.warning("key %s… awaits the hub admin's approval; records wait in the outbox", keys.key_id[:16])
    return True


def check_track(hub: HubClient, spec: TrackSpec) -> None:
    """Refuse a track the local harness cannot reproduce exactly.

    Raises:
        UsageError: the hub's spec of this track has another harness version or id.
        RecordRejected: the hub does not know the track.
    """
    # by name: a hub on another harness version has another id for the same track
    theirs = hub.track(spec.name).spec
    if theirs.harness_version != spec.harness_version:
        raise UsageError(
            f"the hub's track {theirs.id} uses harness version {theirs.harness_version}, this client has "
            f"{spec.harness_version}: results would not compare",
            hint="install the autoresearch-hub version the hub runs",
        )
    if theirs.id != spec.id:
        raise UsageError(f"the hub's track {theirs.id} differs from the local {spec.id}")


def _spec(name: str) -> TrackSpec:
    """The local track spec; unknown → :class:`UsageError` naming the known tracks."""
    from autoresearch.trainer import tracks

    try:
        return tracks.get_track(name)
    except tracks.UnknownTrack as exc:
        raise UsageError(str(exc)) from exc


def _workspace_for(opts: JoinOptions) -> Workspace:
    """Open the workspace, or create it with ``--init DIR --track T``."""
    from autoresearch.trainer import tracks

    from .workspace import Workspace

    if opts.init is None:
        if opts.track is not None:
            raise UsageError("--track needs --init DIR (an existing workspace keeps its track)")
        return Workspace.open(opts.directory)
    if opts.track is None:
        raise UsageError("--init needs --track", hint="e.g. --init ./ws --track cpu")
    spec = _spec(opts.track)
    if (opts.init / ".autoresearch" / "config.json").exists():
        ws = Workspace.open(opts.init)
        if _spec(ws.config.track).id != spec.id:
            raise UsageError(f"{opts.init} is a workspace of track {ws.config.track}, not {opts.track}")
        return ws
    program = resources.files("autoresearch.client").joinpath("templates", "program.md").read_text(encoding="utf-8")
    return Workspace.init(opts.init, track=spec.name, reference_source=tracks.reference_source(spec), program_md=program)


def ensure_calibration(
    spec: TrackSpec, hardware_class: str, keys: KeyPair, outbox: Outbox, *, confirm: Confirm | None = None
) -> None:
    """Reuse or run this machine's calibration of ``spec`` and queue its signed record for the hub.

    ``confirm(question)`` is asked before a calibration that is not cached (its length from
    ``calibration.estimate_seconds``: about 44 minutes on ``climbmix``, 10 on ``cpu``); a cached
    calibration is reused without asking. None: run it
    without asking (``join --yes``).

    Raises:
        UsageError: ``confirm`` declined (or raised it: no terminal to ask on).
    """
    from . import calibration

    if calibration.load_cached(spec, hardware_class) is None:
        minutes = calibration.estimate_seconds(spec.time_budget) / 60
        if confirm is not None and not confirm(f"calibrate {spec.name} on this machine now (about {minutes:.0f} minutes)?"):
            raise UsageError("calibration declined", hint="join with --no-calibrate to publish Δ val_bpb only")
        _logger.info("calibrating %s on %s (about %.0f minutes)", spec.name, hardware_class, minutes)
        calibration.calibrate(spec, keys=keys, progress=calibration.log_runs)
    env = calibration.load_cached_envelope(spec, hardware_class)
    if env is not None:
        outbox.enqueue("calibration", env)


def join(opts: JoinOptions, run_loop: RunLoop, *, confirm: Confirm | None = None) -> LoopStats:
    """``autoresearch join``: key, registration, track check, calibration, then
    ``run_loop(workspace, track, hooks)`` (the CLI's loop with its display) with :class:`HubHooks`.
    Afterwards the outbox gets a last delivery attempt. Returns the loop's counters.

    ``confirm``: asks the user a yes/no question (the command layer's; None or ``opts.yes``: no
    question is asked).

    Raises:
        RecordRejected: the hub refused this key (revoked; private hub without a valid token).
        UsageError, WorkspaceError: bad options or workspace.
    """
    from .commands.keys import load_or_create_keys

    keys = load_or_create_keys()
    ws = _workspace_for(opts)
    spec = _spec(ws.config.track)
    hw = local_hardware_class(spec)
    outbox = Outbox.for_workspace(ws.root)
    # the loop waits for this client's answers (context, claims): a short total deadline; the sender
    # works in the background and gets the default one
    hub = HubClient(opts.hub_url, token=opts.token, deadline_seconds=config.hub_deadline_seconds(HOOKS_DEADLINE_SECONDS))
    sender_hub = HubClient(opts.hub_url, token=opts.token)
    try:
        down: HubError | None = None
        try:
            check_track(hub, spec)
        except (HubUnavailable, BadHubResponse) as exc:
            down = exc
            _logger.warning(
                "hub unavailable, carrying on solo (records wait in the outbox; the track is checked at the next join): %s", exc
            )
        registered = register_key(hub, outbox, keys, opts.display_name, hw, offline=down is not None)
        fed = FederationConfig(
            hub_url=opts.hub_url,
            track=spec.id,
            key_id=keys.key_id,
            display_name=opts.display_name,
            joined_at=utc_now(),
        )
        save_federation(ws.root, fed)
        if opts.calibrate:
            ensure_calibration(spec, hw, keys, outbox, confirm=None if opts.yes else confirm)
        else:
            _logger.info("calibration skipped: records carry Δ val_bpb only (no z, no ECM)")
        sender = OutboxSender(outbox, sender_hub).start()
        hooks = HubHooks(
            hub=hub,
            outbox=outbox,
            sender=sender,
            keys=keys,
            track=spec.id,
            time_budget=spec.time_budget,
            hardware_class=hw,
            trust_community_best=opts.yes,
            source_lookup=lambda sha: _workspace_source(ws, sha),
        )
        if not registered:
            hooks.mark_down(down or HubUnavailable("registration failed"), logged=True)
        _logger.info(
            "joined %s as %s (key %s…)%s", opts.hub_url, opts.display_name, keys.key_id[:16], "" if registered else " [solo until the hub is back]"
        )
        try:
            stats = run_loop(ws, spec, hooks)
        finally:
            report = sender.stop(flush=True)
            if report is not None and (report.pending or report.rejected):
                _logger.warning(
                    "%d record(s) still wait in the outbox, %d rejected; `autoresearch outbox` lists them",
                    report.pending,
                    len(report.rejected),
                )
            if report is not None and report.future:
                _warn_future(report, sender_hub.clock_skew_seconds)
        revoked = [i for i in outbox.items(("rejected",)) if i.reason == "key_revoked"]
        if revoked:
            raise RecordRejected(
                f"the hub revoked key {keys.key_id[:16]}…; {len(revoked)} record(s) were refused",
                status=403,
                reason="key_revoked",
                hint="they stay in this workspace: `autoresearch outbox` lists them",
            )
        return stats
    finally:
        hub.close()
        sender_hub.close()


def _warn_future(report: SendReport, skew: float | None) -> None:
    """Say that records wait because this machine's clock runs ahead of the hub's, and until when."""
    ahead = f" (this machine's clock is {format_duration(skew)} ahead of the hub's)" if skew and skew > 0 else ""
    when = f" after {report.future_until:%Y-%m-%d %H:%M:%S} UTC (this machine's clock)" if report.future_until else ""
    _logger.warning(
        "%d record(s) are dated in the hub's future%s and wait in the outbox; they go out with the next "
        "`autoresearch join` or `autoresearch outbox --send`%s; fix: sync the clock (e.g. `timedatectl set-ntp true`)",
        report.future,
        ahead,
        when,
    )


def _workspace_source(ws: Workspace, sha: str) -> str | None:
    """A ``train.py`` of the workspace's recent experiments (parents and children) by sha256."""
    for exp in reversed(ws.experiments()[-20:]):
        for commit in (exp.parent_commit, exp.commit):
            if commit:
                source = ws.source_at(commit)
                if sha256_hex(source) == sha:
                    return source
    return None
