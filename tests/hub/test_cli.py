"""``autoresearch hub serve|migrate|admin`` through the real CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from autoresearch.client.cli import app
from autoresearch.protocol import KeyPair

from . import factory
from .conftest import make_hub
from .test_race import free_port

runner = CliRunner()


def cli(*args: str) -> str:
    result = runner.invoke(app, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout


def test_migrate_tokens_and_clients(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'hub.db'}"
    cli("hub", "migrate", "--db", db)
    token = cli("hub", "admin", "tokens", "create", "--kind", "read", "--label", "lab", "--db", db).strip()
    assert token.startswith("ar_read_")
    [listed] = json.loads(cli("hub", "admin", "tokens", "list", "--json", "--db", db))
    assert (listed["id"], listed["kind"], listed["label"], listed["revoked"]) == (1, "read", "lab", False)
    cli("hub", "admin", "tokens", "revoke", "1", "--db", db)
    assert json.loads(cli("hub", "admin", "tokens", "list", "--json", "--db", db))[0]["revoked"] is True

    serving = make_hub(db, require_approval=True)
    hub = next(serving)
    assert hub.register("alice").status_code == 201
    serving.close()
    key_id = hub.key("alice").key_id
    [client] = json.loads(cli("hub", "admin", "clients", "--json", "--db", db))
    assert (client["key_id"], client["status"]) == (key_id, "pending")
    cli("hub", "admin", "approve", key_id, "--db", db)
    assert json.loads(cli("hub", "admin", "clients", "--json", "--db", db))[0]["status"] == "active"
    cli("hub", "admin", "revoke", key_id, "--db", db)
    assert json.loads(cli("hub", "admin", "clients", "--json", "--db", db))[0]["status"] == "revoked"


def test_admin_errors_are_one_line_with_exit_code_1(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'hub.db'}"
    cli("hub", "migrate", "--db", db)
    done = subprocess.run(
        [str(Path(sys.executable).parent / "autoresearch"), "hub", "admin", "revoke", "0" * 64, "--db", db],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 1
    assert f"error: no client with key id {'0' * 64}" in done.stderr


def test_admin_never_migrates_and_says_how(tmp_path: Path) -> None:
    """Catches: ``hub admin …`` migrating a database as a side effect (issue 16, item 5)."""
    from autoresearch.hub.migrate import current_revision, head_revision, upgrade

    path = tmp_path / "hub.db"
    db = f"sqlite:///{path}"
    exe = str(Path(sys.executable).parent / "autoresearch")
    fresh = subprocess.run([exe, "hub", "admin", "tokens", "list", "--db", db], capture_output=True, text=True, timeout=120)
    assert fresh.returncode == 1
    assert "has no hub schema" in fresh.stderr and "hint: run autoresearch hub migrate" in fresh.stderr
    assert not path.exists()  # not even an empty file
    upgrade(db, "0004")
    behind = subprocess.run([exe, "hub", "admin", "clients", "--db", db], capture_output=True, text=True, timeout=120)
    assert behind.returncode == 1
    assert f"is at revision 0004; this hub needs revision {head_revision()}" in behind.stderr
    assert current_revision(db) == "0004"  # left as it was
    cli("hub", "migrate", "--db", db)
    assert current_revision(db) == head_revision()
    assert json.loads(cli("hub", "admin", "clients", "--json", "--db", db)) == []


@pytest.mark.slow
def test_serve_migrates_and_serves_the_builtin_tracks(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "AUTORESEARCH_HUB_DB_URL": f"sqlite:///{tmp_path / 'hub.db'}"}
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "autoresearch"), "hub", "serve", "--port", str(port)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            assert time.monotonic() < deadline, "hub serve did not start"
            time.sleep(0.3)
        names = {t["spec"]["name"] for t in httpx.get(f"{url}/api/v1/tracks").json()}
        assert {"cpu", "tiny", "climbmix"} <= names
        keys = KeyPair.generate()
        r = httpx.post(f"{url}/api/v1/clients", content=factory.envelope_bytes(factory.registration(keys, "alice"), keys))
        assert r.status_code == 201
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    lines = [json.loads(line) for line in err.decode().splitlines() if line.startswith("{")]
    assert any(line.get("msg") == "request" and line.get("path") == "/api/v1/clients" and line.get("status") == 201 for line in lines)


def test_hub_group_is_the_hub_packages_and_without_the_extra_says_how_to_install_it() -> None:
    """``autoresearch hub`` is mounted from ``autoresearch.hub.cli``; on a client-only install (FastAPI
    unimportable) the same command answers with the install hint instead of a traceback."""
    from autoresearch.hub import cli as hub_cli

    group = next(g for g in app.registered_groups if g.name == "hub")
    assert group.typer_instance is hub_cli.hub_app
    client_only = "import sys; sys.modules['fastapi'] = None; from autoresearch.client.cli import main; main()"
    run = subprocess.run([sys.executable, "-c", client_only, "hub", "serve", "--db", "sqlite://"],
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert run.returncode == 1, run.stderr
    assert "the hub is not installed (fastapi missing)" in run.stderr and "pip install 'autoresearch-hub[hub]'" in run.stderr
    assert "Traceback" not in run.stderr
