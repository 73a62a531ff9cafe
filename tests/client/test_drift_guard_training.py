"""The drift guard on real tiny training under a load generator the test starts (issue #14's
acceptance): a change that does nothing is never kept, a change with a large real effect still is.

The machine is calibrated with a signed calibration record (a real key) whose σ is the tiny track's
seed noise as measured on a 2-core VM (``bench/drift_guard.py``: σ ≈ 0.06 bits per byte over five
seeds); the runs themselves are the real harness (``trainer.run.run_training``) on the tiny track
with a 2 s budget. The parent is the reference with ``DEVICE_BATCH_SIZE = 1`` (its val_bpb still
moves with every step); a memory-bandwidth load (three processes) runs while the baseline trains
and stops once it is recorded, as when other jobs on a shared machine finish. Measured on the
2-core VM: that parent took 41 steps under the load (4.171 bits per byte) and 48–52 quiet
(4.029–4.041), so a no-op child measured against the loaded parent alone looks ≈ 0.14 = 2.8 σ
better and ``z ≥ 2`` alone would keep it (the issue's "51 → 71 → 90 steps, all kept"); the
reference itself took 79 steps (3.717), a real gain of ≈ 0.2–0.3 = 4–6 σ that also changes tokens/s
(so it is kept on the paired comparison). A seed-only child (``SEED 42 → 43``) is discarded by the
seed rule whatever its z. Runs of this test: 60, 61 and 72 s wall with the two no-op children, 89 s
with the seed-only child added.
How much the load bites depends on the machine; the assertions hold either way.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from autoresearch.client import calibration
from autoresearch.client.loop import AgentLoop, LoopOptions, LoopStats, NullEvents
from autoresearch.client.proposers import Proposal, ProposalContext
from autoresearch.client.workspace import LocalExperiment, Workspace
from autoresearch.protocol import (
    CalibrationPoint,
    CalibrationRecord,
    CurveFit,
    KeyPair,
    sign,
    utc_now,
)
from autoresearch.trainer import tracks
from autoresearch.trainer.hardware import software_versions

pytestmark = pytest.mark.slow

SIGMA = 0.05  # bits per byte; the tiny track's seed noise on the 2-core VM is ≈ 0.06 (module docstring)
LOAD = """
import numpy as np, sys, time
a = np.ones(32 << 20); b = np.empty_like(a)  # 256 MiB each: far beyond any cache
end = time.monotonic() + float(sys.argv[1])
while time.monotonic() < end:
    np.copyto(b, a)
