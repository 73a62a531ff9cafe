"""``autoresearch mcp`` end to end: a real hub on loopback, a workspace joined on ``tiny`` by the real
CLI, and the MCP SDK's own stdio client launching ``autoresearch mcp --dir WS`` as a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest

pytest.importorskip("mcp")

from mcp import ClientSession  # noqa: E402
from mcp.client.stdio import StdioServerParameters, stdio_client  # noqa: E402

from autoresearch.client.demo import HubServer  # noqa: E402
from autoresearch.client.hubclient import HubClient  # noqa: E402
from autoresearch.client.mcp_server import TOOL_NAMES  # noqa: E402
from autoresearch.client.workspace import Workspace  # noqa: E402
from autoresearch.protocol import KeyPair  # noqa: E402

pytestmark = pytest.mark.slow
MAIN = "from autoresearch.client.cli import main; main()"
TIMEOUT = 600  # seconds; tiny trains in seconds, a loaded 2-core machine is slower


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTORESEARCH_")}
    env.update(AUTORESEARCH_HOME=str(home), NO_COLOR="1", PYTHONUNBUFFERED="1")
    return env


@pytest.fixture()
def joined(hub: HubServer, tmp_path: Path) -> tuple[Path, Path]:
    """(home, workspace) of a volunteer that joined the hub and published its tiny baseline."""
    home, ws = tmp_path / "home", tmp_path / "ws"
    home.mkdir()
    args = ["join", hub.url, "--init", str(ws), "--track", "tiny", "--name", "mcp-test", "--yes", "--no-calibrate",
            "--proposer", "offline", "--max-experiments", "1", "--adopt-every", "0"]  # fmt: skip
    proc = subprocess.run(
        [sys.executable, "-c", MAIN, *args], env=_env(home), capture_output=True, text=True, timeout=TIMEOUT, stdin=subprocess.DEVNULL
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return home, ws


def _json(result: Any) -> Any:
    assert not (getattr(result, "is_error", None) or getattr(result, "isError", None)), result.content
    return json.loads(result.content[0].text)


async def _session_calls(home: Path, ws: Path, calls: list[tuple[str, dict[str, Any]]]) -> tuple[list[str], list[Any]]:
    params = StdioServerParameters(command=sys.executable, args=["-c", MAIN, "mcp", "--dir", str(ws)], env=_env(home))
    out = []
    with anyio.fail_after(TIMEOUT):
        async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
            await session.initialize()
            names = sorted(t.name for t in (await session.list_tools()).tools)
            for name, arguments in calls:
                out.append(await session.call_tool(name, arguments))
    return names, out


def _key_id(home: Path) -> str:
    key_id: str = KeyPair.load(home / "keys" / "ed25519.pem").key_id
    return key_id


def test_mcp_tools_read_the_hub_and_run_and_publish_goes_through_the_loop(hub: HubServer, joined: tuple[Path, Path]) -> None:
    home, ws_dir = joined
    with HubClient(hub.url) as client:
        before = list(client.iter_experiments(track="tiny", client=_key_id(home)))
    assert len(before) == 1, "the join published its baseline"
    baseline = before[0]
    ws = Workspace.open(ws_dir)
    source = ws.source_at("HEAD")
    assert "MATRIX_LR = 0.2" in source
    child = source.replace("MATRIX_LR = 0.2", "MATRIX_LR = 0.25", 1)
    evil = source + "\nimport socket\nsocket.create_connection(('example.com', 80))\n"

    names, results = anyio.run(
        _session_calls,
        home,
        ws_dir,
        [
            ("suggestions", {}),
            ("findings", {"limit": 5}),
            ("experiment_diff", {"experiment_id": baseline.id[:12]}),
            ("claim", {"train_py_source": child, "description": "MATRIX_LR 0.2 -> 0.25"}),
            ("run_and_publish", {"train_py_source": child, "description": "MATRIX_LR 0.2 -> 0.25"}),
            ("run_and_publish", {"train_py_source": evil, "description": "phone home"}),
            ("experiment_diff", {"experiment_id": "00000000"}),
        ],
    )
    assert names == sorted(TOOL_NAMES)
    suggestions, findings, diff, claim, run, rejected, missing = results

    sug = _json(suggestions)
    assert sug["hub"] == hub.url and isinstance(sug.get("items"), list)

    found = _json(findings)
    assert found["track"].startswith("tiny")
    assert [k["id"] for k in found["recent_keeps"]] == [baseline.id]
    assert isinstance(found["leaderboard"], dict) and isinstance(found["directions"], list)  # uncalibrated: no board rows

    d = _json(diff)
    assert d["id"] == baseline.id and d["status"] == "keep" and d["key_id"] == _key_id(home)
    assert d["diff"] == (baseline.record.diff or "")

    assert _json(claim)["status"] == "granted"

    ran = _json(run)
    assert ran["runs"] == 1, ran
    (exp,) = ran["experiments"]
    assert exp["kind"] == "run" and exp["proposer"] == "mcp" and exp["outcome"] == "ok", exp
    assert exp["status"] in ("keep", "discard") and exp["provisional"] == (exp["status"] == "keep")  # no calibration
    with HubClient(hub.url) as client:
        after = {v.id: v for v in client.iter_experiments(track="tiny", client=_key_id(home))}
    assert exp["record_id"] in after, "published: signed, through the outbox, on the hub"
    published = after[exp["record_id"]]
    assert published.record.description == "MATRIX_LR 0.2 -> 0.25"
    assert "MATRIX_LR = 0.25" in (published.record.diff or "")

    bad = _json(rejected)
    assert bad["runs"] == 0
    (rej,) = bad["experiments"]
    assert rej["kind"] == "rejected" and rej["rejected_reasons"], rej
    with HubClient(hub.url) as client:
        assert len(list(client.iter_experiments(track="tiny", client=_key_id(home)))) == 2, "a refused source never reaches the hub"

    assert getattr(missing, "is_error", None) or getattr(missing, "isError", None)
    assert "unknown_experiment" in missing.content[0].text, missing.content


def test_mcp_without_a_joined_workspace_or_hub_says_how_to_start(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", MAIN, "mcp", "--dir", str(tmp_path)],
        env=_env(tmp_path / "home"), capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    assert "no hub" in proc.stderr and "autoresearch join" in proc.stderr
    assert proc.stdout == ""
