"""``autoresearch demo``: a local hub and two volunteers, on one machine, offline.

:class:`HubServer` runs the real hub app (``autoresearch.hub.app.create_app``) under uvicorn in a
background thread on a loopback port; the end-to-end tests use it too. :func:`run_demo` starts one,
then two volunteer clients as separate ``autoresearch join … --yes`` processes, each with its own
workspace, ``AUTORESEARCH_HOME`` and Ed25519 key, so everything between them goes through the hub's
API exactly as between two machines.

Calibration: the ``cpu`` track's calibration costs about 10 minutes per machine (budgets ¼…2 × 60 s
with 5 seeds at the full budget, ``calibration.DEFAULT_SEEDS``), too slow for a demo, and a shortened
schedule would calibrate a different (derived) track. So the demo's volunteers join with
``--no-calibrate`` and say so: their records carry Δ val_bpb against the parent measured on the same
machine, but no z and no ECM, and every keep is provisional. The loop's drift guard re-measures the
parent next to each would-be keep before keeping it (docs/loop.md, "Drift guard"): one extra run per
candidate that beats its parent, so a default demo (3 experiments per volunteer, the baseline
included) runs 3 to 5 trainings per volunteer.

Progress: on a terminal the demo shows one live table (:class:`DemoTable`) of each volunteer's
experiment, step, loss and time left, read from the snapshot each volunteer keeps
(``join --status-file``, :class:`autoresearch.client.display.StatusFile`); the volunteers' own lines
print above it. Not on a terminal, each volunteer's plain lines (with a progress line at each quarter
of the budget) are printed, prefixed by its name: no escape codes.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict

from .errors import ClientError, UsageError
from .hubclient import HubClient

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

_logger = logging.getLogger(__name__)

VOLUNTEERS = ("alice", "bob")
_MAIN = "from autoresearch.client.cli import main; main()"  # the `autoresearch` entry point
START_TIMEOUT_SECONDS = 60.0


def quiet_libraries() -> None:
    """Keep httpx's per-request lines and the in-process hub's request log out of the CLI's output
    (unless ``--verbose``)."""
    if not os.environ.get("AUTORESEARCH_VERBOSE"):
        for name in ("httpx", "autoresearch.hub", "alembic"):
            logging.getLogger(name).setLevel(logging.WARNING)


class HubServer:
    """The hub app served by uvicorn in a daemon thread on ``host:port`` (0: a free port).

    Args:
        db_url: SQLAlchemy URL of the hub's database (e.g. ``sqlite:////tmp/demo/hub.db``).
        port: TCP port; after :meth:`stop`, :meth:`start` binds the same port again (a restart).
        settings: further ``HubSettings`` fields (``private=True``, ``admin_token=…``).

    Raises (from :meth:`start`):
        UsageError: the hub extra is not installed.
        ClientError: the server did not come up within ``START_TIMEOUT_SECONDS``.
    """

    def __init__(self, db_url: str, *, host: str = "127.0.0.1", port: int = 0, **settings: Any) -> None:
        self.db_url = db_url
        self.host = host
        self.port = port
        self.settings = settings
        self._server: object | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> str:
        """Apply migrations, bind, serve in a thread; returns the base URL once it answers."""
        try:
            import uvicorn

            from autoresearch.hub.app import create_app
            from autoresearch.hub.migrate import upgrade
            from autoresearch.hub.settings import HubSettings
        except ImportError as exc:
            raise UsageError(f"the hub is not installed ({exc.name})", hint="pip install 'autoresearch-hub[hub]'") from exc
        upgrade(self.db_url)
        app = create_app(HubSettings(db_url=self.db_url, json_logs=False, **self.settings))
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on"))
        self._server = server
        self._thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="hub", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise ClientError(f"the local hub did not start on {self.url}")
            time.sleep(0.05)
        _logger.info("hub serving on %s (%s)", self.url, self.db_url)
        return self.url

    def stop(self) -> None:
        """Ask uvicorn to exit and wait for the thread (open connections are closed)."""
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True  # type: ignore[attr-defined]
            self._thread.join(timeout=30)
        self._server = None
        self._thread = None

    def __enter__(self) -> HubServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class VolunteerSummary(BaseModel):
    """One volunteer's row of the demo's summary table."""

    model_config = ConfigDict(frozen=True)

    name: str
    key_id: str
    experiments: int
    keeps: int
    crashes: int
    best_val_bpb: float | None


@dataclass
class Volunteer:
    """A volunteer client of the demo: its workspace, home, process and (with a live table) the
    snapshot its loop keeps."""

    name: str
    workspace: Path
    home: Path
    status_file: Path | None = None
    proc: subprocess.Popen[str] | None = None
    pumps: list[threading.Thread] = field(default_factory=list)


def volunteer_command(v: Volunteer, hub_url: str, *, track: str, experiments: int, proposer: str) -> list[str]:
    """The ``autoresearch join`` command line of one volunteer (resumes an existing workspace)."""
    cmd = [sys.executable, "-c", _MAIN, "join", hub_url, "--yes", "--no-calibrate"]
    if (v.workspace / ".autoresearch" / "config.json").exists():
        cmd += ["--dir", str(v.workspace)]
    else:
        cmd += ["--init", str(v.workspace), "--track", track]
    cmd += ["--name", v.name, "--proposer", proposer, "--experiments", str(experiments), "--adopt-every", "2"]
    if v.status_file is not None:
        cmd += ["--status-file", str(v.status_file)]
    return cmd


class DemoTable:
    """One live table of the volunteers, on ``console`` (a terminal): per volunteer the experiment
    (n of N), what it is doing, training step, loss, time left of the budget, best val_bpb and
    keep/discard/crash counts, read from each volunteer's snapshot twice a second. Lines printed
    on ``console`` meanwhile appear above the table."""

    def __init__(self, console: Console, volunteers: list[Volunteer]) -> None:
        from rich.live import Live

        self.volunteers = volunteers
        self._live = Live(console=console, get_renderable=self.render, refresh_per_second=2, transient=False)

    def render(self) -> Table:
        """The table from the snapshots as they are now (a missing one: ``starting``)."""
        from rich.table import Table

        from .display import VolunteerStatus

        table = Table(title="volunteers", title_justify="left")
        for col in ("volunteer", "experiment", "doing", "step", "loss", "left", "best val_bpb", "keep/discard/crash"):
            table.add_column(col, no_wrap=True)
        for v in self.volunteers:
            st = (VolunteerStatus.read(v.status_file) if v.status_file else None) or VolunteerStatus()
            left = max(st.time_budget - st.training_seconds, 0.0)
            doing = st.phase if st.phase != "training" else f"{'training' if left > 0 else 'evaluating'}: {st.description[:40]}"
            table.add_row(
                v.name,
                ("—" if st.number == 0 else str(st.number)) + (f" of {st.of}" if st.of else ""),
                doing,
                "—" if st.step is None else str(st.step),
                "—" if st.loss is None else f"{st.loss:.4f}",
                f"{left:.0f} s" if st.phase == "training" else "—",
                "—" if st.best_val_bpb is None else f"{st.best_val_bpb:.6f}",
                f"{st.keeps}/{st.discards}/{st.crashes}",
            )
        return table

    def __enter__(self) -> DemoTable:
        self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._live.__exit__(None, None, None)


def volunteer_env(v: Volunteer, *, threads: int) -> dict[str, str]:
    """The environment of a volunteer process: its own home (key, trusted keys), no stray config."""
    env = {k: val for k, val in os.environ.items() if not k.startswith("AUTORESEARCH_") or k == "AUTORESEARCH_CACHE"}
    env["AUTORESEARCH_HOME"] = str(v.home)
    env["OMP_NUM_THREADS"] = str(threads)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _pump(stream: IO[str], prefix: str, sink: Callable[[str], None]) -> None:
    for line in stream:
        sink(f"{prefix} {line.rstrip()}")
    stream.close()


def start_volunteer(
    v: Volunteer, hub_url: str, *, track: str, experiments: int, proposer: str, threads: int, sink: Callable[[str], None]
) -> None:
    """Start one volunteer's ``join`` process; its output lines go to ``sink`` prefixed by its name."""
    v.home.mkdir(parents=True, exist_ok=True)
    v.proc = subprocess.Popen(
        volunteer_command(v, hub_url, track=track, experiments=experiments, proposer=proposer),
        env=volunteer_env(v, threads=threads),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        process_group=0,  # a terminal's Ctrl-C reaches only the demo, which forwards it (see run_demo)
    )
    assert v.proc.stdout is not None
    pump = threading.Thread(target=_pump, args=(v.proc.stdout, f"[{v.name}]", sink), daemon=True)
    pump.start()
    v.pumps.append(pump)


