"""Cost of ``GET /suggestions`` on a hub the research simulator filled (figures for docs/suggestions.md).

Runs one seeded ``hub`` community of ``bench/search_sim.py`` for ``--gpu-hours`` (12 agents by
default), then, on the database it left, times ``--repeat`` calls of each step of the route's
function :func:`autoresearch.hub.suggestions.for_client` (in-process, no HTTP) and prints the
median and max in milliseconds::

    .venv/bin/python bench/suggestions_bench.py --gpu-hours 40 --repeat 30

``_replications`` is the store's per-group replication lookup that ``recent_kept`` (the route's
kept experiments) pays for every view.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import search_sim  # noqa: E402

from autoresearch.hub import store  # noqa: E402
from autoresearch.hub.store import replications  # noqa: E402
from autoresearch.hub.suggestions import KEPT_FOR_SUGGESTIONS  # noqa: E402


def _time(repeat: int, call: Callable[[], object]) -> tuple[float, float]:
    """Median and max wall milliseconds of ``repeat`` calls (one untimed warm-up call first)."""
    call()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        call()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times), max(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--gpu-hours", type=float, default=40.0)
    parser.add_argument("--agents", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args()
    rows: list[tuple[str, float, float]] = []

    def measure(com: search_sim.Community) -> None:
        hub = com.hub
        assert hub is not None
        hw = search_sim.HARDWARE[0].name
        key_id = hub.keys[com.agents[0].name].key_id
        now = search_sim.now_of(args.gpu_hours)
        session, track = hub.session, hub.spec.id
        kept = store.recent_kept(session, track, KEPT_FOR_SUGGESTIONS)
        session.rollback()
        groups = {(v.record.track, v.record.parent_canonical_sha256, v.record.child_canonical_sha256) for v in kept}
        print(f"database: {len(com.metrics.experiments)} experiments, {len(kept)} kept views, {len(groups)} groups",
              file=sys.stderr)
        steps: list[tuple[str, Callable[[], object]]] = [
            ("for_client (the route)", lambda: hub.suggestions(hw, key_id, now)),
            ("recent_kept", lambda: store.recent_kept(session, track, KEPT_FOR_SUGGESTIONS)),
            ("_replications", lambda: replications._replications(session, groups)),
            ("community_best", lambda: store.community_best(session, hub.spec, hub.reference, hw)),
            ("direction_stats", lambda: store.direction_stats(session, track)),
        ]
        for name, call in steps:
            median, worst = _time(args.repeat, call)
            session.rollback()
            rows.append((name, median, worst))

    search_sim.simulate("hub", args.seed, n_agents=args.agents, gpu_hours=args.gpu_hours, target_fraction=0.5,
                        inspect=measure)
    print(f"{'step':<24} {'median ms':>10} {'max ms':>10}")
    for name, median, worst in rows:
        print(f"{name:<24} {median:>10.1f} {worst:>10.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
