"""Hostile-hub figures: how long `join` waits for a dripping hub before it carries on solo, and the
client's peak memory against a 300 MB answer.

Prints JSON. Both run against tests/client/hostile_hub.py (the real hub app behind an attacking
ASGI layer, uvicorn on loopback):

- ``join``: ``autoresearch join URL --init WS --track tiny --max-experiments N --no-calibrate --yes``
  as a real subprocess (fresh home and key), against an honest hub, a closed port and a hub that
  answers every API request with one byte every ``--drip-interval`` seconds (for up to 10 minutes).
  Per case: seconds from start to the "carrying on solo" line, to the first training start, and in
  all; the exit code.
- ``memory``: in a fresh process, ``HubClient.leaderboard()`` against a 300 MB answer (streamed, no
  Content-Length): peak RSS growth (MiB, Linux ``VmHWM`` after resetting it through
  ``/proc/self/clear_refs``) and whether it was refused; and, for contrast, a plain
  ``httpx.get(...).content`` of the same answer (what an unbounded client holds).

Usage: ``python bench/hostile_hub_bench.py [--experiments N] [--drip-interval S] [--skip-join]``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "client"))  # the hostile hub helper

from hostile_hub import HostileHub  # noqa: E402

MAIN = "from autoresearch.client.cli import main; main()"

MEMORY_PROBE = """
import json, sys, time
from pathlib import Path
import httpx
from autoresearch.client.errors import HubError
from autoresearch.client.hubclient import HubClient

def status(field):  # kB, from /proc/self/status
    line = next(l for l in Path("/proc/self/status").read_text().splitlines() if l.startswith(field + ":"))
    return int(line.split()[1])

url, mode = sys.argv[1], sys.argv[2]
Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM) to the current RSS
before = status("VmRSS")
start = time.monotonic()
outcome = "accepted"
if mode == "hubclient":
    with HubClient(url, deadline_seconds=600) as client:
        try:
            client.leaderboard("tiny")
        except HubError as exc:
            outcome = type(exc).__name__ + ": " + str(exc)
else:
    body = httpx.get(url + "/api/v1/tracks/tiny/leaderboard", timeout=600).content
    outcome = f"read {len(body)} bytes"
peak = status("VmHWM")
print(json.dumps({"rss_before_mib": round(before / 1024, 1), "peak_rss_mib": round(peak / 1024, 1),
                  "peak_growth_mib": round((peak - before) / 1024, 1),
                  "seconds": round(time.monotonic() - start, 2), "outcome": outcome}))
"""


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTORESEARCH_")}
    env.update(AUTORESEARCH_HOME=str(home), NO_COLOR="1", COLUMNS="200", PYTHONUNBUFFERED="1")
    return env


def _join(url: str, work: Path, experiments: int) -> dict[str, object]:
    """Run `autoresearch join` and time the lines that matter (seconds since start)."""
    home = work / "home"
    home.mkdir(parents=True)
    args = [
        sys.executable, "-c", MAIN, "join", url, "--init", str(work / "ws"), "--track", "tiny", "--name", "bench",
        "--yes", "--no-calibrate", "--proposer", "offline", "--max-experiments", str(experiments), "--adopt-every", "0",
    ]  # fmt: skip
    start = time.monotonic()
    proc = subprocess.Popen(args, env=_env(home), stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    marks: dict[str, float] = {}
    lines: list[str] = []

    def read_stderr() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)
            now = round(time.monotonic() - start, 1)
            if "carrying on solo" in line:
                marks.setdefault("solo_after_s", now)
            if re.search(r"\[0001\] start", line):
                marks.setdefault("first_training_start_s", now)

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    proc.wait(timeout=1800)
    reader.join(timeout=10)
    solo_lines = [line.strip()[:300] for line in lines if "carrying on solo" in line]
    return {
        "exit_code": proc.returncode,
        **marks,
        "total_s": round(time.monotonic() - start, 1),
        "solo_lines": solo_lines,
        "tracebacks": sum("Traceback" in line for line in lines),
    }


def _closed_port() -> str:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return f"http://127.0.0.1:{port}"


def _memory(hub: HostileHub) -> dict[str, object]:
    hub.calm()
    hub.attack(r"/leaderboard$", "huge")
    out = {}
    for mode in ("hubclient", "plain_httpx"):
        proc = subprocess.run([sys.executable, "-c", MEMORY_PROBE, hub.url, mode], capture_output=True, text=True, timeout=900)
        out[mode] = json.loads(proc.stdout) if proc.returncode == 0 else {"error": proc.stderr[-500:]}
    hub.calm()
    return {"answer_bytes": hub.huge_bytes, **out}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--experiments", type=int, default=2, help="--max-experiments of each join")
    parser.add_argument("--drip-interval", type=float, default=3.0, help="seconds between dripped bytes")
    parser.add_argument("--skip-join", action="store_true")
    args = parser.parse_args()
    result: dict[str, object] = {"machine": {"cpus": os.cpu_count(), "load_avg_1m": round(os.getloadavg()[0], 1)}}
    with tempfile.TemporaryDirectory(prefix="ar-hostile-bench-") as tmp:
        root = Path(tmp)
        with HostileHub(f"sqlite:///{root / 'hub.db'}") as hub:
            result["memory"] = _memory(hub)
            if not args.skip_join:
                joins: dict[str, object] = {"experiments": args.experiments, "drip_interval_s": args.drip_interval}
                joins["honest_hub"] = _join(hub.url, root / "honest", args.experiments)
                joins["closed_port"] = _join(_closed_port(), root / "closed", args.experiments)
                hub.drip_interval, hub.drip_seconds = args.drip_interval, 600.0
                hub.attack(r"^(GET|POST|PUT) /api/v1/", "drip")
                joins["dripping_hub"] = _join(hub.url, root / "drip", args.experiments)
                hub.calm()
                result["join"] = joins
    result["machine"]["load_avg_1m_after"] = round(os.getloadavg()[0], 1)  # type: ignore[index]
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
