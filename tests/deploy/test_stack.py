"""What deploy/compose.yaml runs, started directly (this machine has no Docker engine).

PostgreSQL (a fresh database on ``AUTORESEARCH_TEST_PG_URL``'s server), the migration as the one-off
job runs it (``autoresearch hub migrate``), two private hub replicas (``autoresearch hub serve`` on
loopback ports), and nginx in front with its configuration rendered by ``deploy/render_nginx.py``
from ``deploy/nginx/nginx.conf.template`` — the script and template compose's ``proxy-config`` job
uses. Volunteers are real ``autoresearch join`` processes training on ``tiny`` through the proxy.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from threading import Barrier

import httpx
import pytest
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families

from autoresearch.client.outbox import Outbox
from autoresearch.client.workspace import Workspace
from autoresearch.protocol import (
    ClaimAnswer,
    ClaimRecord,
    ClientRegistration,
    KeyPair,
    canonical_source_sha256,
    record_id,
    sign,
    utc_now,
)
from autoresearch.trainer import tracks

ROOT = Path(__file__).resolve().parents[2]
RENDER = ROOT / "deploy" / "render_nginx.py"
MAIN = "from autoresearch.client.cli import main; main()"
PG_URL = os.environ.get("AUTORESEARCH_TEST_PG_URL")
NGINX = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if os.access(p, os.X_OK)), None)
TINY = tracks.get_track("tiny")
ADMIN_TOKEN = "stack-test-admin-token"
START_TIMEOUT = 90  # seconds for a hub or nginx to answer /healthz on a loaded 2-core machine
JOIN_TIMEOUT = 600  # seconds for a volunteer's whole `join` run

pytestmark = [
    pytest.mark.slow,
    pytest.mark.postgres,
    pytest.mark.skipif(not PG_URL, reason="AUTORESEARCH_TEST_PG_URL is not set (scripts/test starts PostgreSQL)"),
    pytest.mark.skipif(NGINX is None, reason="nginx is not installed (scripts/test installs it from Debian as root)"),
    pytest.mark.skipif(
        not (shutil.which("pg_dump") and shutil.which("pg_restore")), reason="pg_dump/pg_restore are not installed"
    ),
]


# --------------------------------------------------------------------------------------------------
# processes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def base_env(home: Path, **extra: str) -> dict[str, str]:
    """This process's environment without any AUTORESEARCH_* variable, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTORESEARCH_")}
    env.update(AUTORESEARCH_HOME=str(home), NO_COLOR="1", PYTHONUNBUFFERED="1", **extra)
    return env


def cli(env: dict[str, str], *args: str, timeout: float = 120) -> str:
    """Run ``autoresearch ARGS`` to completion; its stdout. Fails the test on a non-zero exit."""
    proc = subprocess.run(
        [sys.executable, "-c", MAIN, *args], env=env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )
    assert proc.returncode == 0, f"autoresearch {' '.join(args[:4])} exited {proc.returncode}:\n{proc.stderr[-3000:]}"
    return proc.stdout


def wait_healthy(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"{url} did not become healthy (exit {proc.poll()}):\n{log.read_text()[-3000:]}")
        time.sleep(0.2)


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)


@dataclass
class Replica:
    """One ``autoresearch hub serve`` process."""

    port: int
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def api_requests(self, method: str | None = None, route: str = "/api/v1/") -> int:
        """Requests this replica served whose route starts with ``route`` (from its /metrics)."""
        text = httpx.get(f"{self.url}/metrics", timeout=10).text
        total = 0.0
        for family in text_string_to_metric_families(text):
            if family.name != "autoresearch_hub_requests":
                continue
            for sample in family.samples:
                labels = sample.labels
                wanted = labels["route"].startswith(route) and (method is None or labels["method"] == method)
                if sample.name.endswith("_total") and wanted:
                    total += sample.value
        return int(total)


