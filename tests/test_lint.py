"""The repository stays lint- and type-clean: ``ruff check .`` and the mypy run of the README."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# The folders and modules type-checked (strictly, see [tool.mypy] in pyproject.toml).
MYPY_TARGETS = ["protocol", "hub", "client", "trainer/tracks.py", "trainer/policy.py", "trainer/result.py", "trainer/run.py",
                "trainer/sandbox.py", "trainer/supervisor.py", "trainer/budget.py", "trainer/evaluate.py", "trainer/harness.py"]


def _run_tool(module: str, *args: str) -> subprocess.CompletedProcess[str]:
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed (pip install {module})")
    return subprocess.run(
        [sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True, text=True, timeout=300
    )


def test_ruff_check_passes() -> None:
    result = _run_tool("ruff", "check", ".")
    assert result.returncode == 0, f"ruff check . failed:\n{result.stdout}{result.stderr}"


@pytest.mark.slow  # about 30 s without a warm .mypy_cache
def test_mypy_passes() -> None:
    result = _run_tool("mypy", *MYPY_TARGETS)
    assert result.returncode == 0, f"mypy {' '.join(MYPY_TARGETS)} failed:\n{result.stdout}{result.stderr}"