def _signal_all(volunteers: list[Volunteer], signum: int) -> None:
    for v in volunteers:
        if v.proc is not None and v.proc.poll() is None:
            v.proc.send_signal(signum)


def _wait_for(volunteers: list[Volunteer], timeout: float | None = None) -> None:
    """Wait for every volunteer process (killing any still alive after ``timeout`` seconds)."""
    for v in volunteers:
        if v.proc is None:
            continue
        try:
            v.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            v.proc.kill()
            v.proc.wait()
        for pump in v.pumps:
            pump.join(timeout=5)


def summarise(hub: HubClient, track: str, volunteers: list[Volunteer]) -> list[VolunteerSummary]:
    """Per volunteer, what the hub holds: experiments, keeps, crashes, best val_bpb."""
    from autoresearch.protocol import KeyPair

    rows = []
    for v in volunteers:
        key_id = KeyPair.load(v.home / "keys" / "ed25519.pem").key_id
        views = list(hub.iter_experiments(track=track, client=key_id))
        kept = [x.record.metrics.val_bpb for x in views if x.record.status == "keep" and x.record.metrics.val_bpb]
        rows.append(
            VolunteerSummary(
                name=v.name,
                key_id=key_id,
                experiments=len(views),
                keeps=len(kept),
                crashes=sum(1 for x in views if x.record.status == "crash"),
                best_val_bpb=min(kept, default=None),
            )
        )
    return rows


