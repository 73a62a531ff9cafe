"""End-to-end fixtures: a real hub (uvicorn on loopback, SQLite) and two volunteers."""

from __future__ import annotations

from pathlib import Path

import pytest
from e2e_support import Volunteer


@pytest.fixture()
def volunteers(tmp_path: Path) -> dict[str, Volunteer]:
    out = {}
    for name in ("alice", "bob"):
        (tmp_path / f"{name}-home").mkdir()
        out[name] = Volunteer(name, tmp_path / f"{name}-home", tmp_path / name)
    return out
