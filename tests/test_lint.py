"""The repository stays lint- and type-clean: ``ruff check .`` and the mypy run of the README."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# What mypy checks, strictly (see [tool.mypy] in pyproject.toml), by module name: the packages, and
# the torch-free trainer modules (the others need torch's stubs and are checked by their tests).
MYPY_PACKAGES = ["protocol", "hub", "client"]
MYPY_TRAINER_MODULES = ["tracks", "policy", "result", "run", "sandbox", "supervisor", "budget", "evaluate", "harness", "data"]
PACKAGE_DIRS = ["protocol", "trainer", "client", "hub"]  # pyproject's package-dir: autoresearch.<name> = <name>/


def mypy_tree(root: Path) -> Path:
    """A folder in which ``autoresearch/<name>`` links to the checkout's ``<name>/``: mypy cannot follow
    setuptools' ``package-dir`` mapping (nor the editable install's finder), so without it every
    cross-package import (``from autoresearch.protocol import …`` in hub/) would resolve to ``Any``
    and hide real errors. Run mypy with this folder as MYPYPATH and module names, not file paths."""
    package = root / "autoresearch"
    package.mkdir(parents=True, exist_ok=True)
    for name in PACKAGE_DIRS:
        link = package / name
        if not link.is_symlink():
            link.symlink_to(ROOT / name, target_is_directory=True)
    return root


def mypy_args() -> list[str]:
    """The mypy command line (after ``python -m mypy``) over :data:`MYPY_PACKAGES` and the trainer modules."""
    args = ["--config-file", str(ROOT / "pyproject.toml")]
    for name in MYPY_PACKAGES:
        args += ["-p", f"autoresearch.{name}"]
    for name in MYPY_TRAINER_MODULES:
        args += ["-m", f"autoresearch.trainer.{name}"]
    return args


def _run_tool(module: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed (pip install {module})")
    return subprocess.run(
        [sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True, text=True, timeout=300, env=env
    )


def test_ruff_check_passes() -> None:
    result = _run_tool("ruff", "check", ".")
    assert result.returncode == 0, f"ruff check . failed:\n{result.stdout}{result.stderr}"


@pytest.mark.slow  # about 30 s without a warm .mypy_cache
def test_mypy_passes(tmp_path: Path) -> None:
    env = {**os.environ, "MYPYPATH": str(mypy_tree(tmp_path / "mypy"))}
    result = _run_tool("mypy", *mypy_args(), "--cache-dir", str(ROOT / ".mypy_cache" / "tree"), env=env)
    assert result.returncode == 0, f"mypy {' '.join(mypy_args())} failed:\n{result.stdout}{result.stderr}"


@pytest.mark.slow  # mypy follows protocol/ (about 10 s)
def test_mypy_sees_across_packages(tmp_path: Path) -> None:
    """The attack on the type check itself: a hub module that passes an ``int`` where a protocol
    function takes a ``str``. If cross-package imports resolved to ``Any`` (the old file-path run),
    this would pass silently."""
    tree = mypy_tree(tmp_path / "mypy")
    probe = tmp_path / "probe.py"
    probe.write_text("from autoresearch.protocol import sha256_hex\n\nsha256_hex(1)\n", encoding="utf-8")
    env = {**os.environ, "MYPYPATH": str(tree)}
    result = _run_tool("mypy", "--config-file", str(ROOT / "pyproject.toml"), "--cache-dir", str(tmp_path / "cache"), str(probe), env=env)
    assert result.returncode == 1 and 'incompatible type "int"' in result.stdout, result.stdout
