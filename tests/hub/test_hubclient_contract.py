"""The client's HubClient against the real app: the bodies the hub serves parse into the protocol
models the client expects, and refusals arrive as RecordRejected with the hub's code."""

from __future__ import annotations

import pytest

from autoresearch.client.errors import RecordRejected
from autoresearch.client.hubclient import HubClient
from autoresearch.protocol import sha256_hex, sign

from . import factory
from .conftest import Hub


def test_hubclient_round_trip(hub: Hub) -> None:
    client = HubClient("http://testserver", http=hub.client)
    keys = hub.key("alice")
    assert client.register(sign(factory.registration(keys, "alice"), keys)).created is True
    parent = factory.with_constant(factory.REFERENCE, "EMBED_LR", 0.7)
    child = factory.with_constant(parent, "MATRIX_LR", 0.05)
    record = factory.experiment(hub.track, parent, child)
    with pytest.raises(RecordRejected) as refused:
        client.submit_experiment(sign(record, keys))
    assert (refused.value.status, refused.value.reason) == (409, "unknown_parent")
    client.put_source(sha256_hex(parent), parent)
    accepted = client.submit_experiment(sign(record, keys))
    assert accepted.created is True
    assert client.claim(sign(factory.claim(hub.track, parent, child), keys)).status == "done"
    assert client.experiment(accepted.id).child_source == child
    assert client.envelope(accepted.id).signatures[0].keyid == keys.key_id
    assert [v.id for v in client.experiments(track="tiny").items] == [accepted.id]
    assert client.track("tiny").experiments == 1
    assert client.best("tiny", hardware_class=factory.HARDWARE).experiment is None  # uncalibrated: never best
    assert client.leaderboard("tiny").track == hub.track.id
    assert [d.direction for d in client.directions("tiny")] == ["MATRIX_LR ↑"]
    assert client.client(keys.key_id).experiments == 1
    assert client.source(sha256_hex(child)) == child


def test_experiment_ids_as_people_type_them(hub: Hub) -> None:
    """``show``/``pull`` take what the tables show: a prefix in any case is resolved by the hub; a
    typo is a UsageError naming it, before any request (not the API's raw 422 pattern text)."""
    from autoresearch.client.errors import UsageError

    client = HubClient("http://testserver", http=hub.client)
    keys = hub.key("alice")
    client.register(sign(factory.registration(keys, "alice"), keys))
    client.put_source(sha256_hex(factory.REFERENCE), factory.REFERENCE)
    ids = []
    for lr in (0.05, 0.06, 0.07):
        child = factory.with_constant(factory.REFERENCE, "MATRIX_LR", lr)
        ids.append(client.submit_experiment(sign(factory.experiment(hub.track, factory.REFERENCE, child), keys)).id)
    first = ids[0]
    assert client.experiment(f"  {first[:12].upper()} ").id == first
    assert client.envelope(first[:8]).signatures[0].keyid == keys.key_id
    for typo in (first[:7], first[:11] + "g", ""):
        with pytest.raises(UsageError, match="not an experiment id") as info:
            client.experiment(typo)
        assert info.value.hint and "at least 8" in info.value.hint
