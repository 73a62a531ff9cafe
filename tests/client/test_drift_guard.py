"""The loop's drift guard (client/loop.py, docs/loop.md "Drift guard"): a would-be keep whose
comparison may be the machine's doing is compared with its parent re-measured next to it.

The runner here is a stand-in for the harness whose machine can change speed between runs: a
``train.py``'s val_bpb is ``2 − QUALITY − 0.1·(speed − 1)`` (more steps in the same budget, lower
val_bpb) and its tokens/s is ``1000·speed / FLOPS_X`` (``FLOPS_X`` scales FLOPs per token), so
every rule is checked exactly and fast. The same guard on real tiny training under a load
generator: test_drift_guard_training.py.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from autoresearch.client import calibration
from autoresearch.client.loop import (
    AgentLoop,
    LoopOptions,
    decide,
    pairing_reason,
    throughput_drift,
)
from autoresearch.client.proposers import Proposal, ProposalContext
from autoresearch.client.workspace import Workspace
from autoresearch.protocol import (
    CalibrationPoint,
    CalibrationRecord,
    CurveFit,
    KeyPair,
    RunMetrics,
    SoftwareVersions,
    sign,
    utc_now,
)
from autoresearch.trainer import tracks
from autoresearch.trainer.result import RunResult

HW = "cpu:drift-test:2"
SIGMA = 0.01
BASE = '''import torch

QUALITY = 0.0  # how much better than the reference this train.py is, bits per byte (test runner)
FLOPS_X = 1.0  # FLOPs per token relative to the reference (test runner)
UNUSED = 0  # read by nothing: changing it does nothing
SEED = 1


def train(h):
    return torch.nn.Linear(8, 8)
'''


def _const(source: str, name: str) -> float:
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == name:
            return float(node.value.value)  # type: ignore[attr-defined]
    raise AssertionError(name)


class MachineRunner:
    """Runs at ``speeds[i]`` for the i-th call (the last speed repeats); records what it ran."""

    def __init__(self, speeds: list[float]) -> None:
        self.speeds = speeds
        self.sources: list[str] = []

    def __call__(self, train_py: Path, track, run_dir: Path, *, seed: int = 0, on_progress=None, allow_unsandboxed: bool = False) -> RunResult:  # type: ignore[no-untyped-def]
        source = train_py.read_text()
        speed = self.speeds[min(len(self.sources), len(self.speeds) - 1)]
        self.sources.append(source)
        quality, flops_x = _const(source, "QUALITY"), _const(source, "FLOPS_X")
        val = 2.0 - quality - 0.1 * (speed - 1.0)
        log = run_dir / "run.log"
        log.write_text(f"val_bpb: {val}\n")
        return RunResult(
            outcome="ok", metrics=RunMetrics(val_bpb=val, training_seconds=track.time_budget, tokens_per_second=1000.0 * speed / flops_x),
            log_path=log, seed=seed, track=track.id, harness_version=tracks.HARNESS_VERSION, hardware_class=HW,
            software=SoftwareVersions(python="3.11"), flops_per_token=1e6 * flops_x,
        )  # fmt: skip


class Edits:
    """Sets module constants: each edit is ``{name: value}`` applied to the current best."""

    name = "scripted"
    can_repair = False

    def __init__(self, edits: list[dict[str, float]]) -> None:
        self.edits = list(edits)

    def propose(self, ctx: ProposalContext) -> Proposal:
        source = ctx.train_py
        edit = self.edits.pop(0)
        for name, value in edit.items():
            old = next(line for line in source.splitlines() if line.startswith(f"{name} = "))
            source = source.replace(old, f"{name} = {value}  # changed")
        return Proposal(source=source, description=", ".join(f"{k} → {v}" for k, v in edit.items()))


def _cache_calibration(rates: tuple[float, ...] = (1000.0, 1010.0, 990.0)) -> CalibrationRecord:
    spec = tracks.get_track("tiny")
    t = spec.time_budget
    fit = CurveFit(a=0.5, b=0.5, c=1.0, rmse=0.0)
    budgets = [t / 4, t / 2, *([t] * len(rates)), 2 * t]
    tps = [1000.0, 1000.0, *rates, 1000.0]
    record = CalibrationRecord(
        track=spec.id, hardware_class=HW, harness_version=spec.harness_version, software=SoftwareVersions(python="3.11"),
        reference_sha256=spec.reference_sha256, time_budget_seconds=t,
        points=[CalibrationPoint(budget_seconds=b, seed=i, val_bpb=2.0, training_seconds=b, num_steps=1, tokens_per_second=r)
                for i, (b, r) in enumerate(zip(budgets, tps, strict=True))],
        fit=fit, sigma=SIGMA, min_budget_seconds=t / 4, max_budget_seconds=2 * t, tokens_per_second=1000.0,
        matmul_tflops=0.01, created_at=utc_now(),
    )  # fmt: skip
    calibration._store(sign(record, KeyPair.generate()), spec, HW)
    return record


def _loop(tmp_path: Path, edits: list[dict[str, float]], runner: MachineRunner) -> tuple[Workspace, AgentLoop]:
    ws = Workspace.init(tmp_path / "ws", track="tiny", reference_source=BASE, program_md="Lower val_bpb.\n")
    options = LoopOptions(tag="drift", max_experiments=len(edits) + 1, prefetch=False)
    return ws, AgentLoop(ws, tracks.get_track("tiny"), Edits(edits), options, runner=runner)


# --------------------------------------------------------------------------------------------------
# the rules


def test_throughput_drift_is_achieved_flops_per_second() -> None:
    assert throughput_drift(1000.0, 1e6, 1400.0, 1e6) == pytest.approx(0.4)  # same model, faster machine
    assert throughput_drift(1000.0, 1e6, 500.0, 2e6) == pytest.approx(0.0)  # twice the FLOPs at half the rate
    assert throughput_drift(1000.0, None, 1200.0, 2e6) == pytest.approx(0.2)  # no F: taken as unchanged
    assert throughput_drift(None, 1e6, 1000.0, 1e6) is None


def test_pairing_reason_names_the_cause() -> None:
    assert pairing_reason(None, 0.0, 0.1) == "no calibration here, so no z to tell the gain from noise"
    assert "z +3.00 is below 4.03" in (pairing_reason(3.0, 0.0, 0.1) or "")
    assert "differs from the parent's by +40% (allowed ±10%)" in (pairing_reason(9.0, 0.4, 0.1) or "")
    assert pairing_reason(9.0, -0.05, 0.1) is None and pairing_reason(9.0, None, 0.1) is None


def test_paired_thresholds_come_from_the_hub_rule() -> None:
    from autoresearch.protocol import best

    assert calibration.DEFAULT_MIN_Z == best.MIN_Z
    # one run at PAIRED_BELOW_Z reaches exactly the hub's TRUST_P on its own
    assert best.gain_probability([calibration.PAIRED_BELOW_Z]) == pytest.approx(best.TRUST_P)
    assert calibration.PAIRED_BELOW_Z == pytest.approx(4.03, abs=0.005)


def test_throughput_spread_from_the_calibration() -> None:
    cal = _cache_calibration(rates=(1000.0, 1100.0, 900.0))  # CV 10 % → 3 × 10 %
    assert calibration.throughput_spread(cal) == pytest.approx(0.3)
    assert calibration.throughput_spread(_cache_calibration()) == calibration.MIN_THROUGHPUT_SPREAD  # CV 1 %: the floor
    assert calibration.throughput_spread(None) == calibration.DEFAULT_THROUGHPUT_SPREAD


@pytest.mark.parametrize(
    ("child", "first", "paired", "expected"),
    [(1.80, 2.00, 1.95, "keep"),  # beats both by more than they differ (0.05)
     (1.92, 2.00, 1.95, "discard"),  # beats both, but by less than the parent's own spread
     (1.96, 2.00, 1.95, "discard")],  # beats only the first measurement
)  # fmt: skip
def test_uncalibrated_paired_keep_beats_both_parent_measurements(child: float, first: float, paired: float, expected: str) -> None:
    kw = dict(outcome="ok", val_bpb=child, best_val_bpb=paired, baseline=False, z=None, min_z=2.0, seed_only=False)
    assert decide(**kw, first_parent_val_bpb=first) == expected  # type: ignore[arg-type]
    assert decide(**kw) == ("keep" if child < paired else "discard")  # unpaired: upstream's rule  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------------
# the loop


def test_a_faster_machine_does_not_keep_a_change_that_does_nothing(tmp_path: Path, clean_env: Path) -> None:
    _cache_calibration()
    # the baseline ran on a busy machine (speed 0.4), the no-op child on a quiet one (1.0):
    # Δ = −0.06, z = +6 (past PAIRED_BELOW_Z), tokens/s +150 % at unchanged FLOPs per token
    runner = MachineRunner([0.4, 1.0])
    ws, loop = _loop(tmp_path, [{"UNUSED": 1}], runner)
    stats = loop.run()
    base, child = (e for e in ws.experiments() if e.kind == "run")
    assert child.record is not None and child.paired_parent is not None
    assert child.record.status == "discard"
    assert "throughput differs from the parent's by +150%" in child.paired_parent.reason
    # the parent was re-run next to the child and the decision taken against that run
    assert runner.sources == [BASE, child_source(ws, child.commit), BASE]
    assert child.paired_parent.first_val_bpb == pytest.approx(2.06)
    assert child.record.parent_val_bpb == pytest.approx(2.0) and child.record.normalised.z == pytest.approx(0.0)
    assert (stats.runs, stats.paired, stats.keeps, stats.discards) == (2, 1, 1, 1)
    assert base.record is not None and ws.train_py.read_text() == BASE
    assert (ws.runs_dir / "0002-parent" / "run.log").exists()
    # the best's latest measurement is the paired one, also after a restart
    assert stats.best_val_bpb == pytest.approx(2.0)
    restored = AgentLoop(ws, tracks.get_track("tiny"), Edits([]), LoopOptions(tag="drift"), runner=runner)._restore()
    assert restored is not None and restored.val_bpb == pytest.approx(2.0) and restored.tokens_per_second == pytest.approx(1000.0)


def child_source(ws: Workspace, commit: str | None) -> str:
    assert commit is not None
    return ws.source_at(commit)


def test_a_large_effect_is_kept_without_re_measuring(tmp_path: Path, clean_env: Path) -> None:
    _cache_calibration()
    runner = MachineRunner([1.0])
    ws, loop = _loop(tmp_path, [{"QUALITY": 0.1}], runner)  # z = 10, same throughput
    stats = loop.run()
    child = [e for e in ws.experiments() if e.kind == "run"][1]
    assert child.record is not None and child.record.status == "keep" and child.paired_parent is None
    assert child.record.normalised.z == pytest.approx(10.0)
    assert (stats.runs, stats.paired, len(runner.sources)) == (2, 0, 2)


def test_a_change_whose_flops_explain_its_throughput_is_not_re_measured(tmp_path: Path, clean_env: Path) -> None:
    _cache_calibration()
    runner = MachineRunner([1.0])
    ws, loop = _loop(tmp_path, [{"QUALITY": 0.1, "FLOPS_X": 2.0}], runner)  # half the tokens/s, twice the FLOPs
    stats = loop.run()
    child = [e for e in ws.experiments() if e.kind == "run"][1]
    assert child.record is not None and child.record.status == "keep" and child.paired_parent is None
    assert child.record.metrics.tokens_per_second == pytest.approx(500.0)
    assert stats.paired == 0


def test_a_marginal_z_is_re_measured_and_kept_when_it_holds(tmp_path: Path, clean_env: Path) -> None:
    _cache_calibration()
    runner = MachineRunner([1.0])
    ws, loop = _loop(tmp_path, [{"QUALITY": 0.03}, {"QUALITY": 0.01}], runner)  # z = 3 (held), then z = 1 (no keep)
    stats = loop.run()
    _, marginal, small = (e for e in ws.experiments() if e.kind == "run")
    assert marginal.record is not None and marginal.record.status == "keep"
    assert marginal.paired_parent is not None and "z +3.00 is below 4.03" in marginal.paired_parent.reason
    assert marginal.record.normalised.z == pytest.approx(3.0)
    # z = −2 against the new best (QUALITY 0.03 → 0.01): below MIN_Z, discarded without a re-measure
    assert small.record is not None and small.record.status == "discard" and small.paired_parent is None
    assert (stats.keeps, stats.paired) == (2, 1)


def test_uncalibrated_keeps_are_always_paired_and_shown_provisional(tmp_path: Path, clean_env: Path) -> None:
    from autoresearch.client.display import _summary
    from autoresearch.client.results import compact_table

    runner = MachineRunner([1.0])
    ws, loop = _loop(tmp_path, [{"QUALITY": 0.2}], runner)
    stats = loop.run()
    child = [e for e in ws.experiments() if e.kind == "run"][1]
    assert child.record is not None and child.record.status == "keep" and child.record.calibration_id is None
    assert child.paired_parent is not None and child.paired_parent.reason.startswith("no calibration")
    assert stats.paired == 1
    assert "keep (provisional: no calibration)" in _summary(child)
    table = compact_table([(2, child.record)])
    assert "2     keep?" in table and "(keep? = provisional: no calibration on this machine" in table
