"""The research simulator runs a small configuration of every strategy and prints the pinned JSON."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "search_sim.py"


@pytest.fixture(scope="module")
def sim() -> ModuleType:
    spec = importlib.util.spec_from_file_location("search_sim", BENCH)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["search_sim"] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def test_json_has_the_pinned_keys(sim: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    assert sim.main(["--json", "--seeds", "2", "--agents", "4", "--gpu-hours", "4"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result["strategies"]) == {"independent", "global_best", "hub"}
    for figures in result["strategies"].values():
        assert {"gpu_hours_to_target", "duplicate_rate", "false_keeps", "best_improvement"} <= set(
            figures
        )
        assert 0.0 <= figures["duplicate_rate"] <= 1.0
        assert figures["spread"]["best_improvement"]["n"] == 2


def test_deterministic_per_seed(sim: ModuleType) -> None:
    first = sim.simulate("hub", 3, n_agents=4, gpu_hours=3.0, target_fraction=0.5)
    again = sim.simulate("hub", 3, n_agents=4, gpu_hours=3.0, target_fraction=0.5)
    assert first == again
    assert first["runs"] > 10


def test_hub_uses_the_real_engine_and_claims(sim: ModuleType) -> None:
    hub = sim.simulate("hub", 1, n_agents=6, gpu_hours=6.0, target_fraction=0.5)
    solo = sim.simulate("independent", 1, n_agents=6, gpu_hours=6.0, target_fraction=0.5)
    assert hub["duplicate_rate"] == 0.0  # claims: nobody runs an experiment already done or held
    assert solo["runs"] > 0 and hub["runs"] > 0


def test_sources_round_trip_through_directions(sim: ModuleType) -> None:
    land = sim.Landscape.generate(__import__("random").Random(0))
    sources = sim.Sources(land)
    ref = sim.State.reference()
    child = ref.apply(("up", 0)).apply(("flip", 2))
    assert sources.parse(sources.render(child)) == child
    from autoresearch.protocol.source import extract_directions

    assert extract_directions(sources.render(ref), sources.render(child)) == sorted(
        [f"{sim.PARAM_NAMES[0]} ↑", sim.SWITCH_NAMES[2]]
    )


def test_table_output(sim: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    sim.main(["--seeds", "1", "--agents", "3", "--gpu-hours", "2"])
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith("strategy") and "global_best" in out and "hub" in out
