"""Shared fixtures: every test gets a clean ``AUTORESEARCH_*`` environment and its own home dir;
``hub`` is a real hub (uvicorn on loopback, SQLite) for the client, MCP and end-to-end tests
(tests/hub and a few files define their own ``hub``)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from autoresearch.client.demo import HubServer


@pytest.fixture(autouse=True)
def clean_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Drop every ``AUTORESEARCH_*`` variable (but the PostgreSQL test URL) and point
    ``AUTORESEARCH_HOME`` at a fresh folder; yields that folder."""
    for name in list(os.environ):
        if name.startswith("AUTORESEARCH_") and name != "AUTORESEARCH_TEST_PG_URL":
            monkeypatch.delenv(name)
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    home = tmp_path / "ar-home"
    home.mkdir()
    monkeypatch.setenv("AUTORESEARCH_HOME", str(home))
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("GIT_AUTHOR_NAME", "test")
    monkeypatch.setenv("GIT_AUTHOR_EMAIL", "test@example.invalid")
    monkeypatch.setenv("GIT_COMMITTER_NAME", "test")
    monkeypatch.setenv("GIT_COMMITTER_EMAIL", "test@example.invalid")
    yield home


@pytest.fixture()
def hub(tmp_path: Path) -> Iterator[HubServer]:
    from autoresearch.client.demo import HubServer

    server = HubServer(f"sqlite:///{tmp_path / 'hub.db'}")
    server.start()
    yield server
    server.stop()