@dataclass
class Stack:
    """PostgreSQL database, hub replicas and nginx, as compose runs them."""

    db_url: str
    home: Path
    tmp: Path
    replicas: list[Replica] = field(default_factory=list)
    proxy_port: int = 0
    read_token: str = ""
    enroll_token: str = ""

    @property
    def proxy(self) -> str:
        return f"http://127.0.0.1:{self.proxy_port}"

    def hub_env(self, db_url: str | None = None) -> dict[str, str]:
        return base_env(self.home, AUTORESEARCH_HUB_DB_URL=db_url or self.db_url, AUTORESEARCH_HUB_ADMIN_TOKEN=ADMIN_TOKEN)

    def start_replica(self, db_url: str | None = None) -> Replica:
        port = free_port()
        log = self.tmp / f"hub-{port}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-c", MAIN, "hub", "serve", "--host", "127.0.0.1", "--port", str(port), "--private"],
                env=self.hub_env(db_url), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )  # fmt: skip
        replica = Replica(port, proc, log)
        self.replicas.append(replica)
        wait_healthy(replica.url, proc, log)
        return replica

    def read(self, path: str, base: str | None = None) -> httpx.Response:
        response = httpx.get(f"{base or self.proxy}{path}", headers={"Authorization": f"Bearer {self.read_token}"}, timeout=30)
        assert response.status_code == 200, response.text
        return response

    def experiment_ids(self, base: str | None = None, key_id: str | None = None) -> list[str]:
        """Every experiment id of ``tiny`` the hub holds (all pages)."""
        ids: list[str] = []
        cursor: str | None = None
        while True:
            query = f"/api/v1/experiments?track={TINY.id}" + (f"&client={key_id}" if key_id else "") + (f"&cursor={cursor}" if cursor else "")
            page = self.read(query, base).json()
            ids += [item["id"] for item in page["items"]]
            cursor = page["next_cursor"]
            if not cursor:
                return ids


def _server_url(db: str) -> sa.URL:
    return sa.make_url(PG_URL or "").set(drivername="postgresql+psycopg", database=db)


def _admin_engine() -> sa.Engine:
    return sa.create_engine(sa.make_url(PG_URL or "").set(drivername="postgresql+psycopg"), isolation_level="AUTOCOMMIT")


@pytest.fixture(scope="module")
def databases() -> Iterator[list[str]]:
    """Two fresh databases on the test server (the hub's, and the target of the restore), dropped
    at the end whatever happened. Yields their names."""
    names = [f"ar_stack_{uuid.uuid4().hex[:10]}", f"ar_restore_{uuid.uuid4().hex[:10]}"]
    engine = _admin_engine()
    try:
        with engine.connect() as conn:
            for name in names:
                conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        yield names
    finally:
        with engine.connect() as conn:
            for name in names:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        engine.dispose()


