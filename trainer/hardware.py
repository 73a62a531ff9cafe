"""Hardware class, software versions and peak FLOPS of the device a run trains on.

Hardware class (DESIGN.md vocabulary): the NVML GPU name with its memory (``NVIDIA H100 80GB HBM3``;
names without a size get `` <n>GB`` appended) or ``cpu:<model>:<cores>``. NVML comes from
``nvidia-ml-py`` (module ``pynvml``); when it is absent or finds no GPU the machine is a CPU machine —
never an error. Nothing is probed at import time.

Peak dense bf16 FLOPS per GPU come from vendor datasheets (tensor-core dense figures, no sparsity).
A device missing from the table gets an estimate (``estimated=True``) so MFU is still printed but
labelled.

CPUs have no datasheet figure that means anything for one PyTorch thread (AVX2 or AVX-512, turbo,
SMT siblings), so their peak is measured (:func:`measured_cpu_peak`): the best float32 matmul
throughput of torch on the thread count the track trains with, timed on the process's CPU clock (so
a loaded machine does not make it look slower, and it is in the same units as the ``cpu``/``tiny``
budget clock), in a subprocess (the harness imports no torch), once per CPU, thread count and torch
version, cached as JSON in the cache directory.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import re
import subprocess
import sys
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Literal

from autoresearch.protocol import SoftwareVersions

_logger = logging.getLogger(__name__)

# Dense bf16 tensor-core peak, FLOP/s (vendor datasheets). Matched by substring, first match wins,
# so more specific names come first.
PEAK_BF16_FLOPS: tuple[tuple[str, float], ...] = (
    ("GB200", 2.5e15),
    ("B200", 2.25e15),
    ("H200", 989e12),
    ("H100 PCIe", 756e12),
    ("H100 NVL", 835e12),
    ("H100", 989e12),  # SXM
    ("H800", 989e12),
    ("GH200", 989e12),
    ("A100", 312e12),
    ("A800", 312e12),
    ("L40S", 362e12),
    ("L40", 181e12),
    ("L4", 121e12),
    ("A10G", 70e12),
    ("A10", 125e12),
    ("A6000", 155e12),  # RTX A6000
    ("RTX 6000 Ada", 364e12),
    ("RTX 5090", 209e12),
    ("RTX 4090", 165e12),
    ("RTX 4080", 97e12),
    ("RTX 3090", 71e12),
    ("RTX 3080", 59e12),
    ("V100", 125e12),  # fp16: V100 has no bf16
    ("T4", 65e12),  # fp16
)
CPU_FLOPS_PER_CORE_CYCLE = 32.0  # fp32 FMA: 2 units × 8 lanes (AVX2) × 2 FLOP — the fallback estimate
CPU_ASSUMED_HZ = 2.5e9
CPU_PEAK_MATMUL = 1024  # n of the n × n float32 matmuls timed for the CPU peak
CPU_PEAK_REPEATS = 8  # matmuls per timed round (best of CPU_PEAK_ROUNDS rounds)
CPU_PEAK_ROUNDS = 3
CPU_PEAK_TIMEOUT = 120.0  # seconds before the measuring subprocess is given up (estimate used instead)
CPU_PEAK_CACHE = "cpu-peak-v1.json"

# Runs in a subprocess: argv[1] threads; prints FLOP/s per CPU-second × threads.
_CPU_PEAK_SCRIPT = """
import sys, time, torch
threads, n, repeats, rounds = (int(v) for v in sys.argv[1:5])
torch.set_num_threads(threads)
a, b = torch.randn(n, n), torch.randn(n, n)
for _ in range(2):
    a @ b
best = 0.0
for _ in range(rounds):
    t = time.process_time()
    for _ in range(repeats):
        a @ b
    best = max(best, 2 * n**3 * repeats / max(time.process_time() - t, 1e-9))
print(best * threads)
"""


@dataclass(frozen=True)
class GpuInfo:
    """One NVML device: ``name``, total memory in bytes and the driver version."""

    name: str
    memory_bytes: int
    driver: str | None


def _as_str(value: object) -> str:
    """NVML strings: ``bytes`` from older nvidia-ml-py releases, ``str`` from newer ones."""
    return value.decode() if isinstance(value, bytes) else str(value)


def _nvml_gpu(index: int = 0) -> GpuInfo | None:
    """GPU ``index`` as NVML sees it, or None when NVML is missing or finds no GPU."""
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except Exception as exc:  # pynvml.NVMLError: no driver / no GPU; a CPU machine is not an error
        _logger.debug("NVML unavailable: %s", exc)
        return None
    try:
        if pynvml.nvmlDeviceGetCount() <= index:
            return None
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        name = pynvml.nvmlDeviceGetName(handle)
        mem = pynvml.nvmlDeviceGetMemoryInfo(handle).total
        driver = pynvml.nvmlSystemGetDriverVersion()
        return GpuInfo(_as_str(name), int(mem), _as_str(driver))
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception as exc:  # shutting down must not turn a good answer into an error
            _logger.debug("nvmlShutdown failed: %s", exc)


def gpu_name(index: int = 0) -> str | None:
    """NVML name of GPU ``index`` (e.g. ``NVIDIA H100 80GB HBM3``), or None on a machine without one."""
    gpu = _nvml_gpu(index)
    return gpu.name if gpu is not None else None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def cpu_cores() -> int:
    """CPU cores this process may run on (affinity-aware)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def cpu_class() -> str:
    """``cpu:<model>:<cores>`` with whitespace collapsed and ``:`` removed from the model name."""
    model = re.sub(r"\s+", " ", _cpu_model().replace(":", " ")).strip()
    return f"cpu:{model}:{cpu_cores()}"[:200]


