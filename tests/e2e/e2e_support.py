"""End-to-end helpers: volunteers that are real ``autoresearch`` processes with their own homes,
keys and workspaces (training for real on ``tiny``), and in-process CLI runs. Fixtures are in
conftest.py; this module has its own name so tests can import it unambiguously."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from autoresearch.client.hubclient import HubClient
from autoresearch.client.workspace import Workspace
from autoresearch.protocol import ExperimentView, KeyPair, record_id

MAIN = "from autoresearch.client.cli import main; main()"
CLI_TIMEOUT = 600  # seconds; a loaded 2-core machine trains tiny in ~10 s per run


@dataclass
class Volunteer:
    """One volunteer: its home (key), its workspace folder, and how to run the CLI as it."""

    name: str
    home: Path
    workspace: Path

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AUTORESEARCH_")}
        env.update(AUTORESEARCH_HOME=str(self.home), NO_COLOR="1", COLUMNS="200", PYTHONUNBUFFERED="1")
        return env

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [sys.executable, "-c", MAIN, *args],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=CLI_TIMEOUT,
            stdin=subprocess.DEVNULL,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"autoresearch {' '.join(args)} exited {proc.returncode}:\n{proc.stderr[-4000:]}")
        return proc

    def join_args(self, url: str, experiments: int, *extra: str) -> list[str]:
        where = ["--dir", str(self.workspace)] if (self.workspace / ".autoresearch").exists() else [
            "--init", str(self.workspace), "--track", "tiny"
        ]
        return [
            "join", url, *where, "--name", self.name, "--yes", "--no-calibrate",
            "--proposer", "offline", "--max-experiments", str(experiments), "--adopt-every", "0", *extra,
        ]  # fmt: skip

    def join(self, url: str, experiments: int, *extra: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.cli(*self.join_args(url, experiments, *extra), check=check)

    @property
    def keys(self) -> KeyPair:
        return KeyPair.load(self.home / "keys" / "ed25519.pem")

    @property
    def ws(self) -> Workspace:
        return Workspace.open(self.workspace)

    def local_record_ids(self) -> list[str]:
        """Record ids of the experiments this volunteer trained (in order)."""
        return [record_id(e.record) for e in self.ws.experiments() if e.kind == "run" and e.record is not None]


def hub_experiments(url: str, track: str, key_id: str | None = None) -> list[ExperimentView]:
    with HubClient(url) as client:
        return list(client.iter_experiments(track=track, client=key_id))


def run_cli_inprocess(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, *args: str) -> tuple[int, str, str]:
    """``autoresearch ARGS…`` through ``cli.main`` in this process: (exit code, stdout, stderr)."""
    from autoresearch.client import cli

    capsys.readouterr()
    monkeypatch.setattr(sys, "argv", ["autoresearch", *args])
    code = 0
    try:
        cli.main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    captured = capsys.readouterr()
    return code, captured.out, captured.err
