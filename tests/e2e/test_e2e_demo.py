"""``autoresearch demo`` end to end (on ``tiny`` to keep it short): a real hub, two real volunteer
processes, and a findings page that shows both."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from e2e_support import MAIN

from autoresearch.client.demo import HubServer, volunteer_command
from autoresearch.client.demo import Volunteer as DemoVolunteer

pytestmark = pytest.mark.slow


def test_demo_runs_two_volunteers_and_its_findings_page_shows_both(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", MAIN, "demo", "--track", "tiny", "--experiments", "1", "--no-serve", "--json",
         "--dir", str(tmp_path / "demo")],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    summary = json.loads(proc.stdout)
    rows = {row["name"]: row for row in summary["volunteers"]}
    assert set(rows) == {"alice", "bob"}
    assert all(row["experiments"] == 1 for row in rows.values())
    assert rows["alice"]["key_id"] != rows["bob"]["key_id"]
    assert "[alice]" in proc.stderr and "[bob]" in proc.stderr  # their output, prefixed

    # the findings page the demo printed, served again from the demo's database
    track = summary["track"]
    with HubServer(f"sqlite:///{tmp_path / 'demo' / 'hub.db'}") as server:
        page = httpx.get(f"{server.url}/tracks/{track}", timeout=30)
    assert page.status_code == 200
    assert "alice" in page.text and "bob" in page.text


def test_volunteer_command_resumes_an_existing_workspace(tmp_path: Path) -> None:
    v = DemoVolunteer("alice", tmp_path / "alice", tmp_path / "alice-home")
    fresh = volunteer_command(v, "http://127.0.0.1:1", track="cpu", experiments=3, proposer="offline")
    assert fresh[fresh.index("--init") + 1] == str(v.workspace) and "--track" in fresh
    (v.workspace / ".autoresearch").mkdir(parents=True)
    (v.workspace / ".autoresearch" / "config.json").write_text("{}")
    again = volunteer_command(v, "http://127.0.0.1:1", track="cpu", experiments=3, proposer="offline")
    assert "--init" not in again and again[again.index("--dir") + 1] == str(v.workspace)
    assert {"--yes", "--no-calibrate"} <= set(again)
