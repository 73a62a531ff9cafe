"""Workspaces: `autoresearch init` (new and adopted), git without an identity, results.tsv, the lock."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from autoresearch.client.cli import app
from autoresearch.client.commands.workspace import program_template
from autoresearch.client.errors import WorkspaceError
from autoresearch.client.results import ResultRow, compact_table, read_results, write_results
from autoresearch.client.workspace import Workspace
from autoresearch.protocol import ExperimentRecord, RunMetrics, SoftwareVersions, utc_now
from autoresearch.trainer import tracks


def git(root: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, check=True).stdout.strip()


def test_init_creates_the_workspace(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["init", str(tmp_path / "ws"), "--track", "tiny"])
    assert result.exit_code == 0, result.output
    root = tmp_path / "ws"
    assert (root / "train.py").read_text() == tracks.reference_source("tiny")
    assert (root / "program.md").read_text() == program_template()
    assert (root / "results.tsv").read_text() == "commit\tval_bpb\tmemory_gb\tstatus\tdescription\n"
    assert git(root, "ls-files").split() == [".gitignore", "program.md", "train.py"]
    assert git(root, "status", "--porcelain") == ""  # state and results.tsv are ignored
    ws = Workspace.open(root / ".autoresearch")  # found from a subfolder
    assert ws.root == root.resolve() and ws.config.track == "tiny" and ws.config.base_branch == "main"


def test_init_refuses_an_existing_train_py(tmp_path: Path) -> None:
    (tmp_path / "train.py").write_text("x = 1\n")
    with pytest.raises(WorkspaceError, match="already holds a train.py") as info:
        Workspace.init(tmp_path, track="tiny", reference_source="y = 2\n", program_md="")
    assert info.value.hint is not None and "--adopt" in info.value.hint


def test_unknown_track_is_a_usage_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["init", str(tmp_path / "ws"), "--track", "nope"])
    assert result.exit_code == 1
    assert "nope" in str(result.exception) or "nope" in result.output


def test_git_works_without_a_configured_identity(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "GIT_COMMITTER_NAME", "GIT_COMMITTER_EMAIL", "EMAIL"):
        monkeypatch.delenv(name, raising=False)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(home / "gitconfig"))  # empty: no user.email
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    ws = Workspace.init(tmp_path / "ws", track="tiny", reference_source="A = 1\n", program_md="p\n")
    commit = ws.commit_train_py("A = 2\n", "A 1 → 2")
    assert git(ws.root, "log", "-1", "--format=%ae", commit) == "autoresearch@localhost"


def test_adopt_an_upstream_checkout_keeps_branch_history_and_results(tmp_path: Path) -> None:
    root = tmp_path / "upstream"
    root.mkdir()
    git(root, "init", "-q", "-b", "autoresearch/mar5")
    (root / "train.py").write_text("LR = 0.04\n")
    (root / "prepare.py").write_text("# upstream\n")
    git(root, "add", ".")
    git(root, "commit", "-q", "-m", "upstream baseline")
    (root / "results.tsv").write_text(
        "commit\tval_bpb\tmemory_gb\tstatus\tdescription\n"
        "a1b2c3d\t0.997900\t44.0\tkeep\tbaseline\n"
        "b2c3d4e\t0.000000\t0.0\tcrash\tdouble the width (OOM)\n"
    )
    ws = Workspace.init(root, track="climbmix", reference_source="unused\n", program_md="P\n", adopt=True)
    assert ws.config.adopted and ws.config.base_branch == "autoresearch/mar5"
    assert (root / "train.py").read_text() == "LR = 0.04\n"
    assert git(root, "log", "--format=%s") == "autoresearch: adopt this checkout (program.md, .gitignore)\nupstream baseline"
    assert git(root, "status", "--porcelain") == ""
    rows = read_results(root / "results.tsv")
    assert [r.commit for r in rows] == ["a1b2c3d", "b2c3d4e"]
    ws.write_results_tsv()  # our rows follow the adopted ones
    assert read_results(root / "results.tsv") == rows


def test_adopt_needs_a_checkout(tmp_path: Path) -> None:
    with pytest.raises(WorkspaceError, match="not an autoresearch checkout"):
        Workspace.init(tmp_path, track="tiny", reference_source="", program_md="", adopt=True)


def test_second_run_lock_is_refused(tmp_path: Path) -> None:
    ws = Workspace.init(tmp_path / "ws", track="tiny", reference_source="A = 1\n", program_md="")
    with ws.lock():
        with pytest.raises(WorkspaceError, match="another `autoresearch run`"):
            ws.lock()
    ws.lock().close()  # free again


def _record(status: str, val_bpb: float | None, description: str = "d") -> ExperimentRecord:
    h = "0" * 64
    return ExperimentRecord(
        track="tiny-000000000000", parent_sha256=h, child_sha256=h, parent_canonical_sha256=h, child_canonical_sha256=h,
        diff="", description=description, outcome="ok" if status != "crash" else "crash", status=status,  # type: ignore[arg-type]
        metrics=RunMetrics(val_bpb=val_bpb, peak_vram_mib=2048.0 if val_bpb else None),
        hardware_class="cpu:x:2", software=SoftwareVersions(python="3.11"), harness_version="1", created_at=utc_now(),
    )  # fmt: skip


def test_results_rows_follow_upstream_format(tmp_path: Path) -> None:
    rows = [
        ResultRow.from_record("abcdef0123456789", _record("keep", 0.9979)),
        ResultRow.from_record("1234567890abcdef", _record("crash", None, "tab\there\nnewline")),
    ]
    write_results(tmp_path / "results.tsv", rows)
    text = (tmp_path / "results.tsv").read_text()
    assert text.splitlines() == [
        "commit\tval_bpb\tmemory_gb\tstatus\tdescription",
        "abcdef0\t0.997900\t2.0\tkeep\td",
        "1234567\t0.000000\t0.0\tcrash\ttab here newline",
    ]
    assert read_results(tmp_path / "results.tsv") == rows


def test_compact_table_is_bounded() -> None:
    records = [(i, _record("discard" if i % 3 else "keep", 1.0 + i / 1000)) for i in range(1, 101)]
    table = compact_table(records, max_rows=10)
    lines = table.splitlines()
    assert len(lines) == 12  # header, summary of the 90 hidden, 10 rows
    assert "90 earlier experiments, 30 kept" in lines[1]
    assert lines[-1].startswith("100 ")
