"""Durable outbox: order, idempotency, backoff, unknown_parent upload, rejections, kill -9."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from fed_fakes import PARENT, FakeHub, experiment_record, registration

from autoresearch.client.hubclient import HubClient
from autoresearch.client.outbox import Outbox, OutboxSender
from autoresearch.protocol import KeyPair, sha256_hex, sign


@pytest.fixture()
def keys() -> KeyPair:
    return KeyPair.generate()


def _hub_client(hub: FakeHub) -> HubClient:
    return HubClient("http://hub.test", http=httpx.Client(transport=httpx.MockTransport(hub)))


def _experiments(keys: KeyPair, n: int) -> list:
    return [sign(experiment_record(val_bpb=1.0 + i / 10), keys) for i in range(n)]


def test_delivers_in_order_and_uploads_unknown_parent_once(tmp_path: Path, keys: KeyPair) -> None:
    hub = FakeHub()
    outbox = Outbox(tmp_path / "o.sqlite")
    outbox.enqueue("client", registration(keys))
    envs = _experiments(keys, 3)
    ids = [outbox.enqueue("experiment", env, sources={sha256_hex(PARENT): PARENT}) for env in envs]
    report = outbox.send_pending(_hub_client(hub))
    assert (report.sent, report.pending, report.rejected) == (4, 0, [])
    assert hub.experiment_ids() == ids
    assert hub.puts == [sha256_hex(PARENT)]
    assert outbox.counts() == {"pending": 0, "sent": 4, "rejected": 0}


def test_enqueue_is_idempotent_and_resend_counts_as_delivered(tmp_path: Path, keys: KeyPair) -> None:
    hub = FakeHub(known_sources={sha256_hex(PARENT)})
    outbox = Outbox(tmp_path / "o.sqlite")
    outbox.enqueue("client", registration(keys))
    env = sign(experiment_record(), keys)
    first = outbox.enqueue("experiment", env)
    assert outbox.enqueue("experiment", env) == first
    assert outbox.counts()["pending"] == 2
    # the hub already holds the record (e.g. sent before a crash that lost the 'sent' mark)
    _hub_client(hub).register(registration(keys))
    _hub_client(hub).submit_experiment(env)
    report = outbox.send_pending(_hub_client(hub))
    assert report.already_there == 1 and report.sent == 1
    assert list(hub.records).count(first) == 1


def test_down_hub_keeps_order_backs_off_and_delivers_later(tmp_path: Path, keys: KeyPair) -> None:
    hub = FakeHub(down=True, known_sources={sha256_hex(PARENT)})
    outbox = Outbox(tmp_path / "o.sqlite", max_backoff=60)
    outbox.enqueue("client", registration(keys))
    ids = [outbox.enqueue("experiment", env) for env in _experiments(keys, 2)]
    report = outbox.send_pending(_hub_client(hub))
    assert report.unavailable and "ConnectError" in report.unavailable
    assert report.pending == 3 and hub.records == {}
    head = outbox.items()[0]
    assert head.attempts == 1 and head.next_attempt_at > time.time()
    # within the backoff nothing is tried; forced, it is tried again
    hub.down = False
    assert outbox.send_pending(_hub_client(hub)).sent == 0
    report = outbox.send_pending(_hub_client(hub), force=True)
    assert report.sent == 3 and hub.experiment_ids() == ids


def test_backoff_grows_exponentially_and_is_capped(tmp_path: Path, keys: KeyPair) -> None:
    hub = FakeHub(down=True)
    outbox = Outbox(tmp_path / "o.sqlite", max_backoff=4)
    outbox.enqueue("client", registration(keys))
    delays = []
    for _ in range(5):
        before = time.time()
        outbox.send_pending(_hub_client(hub), force=True)
        delays.append(outbox.items()[0].next_attempt_at - before)
    # 1, 2, 4, 4, 4 seconds each times a jitter in [0.75, 1]
    for got, nominal in zip(delays, [1, 2, 4, 4, 4], strict=True):
        assert 0.7 * nominal <= got <= nominal + 0.5


def test_rejection_is_recorded_not_retried_and_does_not_block_others(tmp_path: Path, keys: KeyPair) -> None:
    other = KeyPair.generate()
    hub = FakeHub(revoked={other.key_id}, known_sources={sha256_hex(PARENT)})
    outbox = Outbox(tmp_path / "o.sqlite")
    outbox.enqueue("client", registration(keys))
    outbox.enqueue("client", registration(other, "other"))
    bad = outbox.enqueue("experiment", sign(experiment_record(val_bpb=2.0), other))
    good = outbox.enqueue("experiment", sign(experiment_record(val_bpb=1.0), keys))
    report = outbox.send_pending(_hub_client(hub))
    assert [item.record_id for item in report.rejected] == [bad]
    assert report.rejected[0].reason == "key_revoked"
    assert hub.experiment_ids() == [good]
    posts = len(hub.posts)
    outbox.send_pending(_hub_client(hub), force=True)
    assert len(hub.posts) == posts  # never retried automatically
    (item,) = outbox.items()
    assert item.state == "rejected" and item.reason == "key_revoked"
    assert outbox.envelope(bad)  # the record stays local
    assert outbox.requeue("key_revoked") == 1


def test_key_pending_backs_off_instead_of_rejecting(tmp_path: Path, keys: KeyPair) -> None:
    hub = FakeHub(pending_keys={keys.key_id}, known_sources={sha256_hex(PARENT)})
    outbox = Outbox(tmp_path / "o.sqlite")
    outbox.enqueue("client", registration(keys))
    outbox.enqueue("experiment", sign(experiment_record(), keys))
    report = outbox.send_pending(_hub_client(hub))
    assert report.sent == 1 and report.pending == 1 and report.rejected == []
    hub.pending_keys.clear()
    assert outbox.send_pending(_hub_client(hub), force=True).sent == 1


def test_bad_source_hash_is_refused(tmp_path: Path, keys: KeyPair) -> None:
    from autoresearch.client.errors import UsageError

    with pytest.raises(UsageError, match="does not hash"):
        Outbox(tmp_path / "o.sqlite").enqueue("experiment", sign(experiment_record(), keys), sources={"0" * 64: "x"})


def test_sender_thread_delivers_on_wake_and_flushes_on_stop(tmp_path: Path, keys: KeyPair) -> None:
    hub = FakeHub(known_sources={sha256_hex(PARENT)})
    outbox = Outbox(tmp_path / "o.sqlite")
    sender = OutboxSender(outbox, _hub_client(hub), idle_seconds=30).start()
    outbox.enqueue("client", registration(keys))
    rid = outbox.enqueue("experiment", sign(experiment_record(), keys))
    sender.wake()
    deadline = time.time() + 30
    while rid not in hub.records and time.time() < deadline:
        time.sleep(0.05)
    assert rid in hub.records
    last = outbox.enqueue("experiment", sign(experiment_record(val_bpb=1.1), keys))
    report = sender.stop()
    assert report is not None and report.pending == 0
    assert hub.experiment_ids() == [rid, last]


def test_our_own_interrupt_is_not_a_hub_failure(tmp_path: Path, keys: KeyPair, caplog: pytest.LogCaptureFixture) -> None:
    """Stopping the sender interrupts its request in flight. Before, that failure was logged as
    "outbox: hub unavailable" and backed off, at the end of every `join`, although the hub was fine."""
    hub = FakeHub(known_sources={sha256_hex(PARENT)})
    outbox = Outbox(tmp_path / "o.sqlite")
    outbox.enqueue("client", registration(keys))
    client = _hub_client(hub)
    client.interrupt()  # what OutboxSender.stop does while a pass runs
    with caplog.at_level("INFO", logger="autoresearch.client.outbox"):
        report = outbox.send_pending(client)
    assert report.pending == 1 and report.unavailable and "interrupted" in report.unavailable
    head = outbox.items()[0]
    assert head.attempts == 0 and head.next_attempt_at <= time.time()  # no backoff: the flush sends it at once
    assert "hub unavailable" not in caplog.text
    client.resume()
    assert outbox.send_pending(client).pending == 0


def test_flush_on_stop_retries_a_busy_hub_but_not_an_unreachable_one(tmp_path: Path, keys: KeyPair) -> None:
    hub = FakeHub(known_sources={sha256_hex(PARENT)})
    outbox = Outbox(tmp_path / "o.sqlite")
    sender = OutboxSender(outbox, _hub_client(hub), idle_seconds=30).start()
    outbox.enqueue("client", registration(keys))
    rid = outbox.enqueue("experiment", sign(experiment_record(), keys))
    hub.busy = 1000  # nothing gets through while the thread runs
    time.sleep(0.2)
    hub.busy = 2  # then the hub is busy for two more requests
    report = sender.stop(flush_seconds=30)
    assert report is not None and report.pending == 0 and hub.experiment_ids() == [rid]

    hub.down = True
    outbox.enqueue("experiment", sign(experiment_record(val_bpb=1.2), keys))
    sender = OutboxSender(outbox, _hub_client(hub)).start()
    started = time.monotonic()
    report = sender.stop(flush_seconds=30)
    assert report is not None and report.pending == 1 and not report.reachable
    assert time.monotonic() - started < 15  # one attempt, no waiting out the flush time


_ENQUEUE_FOREVER = """
import sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[2])
from fed_fakes import experiment_record
from autoresearch.client.outbox import Outbox
from autoresearch.protocol import KeyPair, sign
outbox = Outbox(Path(sys.argv[1]))
keys = KeyPair.generate()
i = 0
while True:
    outbox.enqueue("experiment", sign(experiment_record(val_bpb=1.0 + i / 1000), keys))
    print(i, flush=True)
    i += 1
"""


@pytest.mark.slow
def test_committed_items_survive_kill_9(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite"
    proc = subprocess.Popen(
        [sys.executable, "-c", _ENQUEUE_FOREVER, str(path), str(Path(__file__).parent)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    acknowledged = -1
    for line in proc.stdout:
        acknowledged = int(line)
        if acknowledged >= 20:
            break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    for line in proc.stdout:  # what it printed before it died
        acknowledged = int(line)
    proc.stdout.close()
    counts = Outbox(path).counts()
    # every enqueue that returned is there (perhaps one more that committed before the print)
    assert acknowledged + 1 <= counts["pending"] <= acknowledged + 2