def gpu_class(gpu: GpuInfo) -> str:
    """NVML name, with `` <n>GB`` (memory rounded to GiB) appended when the name has no size."""
    name = re.sub(r"\s+", " ", gpu.name).strip()
    if not re.search(r"\d+\s*GB", name):
        name = f"{name} {round(gpu.memory_bytes / 2**30)}GB"
    return name[:200]


def hardware_class(device: Literal["auto", "cuda", "cpu"] = "auto") -> str:
    """The hardware class of this machine.

    ``device="cpu"`` always gives the CPU class (the ``cpu``/``tiny`` tracks train on CPU even on a
    GPU machine); ``auto``/``cuda`` give GPU 0's class, or the CPU class when NVML finds no GPU.
    """
    if device != "cpu":
        gpu = _nvml_gpu()
        if gpu is not None:
            return gpu_class(gpu)
    return cpu_class()


def hardware_class_for(track_device: str) -> str:
    """Hardware class for a track's ``device`` field (``cuda``, ``cpu`` or ``any``)."""
    return hardware_class("cpu" if track_device == "cpu" else "auto")


def software_versions(device: Literal["auto", "cuda", "cpu"] = "auto") -> SoftwareVersions:
    """Python, torch, CUDA runtime (as torch was built) and NVIDIA driver versions; None when absent."""
    try:
        torch_version: str | None = version("torch")
    except PackageNotFoundError:
        torch_version = None
    torch_mod = sys.modules.get("torch")  # never import torch just to ask (the hub has none)
    cuda = torch_mod.version.cuda if torch_mod is not None and device != "cpu" else None
    gpu = _nvml_gpu() if device != "cpu" else None
    return SoftwareVersions(
        python=platform.python_version(),
        torch=torch_version,
        cuda=cuda,
        driver=gpu.driver if gpu else None,
    )


def _cache_dir() -> Path:
    env = os.environ.get("AUTORESEARCH_CACHE")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("autoresearch-hub", appauthor=False))


def _default_threads() -> int:
    try:
        return max(1, int(os.environ.get("OMP_NUM_THREADS", "")))
    except ValueError:
        return cpu_cores()


def measured_cpu_peak(threads: int | None = None, *, cache_dir: Path | None = None) -> float | None:
    """Best float32 matmul FLOP/s of torch on ``threads`` threads (default: ``OMP_NUM_THREADS``,
    else the usable cores), per second of CPU time × threads; None when it cannot be measured.

    Measured once per (CPU class, threads, torch version) in a subprocess: :data:`CPU_PEAK_ROUNDS`
    rounds of :data:`CPU_PEAK_REPEATS` ``n × n`` matmuls (``n`` = :data:`CPU_PEAK_MATMUL`, 2n³ FLOP
    each) after two warm-up ones; the best round counts. Cached in ``<cache dir>/cpu-peak-v1.json``.
    """
    threads = threads or _default_threads()
    try:
        torch_version = version("torch")
    except PackageNotFoundError:
        return None
    key = f"{cpu_class()}|threads={threads}|torch={torch_version}|n={CPU_PEAK_MATMUL}"
    path = (cache_dir or _cache_dir()) / CPU_PEAK_CACHE
    try:
        cached = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except (OSError, ValueError):
        cached = {}
    if isinstance(cached.get(key), float):
        return float(cached[key])
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    args = [str(threads), str(CPU_PEAK_MATMUL), str(CPU_PEAK_REPEATS), str(CPU_PEAK_ROUNDS)]
    try:
        out = subprocess.run([sys.executable, "-c", _CPU_PEAK_SCRIPT, *args], capture_output=True, text=True,
                             timeout=CPU_PEAK_TIMEOUT, env=env, check=True).stdout  # fmt: skip
        peak = float(out.split()[-1])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError) as exc:
        _logger.warning("could not measure the CPU's matmul peak (%s); MFU uses an estimate", exc)
        return None
    cached[key] = peak
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(cached, indent=1, sort_keys=True), encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:  # a read-only cache costs a re-measurement next time, nothing else
        _logger.debug("could not cache the CPU peak: %s", exc)
    return peak


def peak_flops(device_name: str | None, threads: int | None = None) -> tuple[float, bool]:
    """Peak FLOP/s for a device and whether that figure is an estimate.

    ``device_name`` is a GPU name (``torch.cuda.get_device_name`` or NVML) or None for the CPU. GPUs
    in :data:`PEAK_BF16_FLOPS` (dense bf16) are exact (``False``); other GPUs are estimated at an
    A100's figure. CPUs: the measured float32 matmul peak on ``threads`` threads
    (:func:`measured_cpu_peak`, ``False``), or cores × 2.5 GHz × 32 FLOP/cycle (``True``) when it
    cannot be measured.
    """
    if device_name is None:
        measured = measured_cpu_peak(threads)
        if measured is not None and measured > 0:
            return measured, False
        return (threads or cpu_cores()) * CPU_ASSUMED_HZ * CPU_FLOPS_PER_CORE_CYCLE, True
    for key, flops in PEAK_BF16_FLOPS:
        if key.lower() in device_name.lower():
            return flops, False
    return 312e12, True
