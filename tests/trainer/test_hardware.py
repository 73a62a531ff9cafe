"""Hardware class and peak FLOPS, with NVML mocked (the only thing mocked here)."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest

from autoresearch.trainer import hardware


class _MemInfo:
    def __init__(self, total: int) -> None:
        self.total = total


def _fake_pynvml(name: str | bytes, memory_gib: float, *, count: int = 1, init_error: bool = False) -> types.ModuleType:
    mod = types.ModuleType("pynvml")

    class NVMLError(Exception):
        pass

    def init() -> None:
        if init_error:
            raise NVMLError("Driver Not Loaded")

    mod.NVMLError = NVMLError  # type: ignore[attr-defined]
    mod.nvmlInit = init  # type: ignore[attr-defined]
    mod.nvmlShutdown = lambda: None  # type: ignore[attr-defined]
    mod.nvmlDeviceGetCount = lambda: count  # type: ignore[attr-defined]
    mod.nvmlDeviceGetHandleByIndex = lambda i: object()  # type: ignore[attr-defined]
    mod.nvmlDeviceGetName = lambda h: name  # type: ignore[attr-defined]
    mod.nvmlDeviceGetMemoryInfo = lambda h: _MemInfo(int(memory_gib * 2**30))  # type: ignore[attr-defined]
    mod.nvmlSystemGetDriverVersion = lambda: "550.54.15"  # type: ignore[attr-defined]
    return mod


def test_gpu_class_keeps_nvml_names_that_carry_their_size(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", _fake_pynvml("NVIDIA H100 80GB HBM3", 79.6))
    assert hardware.hardware_class() == "NVIDIA H100 80GB HBM3"
    assert hardware.software_versions().driver == "550.54.15"


def test_gpu_class_appends_memory_when_the_name_has_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", _fake_pynvml(b"NVIDIA GeForce RTX 4090", 23.99))
    assert hardware.hardware_class() == "NVIDIA GeForce RTX 4090 24GB"


def test_cpu_tracks_get_the_cpu_class_even_with_a_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", _fake_pynvml("NVIDIA A100-SXM4-40GB", 40))
    assert hardware.hardware_class_for("cpu").startswith("cpu:")
    assert hardware.hardware_class_for("cuda") == "NVIDIA A100-SXM4-40GB"


@pytest.mark.parametrize("case", ["absent", "init_error", "no_device"])
def test_no_nvml_means_cpu_class_without_error(monkeypatch: pytest.MonkeyPatch, case: str) -> None:
    if case == "absent":
        monkeypatch.setitem(sys.modules, "pynvml", None)  # import raises ImportError
    else:
        monkeypatch.setitem(sys.modules, "pynvml", _fake_pynvml("x", 1, init_error=case == "init_error", count=0))
    cls = hardware.hardware_class()
    model, cores = cls.split(":")[1:]
    assert cls.startswith("cpu:") and model and int(cores) == hardware.cpu_cores()
    assert hardware.software_versions().driver is None


def test_peak_flops_table_and_estimates() -> None:
    assert hardware.peak_flops("NVIDIA H100 80GB HBM3") == (989e12, False)
    assert hardware.peak_flops("NVIDIA H100 PCIe") == (756e12, False)
    assert hardware.peak_flops("NVIDIA GeForce RTX 4090") == (165e12, False)
    flops, estimated = hardware.peak_flops("Some Future GPU")
    assert estimated and flops > 0


def test_cpu_peak_is_measured_once_per_thread_count_and_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hardware, "CPU_PEAK_MATMUL", 256)  # small and quick; the real one times 1024²
    peak = hardware.measured_cpu_peak(1, cache_dir=tmp_path)
    assert peak is not None and 1e8 < peak < 1e13  # FLOP/s of one thread: between 0.1 GFLOP/s and 10 TFLOP/s
    cached = json.loads((tmp_path / hardware.CPU_PEAK_CACHE).read_text())
    assert list(cached.values()) == [peak] and "threads=1" in next(iter(cached))

    def no_subprocess(*args: object, **kwargs: object) -> None:
        raise AssertionError("measured again instead of reading the cache")

    monkeypatch.setattr(hardware.subprocess, "run", no_subprocess)
    assert hardware.measured_cpu_peak(1, cache_dir=tmp_path) == peak


def test_cpu_peak_falls_back_to_a_labelled_estimate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTORESEARCH_CACHE", str(tmp_path))
    monkeypatch.setattr(hardware, "_CPU_PEAK_SCRIPT", "raise SystemExit(3)")
    assert hardware.measured_cpu_peak(2) is None
    flops, estimated = hardware.peak_flops(None, threads=2)
    assert estimated and flops == 2 * hardware.CPU_ASSUMED_HZ * hardware.CPU_FLOPS_PER_CORE_CYCLE
