"""Hardware class and peak FLOPS, with NVML mocked (the only thing mocked here)."""

from __future__ import annotations

import sys
import types

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
    cpu_flops, cpu_estimated = hardware.peak_flops(None)
    assert cpu_estimated and cpu_flops == hardware.cpu_cores() * hardware.CPU_ASSUMED_HZ * hardware.CPU_FLOPS_PER_CORE_CYCLE