class DemoResult(BaseModel):
    """What the demo did: where, the hub URL, the findings page and one row per volunteer."""

    model_config = ConfigDict(frozen=True)

    directory: Path
    hub_url: str
    track: str
    findings_url: str
    volunteers: list[VolunteerSummary]


def run_demo(
    *,
    directory: Path | None,
    experiments: int,
    track: str,
    proposer: str | None,
    sink: Callable[[str], None],
    port: int = 0,
    live: Console | None = None,
) -> tuple[HubServer, DemoResult]:
    """Start the hub and both volunteers, wait for them, and return the (still running) hub.

    The caller serves on or calls :meth:`HubServer.stop`. ``live``: a terminal to show the
    :class:`DemoTable` on while the volunteers run (``sink`` should print on the same console).

    Raises:
        UsageError: bad arguments or the hub extra missing.
        ClientError: a volunteer process failed (its output went to ``sink``).
    """
    from autoresearch.trainer.tracks import get_track

    if experiments < 1:
        raise UsageError("--experiments must be at least 1")
    spec = get_track(track)
    root = (directory or Path(tempfile.mkdtemp(prefix="autoresearch-demo-"))).resolve()
    root.mkdir(parents=True, exist_ok=True)
    proposer = proposer or ("anthropic" if os.environ.get("ANTHROPIC_API_KEY") else "offline")
    server = HubServer(f"sqlite:///{root / 'hub.db'}", port=port)
    url = server.start()
    sink(f"hub: {url} (database {root / 'hub.db'})")
    sink(f"volunteers: {', '.join(VOLUNTEERS)} on track {spec.id}, proposer {proposer}, {experiments} experiment(s) each")
    sink("calibration skipped in the demo (it takes minutes): records carry Δ val_bpb, no z or ECM")
    volunteers = [
        Volunteer(name, root / name, root / f"{name}-home", status_file=root / f"{name}.status.json" if live else None)
        for name in VOLUNTEERS
    ]
    for v in volunteers:
        if v.status_file is not None:
            v.status_file.unlink(missing_ok=True)  # a resumed demo starts its table afresh
    threads = max(1, (os.cpu_count() or 2) // len(volunteers))
    try:
        for v in volunteers:
            start_volunteer(v, url, track=spec.name, experiments=experiments, proposer=proposer, threads=threads, sink=sink)
        if live is not None:
            with DemoTable(live, volunteers):
                _wait_for(volunteers)
        else:
            _wait_for(volunteers)
    except KeyboardInterrupt:
        sink("stopping: each volunteer records its current experiment first (Ctrl-C again to abort)")
        _signal_all(volunteers, signal.SIGINT)
        try:
            _wait_for(volunteers)
        except KeyboardInterrupt:
            _signal_all(volunteers, signal.SIGINT)  # the loop's second Ctrl-C: abort, killing the run
            _wait_for(volunteers, timeout=30)
        server.stop()
        raise
    except BaseException:
        _signal_all(volunteers, signal.SIGTERM)
        _wait_for(volunteers, timeout=30)
        server.stop()
        raise
    failed = [v.name for v in volunteers if v.proc is None or v.proc.returncode != 0]
    if failed:
        server.stop()
        raise ClientError(f"volunteer(s) {', '.join(failed)} failed", hint=f"see their output above; files in {root}")
    with HubClient(url) as hub:
        rows = summarise(hub, spec.id, volunteers)
    result = DemoResult(
        directory=root, hub_url=url, track=spec.id, findings_url=f"{url}/tracks/{spec.id}", volunteers=rows
    )
    return server, result