"""


class LoadGenerator:
    """Processes streaming through memory (a bounded lifetime, so a crash leaves nothing)."""

    def __init__(self, processes: int = 3, seconds: float = 120.0) -> None:
        self.procs = [subprocess.Popen([sys.executable, "-c", LOAD, str(seconds)]) for _ in range(processes)]

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            proc.wait(10)


class StopLoadAfterBaseline(NullEvents):
    def __init__(self, load: LoadGenerator) -> None:
        self.load = load

    def experiment_finished(self, exp: LocalExperiment, stats: LoopStats) -> None:
        if exp.number == 1:
            self.load.stop()


class Script:
    name = "scripted"
    can_repair = False

    def __init__(self, sources: list[tuple[str, str]]) -> None:
        self.sources = list(sources)

    def propose(self, ctx: ProposalContext) -> Proposal:
        source, description = self.sources.pop(0)
        return Proposal(source=source, description=description)


def _calibrate(spec: tracks.TrackSpec) -> CalibrationRecord:
    """A signed calibration of this machine for ``spec`` with σ = SIGMA and tokens/s with a 3 % CV."""
    hw = calibration.machine_hardware_class(spec)
    t = spec.time_budget
    budgets = [t / 4, t / 2, t, t, t, 2 * t]
    rates = [1.0, 1.0, 1.0, 1.03, 0.97, 1.0]
    record = CalibrationRecord(
        track=spec.id, hardware_class=hw, harness_version=spec.harness_version, software=software_versions("cpu"),
        reference_sha256=spec.reference_sha256, time_budget_seconds=t,
        points=[CalibrationPoint(budget_seconds=b, seed=i, val_bpb=3.0, training_seconds=b, num_steps=100, tokens_per_second=20000 * r)
                for i, (b, r) in enumerate(zip(budgets, rates, strict=True))],
        fit=CurveFit(a=2.0, b=0.5, c=1.5, rmse=0.0), sigma=SIGMA, min_budget_seconds=t / 4, max_budget_seconds=2 * t,
        tokens_per_second=20000.0, matmul_tflops=0.01, created_at=utc_now(),
    )  # fmt: skip
    calibration._store(sign(record, KeyPair.generate()), spec, hw)
    assert calibration.load_cached(spec, hw) == record
    return record


def test_no_op_children_are_never_kept_under_load_and_a_real_gain_is(tmp_path: Path, clean_env: Path) -> None:
    started = time.monotonic()
    spec = tracks.derive(tracks.get_track("tiny"), time_budget=2.0)
    _calibrate(spec)
    reference = tracks.reference_source("tiny")
    # the parent: the reference in micro-batches of one row (same model and FLOPs per token, a third fewer
    # steps in the budget), so restoring 4 rows is a large real gain that is also a throughput change
    crippled = reference.replace("DEVICE_BATCH_SIZE = 4 ", "DEVICE_BATCH_SIZE = 1 ")
    assert crippled != reference
    no_op_1 = crippled.replace("SEED = 42 ", "UNUSED_A = 1  # read by nothing\nSEED = 42 ", 1)
    no_op_2 = crippled.replace("SEED = 42 ", "UNUSED_B = 2  # read by nothing\nSEED = 42 ", 1)
    gain = reference.replace("SEED = 42 ", "UNUSED_A = 1  # read by nothing\nSEED = 42 ", 1)  # = no_op_1 with the LRs restored
    ws = Workspace.init(tmp_path / "ws", track=spec.id, reference_source=crippled, program_md="p\n")
    proposer = Script([(no_op_1, "UNUSED_A = 1 (does nothing)"), (no_op_2, "UNUSED_B = 2 (does nothing)"),
                       (crippled.replace("SEED = 42 ", "SEED = 43 ", 1), "SEED 42 → 43"),
                       (gain, "DEVICE_BATCH_SIZE 1 → 4")])  # fmt: skip
    load = LoadGenerator()
    try:
        loop = AgentLoop(ws, spec, proposer, LoopOptions(tag="drift", max_experiments=5, prefetch=False, allow_unsandboxed=True),
                         events=StopLoadAfterBaseline(load))  # fmt: skip
        stats = loop.run()
    finally:
        load.stop()
    runs = [e for e in ws.experiments() if e.kind == "run"]
    assert [e.description for e in runs] == ["baseline", "UNUSED_A = 1 (does nothing)", "UNUSED_B = 2 (does nothing)",
                                             "SEED 42 → 43", "DEVICE_BATCH_SIZE 1 → 4"]  # fmt: skip
    summary = [(e.record.status, e.record.metrics.val_bpb, e.record.metrics.num_steps, e.record.normalised.z,  # type: ignore[union-attr]
                e.paired_parent.val_bpb if e.paired_parent else None) for e in runs]  # fmt: skip
    print(f"{time.monotonic() - started:.0f} s; (status, val_bpb, steps, z, paired parent val_bpb):", *summary, sep="\n")
    base, first, second, seeded, real = (e.record for e in runs)
    assert base is not None and first is not None and second is not None and seeded is not None and real is not None
    assert base.outcome == "ok" and all(r.calibration_id is not None for r in (first, second, seeded, real))
    # the changes that do nothing (or only reseed): never kept, whatever the first comparison said
    assert (first.status, second.status, seeded.status) == ("discard", "discard", "discard")
    # the real change: kept, at z ≥ MIN_Z against the measurement it was kept on (paired when it drifted)
    assert real.status == "keep" and real.normalised.z is not None and real.normalised.z >= calibration.DEFAULT_MIN_Z
    assert stats.keeps == 2 and ws.train_py.read_text() == gain
