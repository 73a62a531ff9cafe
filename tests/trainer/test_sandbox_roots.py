"""The sandbox mounts the running Python environment wherever it lives, even under ``/tmp``
(which the worker gets as its own empty tmpfs): a clone with its venv in ``/tmp`` must still train
sandboxed, not fall back to an unsandboxed worker with a misleading reason."""

from __future__ import annotations

import subprocess
import sysconfig
import venv
from pathlib import Path

import pytest

from autoresearch.trainer import sandbox


@pytest.mark.skipif(sandbox.detect().isolation != "sandbox", reason="no sandbox on this machine (autoresearch doctor)")
def test_a_python_environment_under_tmp_still_starts_a_sandboxed_worker(tmp_path: Path) -> None:
    assert Path("/tmp") in tmp_path.resolve().parents, "pytest's tmp_path is expected under /tmp here"
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False)
    site = next((env_dir / "lib").glob("python3*/site-packages"))
    # this environment's packages (autoresearch, torch) seen from the new venv, as after a pip install
    (site / "_ar_test.pth").write_text(f"import site; site.addsitedir({sysconfig.get_paths()['purelib']!r})\n")
    probe = "from autoresearch.trainer import sandbox; s = sandbox.detect(); print(s.isolation, s.reason)"
    run = subprocess.run([str(env_dir / "bin" / "python"), "-c", probe], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split()[0] == "sandbox", run.stdout
