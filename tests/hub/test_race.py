"""Racing claims across two hub processes (real uvicorn on loopback) on one database."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from threading import Barrier

import httpx
import pytest

from autoresearch.protocol import ClaimAnswer, KeyPair

from . import factory

ROOT = Path(__file__).resolve().parents[2]
CLAIMANTS = 50


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def two_servers(db_url: str, tmp_path: Path) -> Iterator[list[str]]:
    """Two uvicorn processes serving the same database; yields their base URLs."""
    env = {**os.environ, "AUTORESEARCH_HUB_DB_URL": db_url, "AUTORESEARCH_HUB_JSON_LOGS": "1",
           "AUTORESEARCH_HUB_QUOTA_REGISTRATIONS_PER_HOUR": "1000"}  # 50 keys from one address
    procs, urls = [], []
    for i in range(2):
        port = free_port()
        log = (tmp_path / f"hub{i}.log").open("wb")
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "uvicorn", "--factory", "tests.hub.testserver:build", "--host", "127.0.0.1",
                 "--port", str(port), "--no-access-log", "--log-level", "warning"],
                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
            )
        )
        urls.append(f"http://127.0.0.1:{port}")
    try:
        deadline = time.monotonic() + 60
        for url in urls:
            while True:
                try:
                    if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise AssertionError(f"hub at {url} did not start: {(tmp_path / 'hub0.log').read_text()[-2000:]}")
                time.sleep(0.2)
        yield urls
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=30)


@pytest.mark.slow
def test_exactly_one_of_racing_claims_is_granted(two_servers: list[str]) -> None:
    track = factory.make_track()
    child = factory.with_constant(factory.REFERENCE, "MATRIX_LR", 0.05)
    keys = [KeyPair.generate() for _ in range(CLAIMANTS)]
    with httpx.Client(timeout=60) as http:
        for i, k in enumerate(keys):
            r = http.post(f"{two_servers[i % 2]}/api/v1/clients", content=factory.envelope_bytes(factory.registration(k, f"c{i}"), k))
            assert r.status_code == 201, r.text
    bodies = [factory.envelope_bytes(factory.claim(track, factory.REFERENCE, child), k) for k in keys]
    barrier = Barrier(CLAIMANTS)

    def fire(i: int) -> ClaimAnswer:
        with httpx.Client(timeout=120) as http:
            barrier.wait()
            r = http.post(f"{two_servers[i % 2]}/api/v1/claims", content=bodies[i])
            assert r.status_code == 200, r.text
            return ClaimAnswer.model_validate_json(r.content)

    with ThreadPoolExecutor(CLAIMANTS) as pool:
        answers = list(pool.map(fire, range(CLAIMANTS)))
    granted = [a for a in answers if a.status == "granted"]
    assert len(granted) == 1
    winner = granted[0].holder_key_id
    assert all(a.status == "held" and a.holder_key_id == winner for a in answers if a is not granted[0])


@pytest.mark.slow
def test_concurrent_ingest_on_two_processes_stores_every_record(two_servers: list[str]) -> None:
    track = factory.make_track()
    keys = [KeyPair.generate() for _ in range(4)]
    with httpx.Client(timeout=60) as http:
        for i, k in enumerate(keys):
            assert http.post(f"{two_servers[0]}/api/v1/clients", content=factory.envelope_bytes(factory.registration(k, f"i{i}"), k)).status_code == 201
    bodies = [
        factory.envelope_bytes(
            factory.experiment(track, factory.REFERENCE, factory.with_constant(factory.REFERENCE, "EMBED_LR", 0.1 + n / 10)), keys[n % 4]
        )
        for n in range(16)
    ]

    def send(n: int) -> int:
        with httpx.Client(timeout=120) as http:
            return http.post(f"{two_servers[n % 2]}/api/v1/experiments", content=bodies[n]).status_code

    with ThreadPoolExecutor(16) as pool:
        statuses = list(pool.map(send, range(16)))
    assert statuses == [201] * 16
    page = httpx.get(f"{two_servers[1]}/api/v1/experiments", params={"limit": 100}).json()
    assert len(page["items"]) == 16

    same = factory.envelope_bytes(factory.experiment(track, factory.REFERENCE, factory.with_constant(factory.REFERENCE, "DEPTH", 5)), keys[0])
    barrier = Barrier(8)

    def resend(n: int) -> int:
        with httpx.Client(timeout=120) as http:
            barrier.wait()
            return http.post(f"{two_servers[n % 2]}/api/v1/experiments", content=same).status_code

    with ThreadPoolExecutor(8) as pool:
        again = sorted(pool.map(resend, range(8)))
    assert again == [200] * 7 + [201]
