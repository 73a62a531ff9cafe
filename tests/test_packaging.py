"""The wheel: what it contains, what its extras pull, and that it installs and runs in a fresh venv.

Builds from a copy of the files git would commit (so a stray build/ or *.egg-info here changes
nothing), with ``--no-build-isolation`` so no network is needed. The fresh venv gets the wheel with
``--no-deps``; its dependencies come from this environment's site-packages through a ``.pth`` line,
which does not activate this checkout's editable install, so ``autoresearch`` resolves to the wheel.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from email.parser import Parser
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_ROOTS = ("protocol", "trainer", "client", "hub")
GENERIC = {"protocol", "trainer", "client", "hub", "tests", "bench", "scripts", "deploy", "docs"}
DIST = "autoresearch-hub"

pytestmark = pytest.mark.slow


def _source_files() -> list[str]:
    """Files under the package roots that git would commit (tracked, or untracked and not ignored)."""
    if not (ROOT / ".git").exists() or shutil.which("git") is None:
        pytest.skip("needs a git checkout to know which files ship")
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "--", *PACKAGE_ROOTS],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout
    return sorted(f for f in out.splitlines() if (ROOT / f).is_file())


@pytest.fixture(scope="module")
def source_files() -> list[str]:
    return _source_files()


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory, source_files: list[str]) -> Path:
    """Build the wheel from a clean copy of the tree."""
    src = tmp_path_factory.mktemp("src")
    for name in ["pyproject.toml", "README.md", *source_files]:
        if (ROOT / name).exists():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, src / name)
    out = tmp_path_factory.mktemp("wheel")
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q", "-w", str(out), str(src)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (built,) = out.glob("autoresearch_hub-*.whl")
    return built


@pytest.fixture(scope="module")
def names(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as zf:
        return set(zf.namelist())


@pytest.fixture(scope="module")
def metadata(wheel: Path) -> list[Requirement]:
    with zipfile.ZipFile(wheel) as zf:
        (meta,) = [n for n in zf.namelist() if n.endswith(".dist-info/METADATA")]
        msg = Parser().parsestr(zf.read(meta).decode())
    return [Requirement(r) for r in msg.get_all("Requires-Dist") or []]


def test_wheel_holds_only_the_autoresearch_namespace(names: set[str]) -> None:
    tops = {n.split("/", 1)[0] for n in names}
    assert tops - {"autoresearch"} == {n.split("/", 1)[0] for n in names if ".dist-info/" in n}
    assert not tops & GENERIC
    assert "autoresearch/__init__.py" not in names, "autoresearch must stay a namespace package"


def test_every_package_and_data_file_is_in_the_wheel(names: set[str], source_files: list[str]) -> None:
    """Each committed file under protocol/ trainer/ client/ hub/ ships as autoresearch/<same path>:
    a sub-package missing from pyproject's ``packages`` or data missing from ``package-data`` fails here."""
    expected = {f"autoresearch/{f}" for f in source_files}
    missing = sorted(expected - names)
    assert not missing, f"not in the wheel (add to pyproject packages/package-data): {missing}"
    packages = {str(Path(f).parent) for f in source_files if f.endswith("__init__.py")}
    assert {"protocol", "client", "client/commands", "hub", "trainer"} <= packages


def test_console_script_entry_point(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        (ep,) = [n for n in zf.namelist() if n.endswith(".dist-info/entry_points.txt")]
        assert "autoresearch = autoresearch.client.cli:main" in zf.read(ep).decode()


def _closure(requirements: list[Requirement], extras: set[str]) -> set[str]:
    """Names of every distribution the requirements pull, transitively, as installed here."""
    seen: set[str] = set()
    todo = [(r, extras) for r in requirements]
    while todo:
        req, active = todo.pop()
        if req.marker is not None and not any(req.marker.evaluate({"extra": e}) for e in (active or {""})):
            continue
        name = canonicalize_name(req.name)
        if name == DIST:  # `all = ["autoresearch-hub[agent,hub]"]`
            todo += [(r, set(req.extras)) for r in requirements]
            continue
        if name in seen:
            continue
        seen.add(name)
        try:
            nested = [Requirement(r) for r in distribution(req.name).requires or []]
        except PackageNotFoundError:
            continue  # not installed here: its own requirements cannot be followed
        todo += [(r, set(req.extras)) for r in nested]
    return seen


def test_hub_extra_pulls_no_torch(metadata: list[Requirement]) -> None:
    pulled = _closure(metadata, {"hub"})
    assert {"fastapi", "sqlalchemy", "alembic"} <= pulled
    assert not {n for n in pulled if n.startswith(("torch", "nvidia-"))}, sorted(pulled)


def test_agent_extra_pulls_no_fastapi(metadata: list[Requirement]) -> None:
    pulled = _closure(metadata, {"agent"})
    assert {"torch", "anthropic"} <= pulled
    assert not pulled & {"fastapi", "starlette", "uvicorn"}, sorted(pulled)


def test_mcp_extra_pulls_the_sdk_and_the_agent_side(metadata: list[Requirement]) -> None:
    pulled = _closure(metadata, {"mcp"})
    assert {"mcp", "torch", "anthropic"} <= pulled
    assert "mcp" not in _closure(metadata, {"agent"}), "the SDK (starlette, uvicorn) stays out of the agent extra"


def test_base_install_pulls_neither(metadata: list[Requirement]) -> None:
    pulled = _closure(metadata, set())
    assert {"pydantic", "rfc8785", "cryptography", "typer"} <= pulled
    assert not pulled & {"torch", "fastapi", "sqlalchemy", "anthropic"}, sorted(pulled)


def test_installs_and_runs_in_a_fresh_venv(wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "--no-index", "-q", str(wheel)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    site = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    assert {p.name for p in site.iterdir()} == {"autoresearch", wheel.name.split("-py3")[0] + ".dist-info"}
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")  # dependencies only

    version = subprocess.run([str(venv / "bin" / "autoresearch"), "--version"], capture_output=True, text=True,
                             cwd=tmp_path, timeout=120)
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip() == f"autoresearch {wheel.name.split('-')[1]}"

    probe = (
        "import importlib, importlib.util, json\n"
        "mods = ['autoresearch.protocol', 'autoresearch.trainer', 'autoresearch.client.cli', 'autoresearch.hub']\n"
        "files = {m: importlib.import_module(m).__file__ for m in mods}\n"
        "generic = {n: importlib.util.find_spec(n) is not None for n in ['protocol', 'trainer', 'client', 'hub']}\n"
        "print(json.dumps({'files': files, 'generic': generic}))\n"
    )
    proc = subprocess.run([str(py), "-c", probe], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    found = json.loads(proc.stdout)
    assert all(Path(f).is_relative_to(site) for f in found["files"].values()), found["files"]
    assert not any(found["generic"].values()), found["generic"]
