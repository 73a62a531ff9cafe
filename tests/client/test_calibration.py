"""ECM, normalisation, run plan and the calibration cache on hand-made records (no training)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from autoresearch.client import calibration
from autoresearch.client.calibration import (
    CalibrationError,
    ecm,
    estimate_seconds,
    load_cached,
    normalise,
    plan_runs,
    residuals,
)
from autoresearch.client.fitting import bpb_at, min_detectable_delta
from autoresearch.protocol import (
    CalibrationPoint,
    CalibrationRecord,
    CurveFit,
    KeyPair,
    SoftwareVersions,
    TrackSpec,
    record_id,
    sha256_hex,
    sign,
    utc_now,
    verify,
)

HW = "cpu:Test CPU:2"
FIT = CurveFit(a=2.5, b=0.6, c=0.95, rmse=1e-4)
T = 300.0


def _track(name: str = "unit", harness: str = "h1") -> TrackSpec:
    return TrackSpec.build(
        name=name,
        description="unit-test track",
        dataset="none",
        split="val",
        data_sha256=None,
        tokenizer="bytes",
        vocab_size=256,
        max_seq_len=64,
        eval_tokens=1024,
        time_budget=T,
        harness_version=harness,
        reference_sha256="0" * 64,
        device="cpu",
    )


def _record(track: TrackSpec, *, sigma: float = 0.002, reference_ecm: float = 1.0, hw: str = HW) -> CalibrationRecord:
    budgets = [75.0, 150.0, 300.0, 300.0, 600.0]
    points = [
        CalibrationPoint(
            budget_seconds=b, seed=i, val_bpb=bpb_at(FIT, b), training_seconds=b, num_steps=10, tokens_per_second=1e3
        )
        for i, b in enumerate(budgets)
    ]
    return CalibrationRecord(
        track=track.id,
        hardware_class=hw,
        harness_version=track.harness_version,
        software=SoftwareVersions(python="3.11"),
        reference_sha256="0" * 64,
        reference_ecm=reference_ecm,
        time_budget_seconds=T,
        points=points,
        fit=FIT,
        sigma=sigma,
        min_budget_seconds=75.0,
        max_budget_seconds=600.0,
        tokens_per_second=1e3,
        matmul_tflops=0.1,
        created_at=utc_now(),
    )


# -- ECM ------------------------------------------------------------------------------------------


def test_ecm_is_one_at_the_reference_full_budget() -> None:
    cal = _record(_track())
    value, extrapolated = ecm(cal, bpb_at(FIT, T))
    assert value == pytest.approx(1.0, rel=1e-9)
    assert extrapolated is False


def test_ecm_inside_range_is_exact() -> None:
    cal = _record(_track())
    value, extrapolated = ecm(cal, bpb_at(FIT, 450.0))
    assert value == pytest.approx(1.5, rel=1e-9)
    assert not extrapolated


@pytest.mark.parametrize("seconds", [10.0, 74.0, 601.0, 5000.0])
def test_ecm_outside_range_is_flagged_never_clamped(seconds: float) -> None:
    cal = _record(_track())
    value, extrapolated = ecm(cal, bpb_at(FIT, seconds))
    assert extrapolated is True
    assert value == pytest.approx(seconds / T, rel=1e-9)


@pytest.mark.parametrize("val_bpb", [FIT.c, FIT.c - 0.01, 0.5])
def test_ecm_undefined_below_the_floor(val_bpb: float) -> None:
    assert ecm(_record(_track()), val_bpb) == (None, True)


def test_ecm_chains_through_reference_ecm() -> None:
    cal = _record(_track(), reference_ecm=3.0)
    value, _ = ecm(cal, bpb_at(FIT, 600.0))
    assert value == pytest.approx(6.0, rel=1e-9)


# -- normalise ------------------------------------------------------------------------------------


def test_normalise_full() -> None:
    cal = _record(_track(), sigma=0.002)
    parent, child = bpb_at(FIT, 300.0), bpb_at(FIT, 450.0)
    n = normalise(cal, child, parent)
    assert n.delta_val_bpb == pytest.approx(child - parent)
    assert n.delta_val_bpb < 0
    assert n.z == pytest.approx((parent - child) / 0.002)
    assert n.sigma == 0.002
    assert n.ecm == pytest.approx(1.5)
    assert n.ecm_parent == pytest.approx(1.0)
    assert n.gain == pytest.approx(1.5)
    assert n.ecm_extrapolated is False


def test_normalise_uses_given_parent_ecm() -> None:
    n = normalise(_record(_track()), bpb_at(FIT, 450.0), bpb_at(FIT, 300.0), parent_ecm=0.5)
    assert n.ecm_parent == 0.5
    assert n.gain == pytest.approx(3.0)


def test_normalise_flags_extrapolated_parent() -> None:
    n = normalise(_record(_track()), bpb_at(FIT, 450.0), bpb_at(FIT, 20.0))
    assert n.ecm_extrapolated is True
    assert n.gain == pytest.approx(450.0 / 20.0)


def test_normalise_without_calibration_gives_delta_only() -> None:
    n = normalise(None, 1.10, 1.12)
    assert n.delta_val_bpb == pytest.approx(-0.02)
    assert (n.z, n.ecm, n.gain, n.sigma) == (None, None, None, None)


def test_normalise_crashed_child() -> None:
    n = normalise(_record(_track()), None, bpb_at(FIT, 300.0))
    assert (n.delta_val_bpb, n.z, n.ecm, n.gain) == (None, None, None, None)
    assert n.ecm_parent == pytest.approx(1.0)


def test_normalise_zero_sigma_gives_no_z() -> None:
    n = normalise(_record(_track(), sigma=0.0), 1.10, 1.12)
    assert n.z is None
    assert n.delta_val_bpb == pytest.approx(-0.02)


def test_normalise_below_floor_child() -> None:
    n = normalise(_record(_track()), 0.9, bpb_at(FIT, 300.0))
    assert n.ecm is None and n.gain is None and n.ecm_extrapolated is True
    assert n.z is not None and n.z > 0


# -- plan and estimate ----------------------------------------------------------------------------


def test_plan_runs_budgets_and_seeds() -> None:
    runs = plan_runs(300.0, seeds=3)
    assert [(r.budget_seconds, r.seed) for r in runs] == [
        (75.0, 0), (150.0, 0), (300.0, 0), (300.0, 1), (300.0, 2), (600.0, 0)
    ]
    with pytest.raises(CalibrationError, match="at least 2 seeds"):
        plan_runs(300.0, seeds=1)


def test_estimate_for_the_gpu_track_is_about_25_minutes() -> None:
    minutes = estimate_seconds(300.0, 2) / 60
    assert 23.75 < minutes < 30  # 4.75 × 300 s of training plus start-up and evaluation


# -- residuals --------------------------------------------------------------------------------------


def test_residuals_per_budget() -> None:
    rows = residuals(_record(_track()))
    assert [r.budget_seconds for r in rows] == [75.0, 150.0, 300.0, 600.0]
    assert [r.runs for r in rows] == [1, 1, 2, 1]
    assert all(abs(r.residual) < 1e-12 for r in rows)


# -- cache ----------------------------------------------------------------------------------------


def test_cache_round_trip_and_key_misses() -> None:
    track = _track()
    record = _record(track)
    keys = KeyPair.generate()
    path = calibration._store(sign(record, keys), track, HW)
    assert path.parent == calibration.cache_dir()
    assert load_cached(track, HW) == record
    env = calibration.load_cached_envelope(track, HW)
    assert env is not None and verify(env).keyid == keys.key_id
    # any change of hardware class, track or harness version is a miss
    assert load_cached(track, "cpu:Other CPU:8") is None
    assert load_cached(_track(name="other"), HW) is None
    assert load_cached(_track(harness="h2"), HW) is None


def test_cache_file_tampered_is_a_miss(caplog: pytest.LogCaptureFixture) -> None:
    track = _track()
    path = calibration._store(sign(_record(track), KeyPair.generate()), track, HW)
    env = json.loads(path.read_text())
    env["signatures"][0]["sig"] = env["signatures"][0]["sig"][::-1]
    path.write_text(json.dumps(env))
    assert load_cached(track, HW) is None
    assert "ignoring calibration cache" in caplog.text


def test_cache_under_wrong_key_is_a_miss(caplog: pytest.LogCaptureFixture) -> None:
    track = _track()
    other = _record(track, hw="cpu:Other CPU:8")
    calibration._store(sign(other, KeyPair.generate()), track, HW)  # filed under HW by mistake
    assert load_cached(track, HW) is None
    assert "another track or hardware class" in caplog.text


def test_reusable_matches_the_named_reference(tmp_path: Path) -> None:
    track = _track()
    best = tmp_path / "best.py"
    best.write_text("X = 1\n")
    record = _record(track).model_copy(update={"reference_sha256": sha256_hex("X = 1\n"), "reference_ecm": 2.0})
    calibration._store(sign(record, KeyPair.generate()), track, HW)
    assert calibration.reusable(track, HW) == record  # no reference named: the latest calibration
    assert calibration.reusable(track, HW, reference=best, reference_ecm=2.0) == record
    assert calibration.reusable(track, HW, reference=best, reference_ecm=3.0) is None
    best.write_text("X = 2\n")
    assert calibration.reusable(track, HW, reference=best, reference_ecm=2.0) is None


# -- CLI: --show on a cached record ---------------------------------------------------------------


def _cache_tiny() -> CalibrationRecord:
    from autoresearch.trainer import tracks

    spec = tracks.get_track("tiny")
    record = _record(spec, hw=calibration.machine_hardware_class(spec))
    record = record.model_copy(update={"time_budget_seconds": spec.time_budget})
    calibration._store(sign(record, KeyPair.generate()), spec, record.hardware_class)
    return record


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).parent / "autoresearch"
    return subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=120)


def test_show_without_calibration_is_a_clear_error() -> None:
    proc = _cli("calibrate", "--track", "tiny", "--show")
    assert proc.returncode == 1
    assert "no calibration of tiny-" in proc.stderr
    assert "hint: run one with: autoresearch calibrate --track tiny" in proc.stderr


def test_show_prints_fit_sigma_residuals_and_plot() -> None:
    record = _cache_tiny()
    proc = _cli("calibrate", "--track", "tiny", "--show")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert f"calibration {record_id(record)}" in out
    assert "val_bpb(t) = 0.9500 + 2.5·t^(−0.6000)" in out
    assert "seed noise σ:   2.00e-03" in out
    assert "valid budgets:  75–600 s" in out
    assert "min detectable Δ: 6.38e-03" in out  # σ · (2 + 0.8416·√2)
    assert out.count("+0.00e+00") == 4  # one residual row per budget
    assert out.count("●") >= 4 and "·" in out


def test_show_json() -> None:
    record = _cache_tiny()
    proc = _cli("calibrate", "--track", "tiny", "--show", "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["id"] == record_id(record)
    assert CalibrationRecord.model_validate(data["record"], strict=False) == record
    assert [r["budget_seconds"] for r in data["residuals"]] == [75.0, 150.0, 300.0, 600.0]
    assert data["min_detectable_delta"]["val_bpb"] == pytest.approx(min_detectable_delta(0.002, 2.0))


@pytest.mark.skipif(importlib.util.find_spec("matplotlib") is not None, reason="matplotlib is installed")
def test_png_without_matplotlib_says_how_to_get_it() -> None:
    _cache_tiny()
    proc = _cli("calibrate", "--track", "tiny", "--show", "--png", "plot.png")
    assert proc.returncode == 1
    assert "needs matplotlib" in proc.stderr and "pip install matplotlib" in proc.stderr


def test_cached_calibration_is_reused_without_runs() -> None:
    record = _cache_tiny()
    proc = _cli("calibrate", "--track", "tiny", "--json")
    assert proc.returncode == 0, proc.stderr
    assert "using the cached calibration" in proc.stderr
    assert json.loads(proc.stdout)["id"] == record_id(record)
    assert not (calibration.cache_dir() / "runs").exists()


def test_render_plot_marks_every_budget() -> None:
    from autoresearch.client.commands.calibrate import render_plot

    text = render_plot(_record(_track()), width=40, height=10)
    lines = text.splitlines()
    assert len(lines) == 13
    assert sum(line.count("●") for line in lines[:10]) == 4  # the two 300 s seeds share one cell
    # the curve falls: the first column's dot is above the last column's
    rows = [i for i, line in enumerate(lines[:10]) if "│" in line]
    first = next(i for i in rows if lines[i].split("│")[1][:1] in "·●")
    last = next(i for i in rows if lines[i].split("│")[1][-1:] in "·●")
    assert first < last


def test_gpu_track_announces_the_time_and_asks_first() -> None:
    exe = Path(sys.executable).parent / "autoresearch"
    proc = subprocess.run(
        [str(exe), "calibrate", "--track", "climbmix"], input="n\n", capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 1
    assert "8 reference runs" in proc.stderr and "this takes about 44 minutes" in proc.stderr  # DEFAULT_SEEDS = 5
    assert "Start the calibration?" in proc.stderr and "calibration not started" in proc.stderr
    assert not calibration.cache_dir().exists()  # nothing ran, nothing cached


def test_matmul_throughput_on_cpu_is_positive() -> None:
    assert calibration.measure_matmul_tflops("cpu", size=64, seconds=0.05) > 0


@pytest.mark.gpu
def test_matmul_throughput_on_cuda() -> None:
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    # any CUDA GPU this project targets does well over 10 TFLOP/s of dense bf16
    assert calibration.measure_matmul_tflops("cuda") > 10
