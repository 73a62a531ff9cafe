"""z and ECM in the loop's recorded results: a cached calibration is picked up by the agent loop and
every experiment record carries Δ, z, ECM and gain from it (client/loop.py + client/calibration.py).

The runs go through the loop's ``runner`` seam with a stand-in whose val_bpb is the calibration's
own reference curve at ``MULT × TIME_BUDGET``, so every ECM is known exactly: a ``train.py`` with
``MULT = m`` is worth m × the reference's compute. The real harness is exercised by
test_calibration_real.py.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from autoresearch.client import calibration
from autoresearch.client.fitting import bpb_at
from autoresearch.client.loop import AgentLoop, LoopOptions
from autoresearch.client.proposers import Proposal, ProposalContext
from autoresearch.client.workspace import Workspace
from autoresearch.protocol import (
    CalibrationPoint,
    CalibrationRecord,
    CurveFit,
    ExperimentRecord,
    KeyPair,
    RunMetrics,
    SoftwareVersions,
    record_id,
    sign,
    utc_now,
)
from autoresearch.trainer import tracks
from autoresearch.trainer.result import RunResult

HW = "cpu:calibration-test:2"
FIT = CurveFit(a=0.5, b=0.5, c=1.9, rmse=0.0)
SIGMA = 0.004
BASE = '''import torch

MULT = 1.0  # compute multiplier this train.py is worth (read by the test's runner)
SEED = 1


def train(h):
    return torch.nn.Linear(8, 8)
'''


def _mult(source: str) -> float:
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "MULT":
            return float(node.value.value)  # type: ignore[attr-defined]
    raise AssertionError("no MULT")


class CurveRunner:
    """Stand-in for run_training: val_bpb = the reference curve at MULT × TIME_BUDGET."""

    def __call__(self, train_py: Path, track, run_dir: Path, *, seed: int = 0, on_progress=None, allow_unsandboxed: bool = False) -> RunResult:  # type: ignore[no-untyped-def]
        val = bpb_at(FIT, _mult(train_py.read_text()) * track.time_budget)
        log = run_dir / "run.log"
        log.write_text(f"val_bpb: {val}\n")
        return RunResult(
            outcome="ok",
            metrics=RunMetrics(val_bpb=val, training_seconds=track.time_budget),
            log_path=log,
            seed=seed,
            track=track.id,
            harness_version=tracks.HARNESS_VERSION,
            hardware_class=HW,
            software=SoftwareVersions(python="3.11"),
        )


class Edits:
    name = "scripted"
    can_repair = False

    def __init__(self, values: list[str]) -> None:
        self.values = list(values)

    def propose(self, ctx: ProposalContext) -> Proposal:
        old = next(line for line in ctx.train_py.splitlines() if line.startswith("MULT = "))
        new = self.values.pop(0)
        return Proposal(source=ctx.train_py.replace(old, f"MULT = {new}  # changed"), description=f"MULT → {new}")


def _cache_calibration() -> CalibrationRecord:
    spec = tracks.get_track("tiny")
    t = spec.time_budget
    budgets = [t / 4, t / 2, t, t, 2 * t]
    record = CalibrationRecord(
        track=spec.id,
        hardware_class=HW,
        harness_version=spec.harness_version,
        software=SoftwareVersions(python="3.11"),
        reference_sha256=spec.reference_sha256,
        time_budget_seconds=t,
        points=[
            CalibrationPoint(budget_seconds=b, seed=i, val_bpb=bpb_at(FIT, b), training_seconds=b, num_steps=1, tokens_per_second=1.0)
            for i, b in enumerate(budgets)
        ],
        fit=FIT,
        sigma=SIGMA,
        min_budget_seconds=t / 4,
        max_budget_seconds=2 * t,
        tokens_per_second=1.0,
        matmul_tflops=0.01,
        created_at=utc_now(),
    )
    calibration._store(sign(record, KeyPair.generate()), spec, HW)
    return record


def _records(ws: Workspace) -> list[ExperimentRecord]:
    return [e.record for e in ws.experiments() if e.kind == "run" and e.record is not None]


def _run(tmp_path: Path, values: list[str], **opts) -> list[ExperimentRecord]:  # type: ignore[no-untyped-def]
    ws = Workspace.init(tmp_path / "ws", track="tiny", reference_source=BASE, program_md="Lower val_bpb.\n")
    options = LoopOptions(tag="cal", max_experiments=len(values) + 1, prefetch=False, **opts)
    AgentLoop(ws, tracks.get_track("tiny"), Edits(values), options, runner=CurveRunner()).run()
    return _records(ws)


def test_loop_records_carry_z_ecm_and_gain(tmp_path: Path) -> None:
    cal = _cache_calibration()
    base, better, beyond = _run(tmp_path, ["1.5", "3.0"])
    assert all(r.calibration_id == record_id(cal) for r in (base, better, beyond))

    # the baseline is the reference itself: ECM 1, nothing to compare with
    assert base.normalised.ecm == pytest.approx(1.0)
    assert base.normalised.delta_val_bpb is None and base.normalised.z is None
    assert base.normalised.sigma == SIGMA

    # MULT 1.5: worth 1.5 × the reference's compute, inside the calibrated budgets
    n = better.normalised
    assert better.status == "keep"
    assert n.delta_val_bpb == pytest.approx(better.metrics.val_bpb - base.metrics.val_bpb)  # type: ignore[operator]
    assert n.z == pytest.approx((base.metrics.val_bpb - better.metrics.val_bpb) / SIGMA)  # type: ignore[operator]
    assert (n.ecm, n.ecm_parent, n.gain) == (pytest.approx(1.5), pytest.approx(1.0), pytest.approx(1.5))
    assert n.ecm_extrapolated is False

    # MULT 3.0: t* = 3 × budget lies beyond the longest calibrated budget (2×): flagged, not clamped
    n = beyond.normalised
    assert beyond.status == "keep"
    assert (n.ecm, n.ecm_parent, n.gain) == (pytest.approx(3.0), pytest.approx(1.5), pytest.approx(2.0))
    assert n.ecm_extrapolated is True


def test_min_z_discards_an_improvement_within_noise(tmp_path: Path) -> None:
    _cache_calibration()
    # MULT 1.0 → 1.02 lowers val_bpb by ~2.5e-3 = 0.6 σ: lower, but not distinguishable from noise
    base, small = _run(tmp_path, ["1.02"], min_z=calibration.DEFAULT_MIN_Z)
    assert small.metrics.val_bpb < base.metrics.val_bpb  # type: ignore[operator]
    assert small.normalised.z is not None and 0 < small.normalised.z < calibration.DEFAULT_MIN_Z
    assert small.status == "discard"


def test_without_calibration_records_carry_delta_only(tmp_path: Path) -> None:
    base, better = _run(tmp_path, ["1.5"])
    assert better.calibration_id is None
    assert better.normalised.delta_val_bpb == pytest.approx(better.metrics.val_bpb - base.metrics.val_bpb)  # type: ignore[operator]
    assert (better.normalised.z, better.normalised.ecm, better.normalised.gain) == (None, None, None)
