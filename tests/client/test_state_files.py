"""Broken local files (a corrupt outbox, truncated state files, an unwritable workspace) end in one
line naming the file and the fix, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_run import run_cli

from autoresearch.client.errors import StateFileError
from autoresearch.client.federation import FederationConfig, save_federation
from autoresearch.client.outbox import Outbox
from autoresearch.client.workspace import Workspace
from autoresearch.protocol import utc_now
from autoresearch.trainer import tracks

TINY = tracks.get_track("tiny")


@pytest.fixture()
def ws(tmp_path: Path) -> Workspace:
    return Workspace.init(tmp_path / "ws", track="tiny", reference_source=tracks.reference_source(TINY), program_md="# r\n")


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    return lambda *args: run_cli(capsys, monkeypatch, *args)


def _lines(err: str) -> list[str]:
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("error: ") and lines[1].startswith("hint: "), err
    return lines


def test_corrupt_outbox_names_the_file_and_how_to_move_it_aside(cli, ws: Workspace) -> None:  # type: ignore[no-untyped-def]
    path = ws.state_dir / "outbox.sqlite"
    path.write_bytes(b"this is not a database, it was overwritten" * 100)
    result = cli("outbox", "--dir", str(ws.root))
    assert result.code == 1
    error, hint = _lines(result.err)
    assert str(path) in error and "not a readable outbox" in error
    assert f"mv {path} {path}.corrupt" in hint


def test_truncated_outbox_is_the_same_one_line(ws: Workspace) -> None:
    outbox = Outbox.for_workspace(ws.root)
    assert outbox.counts()["pending"] == 0
    path = ws.state_dir / "outbox.sqlite"
    for extra in ("-wal", "-shm"):
        Path(f"{path}{extra}").unlink(missing_ok=True)
    path.write_bytes(path.read_bytes()[:100])  # cut inside the header page
    with pytest.raises(StateFileError, match="not a readable outbox"):
        Outbox.for_workspace(ws.root).counts()


def test_truncated_federation_file_is_one_line_with_the_fix(cli, ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    save_federation(ws.root, FederationConfig(hub_url="http://127.0.0.1:9", track=TINY.id, key_id="a" * 64, display_name="x", joined_at=utc_now()))
    path = ws.state_dir / "federation.json"
    path.write_text(path.read_text()[:30])
    monkeypatch.chdir(ws.root)
    result = cli("findings")
    assert result.code == 1
    error, hint = _lines(result.err)
    assert error.startswith(f"error: {path}: is not a valid state file") and "join HUB_URL" in hint


def test_truncated_pending_and_experiment_files_name_the_file(ws: Workspace) -> None:
    ws.pending_path.write_text('{"number": 3, "tag": "x", "comm')
    with pytest.raises(StateFileError) as info:
        ws.pending()
    assert info.value.path == ws.pending_path and "rm " in (info.value.hint or "")
    ws.clear_pending()
    (ws.experiments_dir / "0001.json").write_text("{")
    with pytest.raises(StateFileError) as info:
        ws.experiments()
    assert info.value.path.name == "0001.json" and "mv " in (info.value.hint or "")


def test_truncated_workspace_config_is_one_line(cli, ws: Workspace) -> None:  # type: ignore[no-untyped-def]
    config = ws.state_dir / "config.json"
    config.write_text(config.read_text()[:20])
    result = cli("outbox", "--dir", str(ws.root))
    assert result.code == 1
    error, hint = _lines(result.err)
    assert str(config) in error and "--adopt" in hint


def test_an_unexpected_file_error_is_still_one_line_naming_the_file(cli, ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    """A file error no module anticipated (here: the workspace's outbox path is a folder)."""
    (ws.state_dir / "outbox.sqlite").mkdir()
    result = cli("outbox", "--dir", str(ws.root))
    assert result.code == 1
    error, _ = _lines(result.err)
    assert "outbox.sqlite" in error