@pytest.fixture(scope="module")
def stack(databases: list[str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The migrated database, two private replicas, nginx in front; tokens made by `hub admin`.

    One stack for the module (each process start costs seconds on a loaded machine): the tests
    compare counters before and after, and the test that kills a replica runs last."""
    tmp_path = tmp_path_factory.mktemp("stack")
    home = tmp_path / "hub-home"
    home.mkdir()
    db_url = _server_url(databases[0]).render_as_string(hide_password=False)
    s = Stack(db_url=db_url, home=home, tmp=tmp_path)
    # nginx's workers drop to `nobody` when the test runs as root: give them a prefix they can enter
    prefix = Path(tempfile.mkdtemp(prefix="ar-nginx-"))
    prefix.chmod(0o755)
    nginx: subprocess.Popen[bytes] | None = None
    try:
        cli(s.hub_env(), "hub", "migrate")  # the one-off job
        s.enroll_token = cli(s.hub_env(), "hub", "admin", "tokens", "create", "--kind", "enroll", "--label", "volunteers").strip()
        s.read_token = cli(s.hub_env(), "hub", "admin", "tokens", "create", "--kind", "read", "--label", "test").strip()
        for _ in range(2):
            s.start_replica()
        s.proxy_port = free_port()
        subprocess.run(
            [sys.executable, str(RENDER), *(f"--upstream=127.0.0.1:{r.port}" for r in s.replicas),
             f"--listen=127.0.0.1:{s.proxy_port}", f"--prefix={prefix}", f"--access-log={prefix / 'access.log'}",
             f"--error-log={prefix / 'error.log'}", "--worker-processes=1", f"--out={prefix / 'nginx.conf'}"],
            check=True,
        )  # fmt: skip
        nginx = subprocess.Popen(
            [NGINX or "nginx", "-p", str(prefix), "-c", str(prefix / "nginx.conf"), "-e", str(prefix / "error.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        wait_healthy(s.proxy, nginx, prefix / "error.log")
        yield s
    finally:
        if nginx is not None:
            stop(nginx, signal.SIGQUIT)  # graceful: finish the requests in flight
        for r in s.replicas:
            stop(r.proc)
        shutil.rmtree(prefix, ignore_errors=True)


def registration(keys: KeyPair, name: str) -> bytes:
    record = ClientRegistration(public_key=keys.public_key_hex, display_name=name, hardware_class="cpu:test:2", created_at=utc_now())
    return sign(record, keys).to_json().encode("utf-8")


# --------------------------------------------------------------------------------------------------
# tests


def test_the_proxy_balances_and_keeps_the_private_hub_private(stack: Stack) -> None:
    # reads without a token are refused through the proxy, with the hub's JSON error shape
    refused = httpx.get(f"{stack.proxy}/api/v1/tracks", timeout=10)
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "token_required"
    # the proxy hides /metrics (per-replica counters are scraped from each replica)
    assert httpx.get(f"{stack.proxy}/metrics", timeout=10).status_code == 404
    before = [r.api_requests("GET", "/api/v1/tracks") for r in stack.replicas]
    for _ in range(6):
        assert TINY.id in {t["spec"]["id"] for t in stack.read("/api/v1/tracks").json()}
    served = [r.api_requests("GET", "/api/v1/tracks") - b for r, b in zip(stack.replicas, before, strict=True)]
    assert sum(served) == 6 and min(served) >= 1, served


def test_racing_claims_through_the_proxy_grant_exactly_one(stack: Stack) -> None:
    claimants = 16
    keys = [KeyPair.generate() for _ in range(claimants)]
    enroll = {"Authorization": f"Bearer {stack.enroll_token}"}
    with httpx.Client(timeout=60, headers=enroll) as http:
        for i, k in enumerate(keys):
            r = http.post(f"{stack.proxy}/api/v1/clients", content=registration(k, f"claimant-{i}"))
            assert r.status_code == 201, r.text
    parent = tracks.reference_source(TINY)
    child = parent + "\nEXTRA_WARMUP_STEPS = 3\n"
    bodies = [
        sign(ClaimRecord(
            track=TINY.id, parent_canonical_sha256=canonical_source_sha256(parent),
            child_canonical_sha256=canonical_source_sha256(child), lease_seconds=600, created_at=utc_now(),
        ), k).to_json().encode("utf-8")
        for k in keys
    ]  # fmt: skip
    before = [r.api_requests("POST", "/api/v1/claims") for r in stack.replicas]
    barrier = Barrier(claimants)

    def fire(body: bytes) -> ClaimAnswer:
        with httpx.Client(timeout=60, headers=enroll) as http:
            barrier.wait()
            r = http.post(f"{stack.proxy}/api/v1/claims", content=body)
        assert r.status_code == 200, r.text
        return ClaimAnswer.model_validate_json(r.content)

    with ThreadPoolExecutor(claimants) as pool:
        answers = list(pool.map(fire, bodies))
    granted = [a for a in answers if a.status == "granted"]
    assert len(granted) == 1, [a.status for a in answers]
    winner = granted[0].holder_key_id
    assert {a.status for a in answers if a is not granted[0]} == {"held"}
    assert {a.holder_key_id for a in answers} == {winner}
    served = [r.api_requests("POST", "/api/v1/claims") - b for r, b in zip(stack.replicas, before, strict=True)]
    assert sum(served) == claimants and min(served) >= 1, f"both replicas must answer claims: {served}"


@dataclass
class Volunteer:
    name: str
    home: Path
    workspace: Path
    proc: subprocess.Popen[str] | None = None

    def start(self, stack: Stack, experiments: int) -> None:
        self.home.mkdir()
        args = ["join", stack.proxy, "--init", str(self.workspace), "--track", "tiny", "--max-experiments", str(experiments),
                "--yes", "--token", stack.enroll_token, "--name", self.name, "--no-calibrate", "--proposer", "offline",
                "--adopt-every", "0"]  # fmt: skip
        self.proc = subprocess.Popen(
            [sys.executable, "-c", MAIN, *args], env=base_env(self.home, COLUMNS="200"),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
        )  # fmt: skip

    def finish(self) -> None:
        assert self.proc is not None
        try:
            _, stderr = self.proc.communicate(timeout=JOIN_TIMEOUT)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
        assert self.proc.returncode == 0, f"{self.name}: join exited {self.proc.returncode}:\n{stderr[-4000:]}"

    def local_record_ids(self) -> list[str]:
        ws = Workspace.open(self.workspace)
        return [record_id(e.record) for e in ws.experiments() if e.kind == "run" and e.record is not None]

    @property
    def key_id(self) -> str:
        return KeyPair.load(self.home / "keys" / "ed25519.pem").key_id


def test_volunteers_through_the_proxy_survive_a_replica_kill_and_a_backup_restores(
    stack: Stack, databases: list[str], tmp_path: Path
) -> None:
    volunteers = [Volunteer(n, tmp_path / f"{n}-home", tmp_path / n) for n in ("alice", "bob")]
    posts_before = [r.api_requests("POST") for r in stack.replicas]
    try:
        for v in volunteers:
            v.start(stack, experiments=3)
        # both replicas serve the volunteers' submissions (POSTs: the test itself only reads); then
        # one replica dies while the volunteers still train
        deadline = time.monotonic() + JOIN_TIMEOUT
        while not (stack.experiment_ids() and all(r.api_requests("POST") > b for r, b in zip(stack.replicas, posts_before, strict=True))):
            assert all(v.proc is not None and v.proc.poll() is None for v in volunteers), "a volunteer exited early"
            assert time.monotonic() < deadline, "no experiment reached the hub"
            time.sleep(0.3)
        victim, survivor = stack.replicas
        served_by_victim = victim.api_requests("POST") - posts_before[0]
        stop(victim.proc, signal.SIGKILL)
        at_kill = len(stack.experiment_ids())
        still_running = sum(v.proc is not None and v.proc.poll() is None for v in volunteers)
        survivor_posts = survivor.api_requests("POST", "/api/v1/experiments")
        for v in volunteers:
            v.finish()
    finally:
        for v in volunteers:
            if v.proc is not None and v.proc.poll() is None:
                v.proc.kill()
    assert served_by_victim > 0 and still_running >= 1

    # nothing lost, nothing twice: the hub holds exactly each volunteer's local records
    every = stack.experiment_ids()
    assert len(every) == len(set(every)) == 6 and len(every) > at_kill
    for v in volunteers:
        assert sorted(stack.experiment_ids(key_id=v.key_id)) == sorted(v.local_record_ids())
        counts = Outbox.for_workspace(v.workspace).counts()
        assert counts["pending"] == 0 and counts["rejected"] == 0, counts
    assert survivor.api_requests("POST", "/api/v1/experiments") > survivor_posts  # records kept arriving

    # pg_dump / pg_restore into a fresh database: a hub on the copy serves the same leaderboard, the
    # same first page of experiments (records, figures, verdicts) and the same experiment ids. The
    # leaderboard may be empty: uncalibrated tiny runs are kept only past the loop's drift guard.
    board = stack.read(f"/api/v1/tracks/{TINY.id}/leaderboard").json()
    listing = stack.read(f"/api/v1/experiments?track={TINY.id}").json()
    assert len(listing["items"]) == 6
    source, target = (_server_url(d) for d in databases)
    pg_env = {**os.environ, "PGPASSWORD": source.password or ""}
    dump = tmp_path / "hub.dump"

    def libpq(url: sa.URL) -> str:
        return url.set(drivername="postgresql", password=None).render_as_string(hide_password=False)

    subprocess.run(["pg_dump", "--format=custom", f"--file={dump}", f"--dbname={libpq(source)}"], env=pg_env, check=True, timeout=120)
    subprocess.run(["pg_restore", "--no-owner", "--exit-on-error", f"--dbname={libpq(target)}", str(dump)], env=pg_env, check=True, timeout=120)
    restored = stack.start_replica(target.render_as_string(hide_password=False))
    assert stack.read(f"/api/v1/tracks/{TINY.id}/leaderboard", restored.url).json() == board
    assert stack.read(f"/api/v1/experiments?track={TINY.id}", restored.url).json() == listing
    assert sorted(stack.experiment_ids(restored.url)) == sorted(every)
