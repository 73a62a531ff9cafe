"""Last confinement steps a worker applies to itself before it imports torch or ``train.py``.

This runs in the worker process while it is still clean (our code only, one thread), so it can do
what must happen from inside: lower resource limits and, on tracks whose budget is CPU time,
install a seccomp filter that forbids creating processes (threads stay allowed). The harness does
not take this on trust: after the worker's ``hello`` it reads ``/proc/<pid>/status`` and
``/proc/<pid>/limits`` from outside and refuses to go on if the worker is not locked down
(:func:`autoresearch.trainer.supervisor.check_lockdown`).

Why no new processes on CPU-time tracks: the budget is the CPU time of the worker's process tree,
and the time of a child reaped automatically (``SIGCHLD`` ignored) is not added to any parent's
``cutime`` — a child could train off the clock. Without ``fork`` there is nothing to hide, and fork
bombs and daemons that outlive the run are gone as well.

The filter is classic BPF over ``seccomp_data`` (``linux/seccomp.h``): architecture check (any other
ABI, e.g. i386 via ``int 0x80``, is killed), x32 syscalls refused, ``fork``/``vfork`` → EPERM,
``clone3`` → ENOSYS (its flags live in memory seccomp cannot read; glibc then falls back to
``clone``), ``clone`` without ``CLONE_THREAD`` → EPERM.
"""

from __future__ import annotations

import ctypes
import os
import platform
import resource
import struct

# BPF opcodes and seccomp return values (linux/filter.h, linux/seccomp.h)
_LD_W_ABS, _JEQ_K, _JGE_K, _JSET_K, _RET_K = 0x20, 0x15, 0x35, 0x45, 0x06
_ALLOW, _ERRNO, _KILL_PROCESS = 0x7FFF0000, 0x00050000, 0x80000000
_EPERM, _ENOSYS = 1, 38
_CLONE_THREAD = 0x00010000
_X32_BIT = 0x40000000
_PR_SET_NO_NEW_PRIVS, _PR_SET_SECCOMP, _SECCOMP_MODE_FILTER = 38, 22, 2

# AUDIT_ARCH_* and syscall numbers per machine (None: the call does not exist there)
_ARCHES: dict[str, tuple[int, int | None, int | None, int, int]] = {
    # machine: (audit arch, fork, vfork, clone, clone3)
    "x86_64": (0xC000003E, 57, 58, 56, 435),
    "aarch64": (0xC00000B7, None, None, 220, 435),
}

RLIMITS = {"address_space": resource.RLIMIT_AS, "file_size": resource.RLIMIT_FSIZE,
           "open_files": resource.RLIMIT_NOFILE, "core": resource.RLIMIT_CORE}  # fmt: skip


def _ins(code: int, k: int, jt: int = 0, jf: int = 0) -> bytes:
    return struct.pack("=HBBI", code, jt, jf, k)


def no_fork_filter(machine: str | None = None) -> bytes | None:
    """The BPF program (``struct sock_filter[]`` bytes) for this machine, or None if unsupported."""
    arch = _ARCHES.get(machine or platform.machine())
    if arch is None:
        return None
    audit_arch, fork, vfork, clone, clone3 = arch
    prog = [
        _ins(_LD_W_ABS, 4),  # seccomp_data.arch
        _ins(_JEQ_K, audit_arch, 1, 0),
        _ins(_RET_K, _KILL_PROCESS),
        _ins(_LD_W_ABS, 0),  # seccomp_data.nr
    ]
    if audit_arch == 0xC000003E:  # x86_64: refuse the x32 ABI
        prog += [_ins(_JGE_K, _X32_BIT, 0, 1), _ins(_RET_K, _ERRNO | _EPERM)]
    for nr in (fork, vfork):
        if nr is not None:
            prog += [_ins(_JEQ_K, nr, 0, 1), _ins(_RET_K, _ERRNO | _EPERM)]
    prog += [
        _ins(_JEQ_K, clone3, 0, 1),
        _ins(_RET_K, _ERRNO | _ENOSYS),
        _ins(_JEQ_K, clone, 0, 3),
        _ins(_LD_W_ABS, 16),  # low 32 bits of args[0]: the clone flags (little-endian)
        _ins(_JSET_K, _CLONE_THREAD, 1, 0),
        _ins(_RET_K, _ERRNO | _EPERM),
        _ins(_RET_K, _ALLOW),
    ]
    return b"".join(prog)


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def forbid_processes() -> None:
    """Install :func:`no_fork_filter` on this (single-threaded) process; inherited by its threads.

    Raises:
        OSError: the kernel refused (no seccomp) or the machine has no filter here.
    """
    prog = no_fork_filter()
    if prog is None:
        raise OSError(f"no seccomp filter for machine {platform.machine()!r}")
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")
    buf = ctypes.create_string_buffer(prog, len(prog))
    fprog = _SockFprog(len(prog) // 8, ctypes.cast(buf, ctypes.c_void_p))
    if libc.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_SECCOMP) failed")


def apply(spec: dict[str, object]) -> None:
    """Lower the resource limits named in ``spec["rlimits"]`` (bytes or counts), raise the nice
    value by ``spec["nice"]`` and, when ``spec["no_fork"]``, forbid new processes. Raises
    OSError/ValueError when that fails."""
    limits = spec.get("rlimits", {})
    assert isinstance(limits, dict)
    for name, value in limits.items():
        kind = RLIMITS[name]
        soft, hard = resource.getrlimit(kind)
        new = int(value) if hard == resource.RLIM_INFINITY else min(int(value), hard)
        resource.setrlimit(kind, (new, new))
    nice = spec.get("nice", 0)
    if isinstance(nice, int) and nice > 0:
        os.nice(nice)
    if spec.get("no_fork"):
        forbid_processes()
