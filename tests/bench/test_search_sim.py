"""The research simulator: pinned JSON, determinism, the calibrated landscape, and that its hub
strategy sees exactly what the shipped routes serve for the same database."""

from __future__ import annotations

import importlib.util
import json
import random
import statistics
import sys
from pathlib import Path
from types import ModuleType

import pytest
from fastapi.testclient import TestClient

from autoresearch.hub.app import create_app
from autoresearch.hub.catalog import TrackCatalog
from autoresearch.hub.settings import HubSettings
from autoresearch.hub.suggestions import TIME_BUCKET_SECONDS
from autoresearch.protocol import CommunityBest, SuggestionList, utc_now

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
    assert sim.main(["--json", "--seeds", "2", "--agents", "4", "--gpu-hours", "2", "--workers", "1"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result["strategies"]) == {"independent", "global_best", "hub"}
    for figures in result["strategies"].values():
        assert {"gpu_hours_to_target", "duplicate_rate", "false_keeps", "best_improvement", "gpu_hours_to_50pct",
                "gpu_hours_to_75pct_interval", "keep_rate_early", "keep_rate_late", "overhead_share",
                "false_community_bests"} <= set(figures)
        assert 0.0 <= figures["duplicate_rate"] <= 1.0
        assert figures["seeds"] == 2
    assert "ratio_to_global_best_50pct" in result["strategies"]["hub"] or result["strategies"]["hub"]["gpu_hours_to_50pct_reached"] == 0
    assert len(result["landscape"]["solo_h100_keep_rate_per_100_runs"]) == 7


def test_deterministic_per_seed(sim: ModuleType) -> None:
    first = sim.simulate("hub", 3, n_agents=4, gpu_hours=2.0, target_fraction=0.5)
    again = sim.simulate("hub", 3, n_agents=4, gpu_hours=2.0, target_fraction=0.5)
    assert first == again
    assert first["runs"] > 5


def test_the_true_val_bpb_never_crosses_the_floor(sim: ModuleType) -> None:
    rng = random.Random(0)
    for seed in range(30):
        land = sim.Landscape.generate(random.Random(seed))
        state = sim.State.reference()
        for _ in range(300):  # a random walk far beyond any optimum
            state = state.apply(rng.choice(sim.ALL_ACTIONS))
            assert all(land.quality(state, c) <= sim.HEADROOM for c in range(len(sim.HARDWARE)))
        assert 0.0 < land.reachable() <= sim.HEADROOM


def test_keep_rate_decays_like_long_real_runs(sim: ModuleType) -> None:
    curves = [sim.solo_keep_curve(seed, runs=300) for seed in range(3)]
    early = statistics.fmean(c[0] for c in curves)
    late = statistics.fmean(c[-1] for c in curves)
    assert early >= 0.10  # real: ≈15 % at first
    assert late <= 0.04  # real: 1.5–3 % late
    assert late < early / 3


def test_simulated_hub_serves_what_the_routes_serve(sim: ModuleType) -> None:
    """Same database → the same suggestions and community best from the ASGI app as the simulator's
    hub strategy used; and claims kept every run unique."""
    checked: dict[str, int] = {"lists": 0, "items": 0}

    def inspect(com: object) -> None:
        hub = com.hub  # type: ignore[attr-defined]
        app = create_app(HubSettings(db_url=hub.db_url), catalog=TrackCatalog.of([(hub.spec, lambda: hub.reference)]),
                         pages=False)
        try:
            with TestClient(app) as client:
                best = CommunityBest.model_validate_json(client.get(f"/api/v1/tracks/{hub.spec.id}/best").text)
                assert best == hub.best(None) and best.experiment is not None
                kinds: set[str] = set()
                for agent in com.agents:  # type: ignore[attr-defined]
                    cls, key = sim.HARDWARE[agent.cls].name, hub.keys[agent.name].key_id
                    for _ in range(3):  # the Thompson stream is per 10-minute bucket: compare within one
                        before = utc_now()
                        served = client.get(f"/api/v1/tracks/{hub.spec.id}/suggestions",
                                            params={"hardware_class": cls, "client": key})
                        mine = hub.suggestions(cls, key, before)
                        if before.timestamp() // TIME_BUCKET_SECONDS == utc_now().timestamp() // TIME_BUCKET_SECONDS:
                            break
                    assert served.status_code == 200, served.text
                    items = SuggestionList.model_validate_json(served.text).items
                    assert items == mine
                    kinds |= {i.kind for i in items}
                    checked["lists"] += 1
                    checked["items"] += len(items)
                assert {"exploit", "explore"} <= kinds
        finally:
            app.state.hub.engine.dispose()

    figures = sim.simulate("hub", 1, n_agents=6, gpu_hours=5.0, target_fraction=0.5, inspect=inspect)
    assert checked["lists"] == 6 and checked["items"] >= 30
    assert figures["duplicate_rate"] == 0.0  # the store's claims: nobody ran an experiment done or held


def test_baselines_share_the_proposer_and_skip_published_runs(sim: ModuleType) -> None:
    swarm = sim.simulate("global_best", 2, n_agents=6, gpu_hours=5.0, target_fraction=0.5)
    solo = sim.simulate("independent", 2, n_agents=6, gpu_hours=5.0, target_fraction=0.5)
    assert swarm["duplicate_rate"] == 0.0  # shared results and 15-minute claims
    assert solo["duplicate_rate"] > 0.0  # alone, agents repeat each other
    assert swarm["hours_by_source"]["adopt"] > 0.0


def test_sources_round_trip_through_directions(sim: ModuleType) -> None:
    land = sim.Landscape.generate(random.Random(0))
    sources = sim.Sources(land)
    ref = sim.State.reference()
    child = ref.apply(("up", 0)).apply(("flip", 2))
    assert sources.parse(sources.render(child)) == child
    from autoresearch.protocol.source import extract_directions

    assert extract_directions(sources.render(ref), sources.render(child)) == sorted(
        [f"{sim.PARAM_NAMES[0]} ↑", sim.SWITCH_NAMES[2]]
    )
    with pytest.raises(ValueError, match="not a simulated train.py"):
        sources.parse("X = 1\n")


def test_unknown_strategy_is_named(sim: ModuleType) -> None:
    with pytest.raises(ValueError, match="unknown strategy 'hubb'"):
        sim.simulate("hubb", 0, n_agents=2, gpu_hours=1.0, target_fraction=0.5)


def test_table_output(sim: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    sim.main(["--seeds", "1", "--agents", "3", "--gpu-hours", "1", "--workers", "1"])
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith("strategy") and "global_best" in out and "hub" in out
    reference = next(line for line in out.splitlines() if line.startswith("global_best"))
    assert "never" not in reference.split(")")[2] and "—" in reference  # no ratio of itself to itself


def test_client_sigma_is_a_five_seed_estimate(sim: ModuleType) -> None:
    """The σ a simulated client calibrates spreads like the sample std of DEFAULT_SEEDS = 5 seeds
    (σ̂/σ ~ √(χ²₄/4): 5 % and 95 % quantiles 0.42 and 1.54), not like a 2-seed σ·|N(0, 1)| (0.06 and 1.96)."""
    from autoresearch.client.calibration import DEFAULT_SEEDS

    assert DEFAULT_SEEDS == 5  # the quantiles below are those of 4 degrees of freedom
    rng = random.Random(3)
    ratios = sorted(sim.calibrated_sigma(0.0005, rng) / 0.0005 for _ in range(4000))
    assert 0.36 < ratios[200] < 0.48
    assert 1.45 < ratios[3800] < 1.64
    com = sim.Community("global_best", sim.Landscape.generate(random.Random(0)), 12, 0)
    assert all(0.05 <= a.sigma_estimate / sim.HARDWARE[a.cls].sigma < 3 for a in com.agents)


def test_scenario_scales_noise_and_helpful_share_then_restores(sim: ModuleType) -> None:
    sigmas = [h.sigma for h in sim.HARDWARE]
    with sim.scenario(noise=2.0, helpful=0.0):
        assert [h.sigma for h in sim.HARDWARE] == [2 * s for s in sigmas]
        flat = sim.Landscape.generate(random.Random(1))
        assert all(o == [0.0] * len(sim.HARDWARE) for o in flat.optima)  # nothing left to tune
    with sim.scenario(helpful=1.0):
        assert all(any(v != 0 for v in o) for o in sim.Landscape.generate(random.Random(1)).optima)
    assert [h.sigma for h in sim.HARDWARE] == sigmas and sim.HELPFUL_SHARE == 0.40
    with pytest.raises(ValueError, match="helpful"):
        with sim.scenario(helpful=1.5):
            pass
