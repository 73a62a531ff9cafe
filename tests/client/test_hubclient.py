"""HubClient: requests per pinned path, parsed answers, typed errors (MockTransport)."""

from __future__ import annotations

import json

import httpx
import pytest
from fed_fakes import FakeHub, experiment_record, registration

from autoresearch.client.errors import HubError, HubUnavailable, RecordRejected
from autoresearch.client.hubclient import HubClient
from autoresearch.protocol import KeyPair, sign


def _client(handler: object, token: str | None = None) -> HubClient:
    return HubClient("http://hub.test/", token=token, http=httpx.Client(transport=httpx.MockTransport(handler)))  # type: ignore[arg-type]


def test_register_posts_the_envelope_as_signed_with_the_token() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(201, json={"id": "a" * 64, "created": True, "kind": "client"})

    keys = KeyPair.generate()
    env = registration(keys)
    answer = _client(handler, token="s3cret").register(env)
    assert answer.created is True and answer.id == "a" * 64
    (request,) = seen
    assert request.method == "POST"
    assert str(request.url) == "http://hub.test/api/v1/clients"
    assert request.headers["authorization"] == "Bearer s3cret"
    assert request.content == env.to_json().encode()


def test_4xx_error_body_becomes_record_rejected_with_reason_and_hint() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(403, json={"error": {"code": "key_revoked", "message": "revoked by admin", "status": 403}})

    keys = KeyPair.generate()
    with pytest.raises(RecordRejected) as info:
        _client(handler).submit_experiment(sign(experiment_record(), keys))
    assert info.value.status == 403
    assert info.value.reason == "key_revoked"
    assert "revoked by admin" in str(info.value)
    assert info.value.hint and "outbox" in info.value.hint


def test_4xx_without_error_body_gets_http_status_reason() -> None:
    with pytest.raises(RecordRejected) as info:
        _client(lambda r: httpx.Response(404, text="nope")).experiment("b" * 64)
    assert (info.value.status, info.value.reason) == (404, "http_404")


@pytest.mark.parametrize("status", [500, 502, 503, 429])
def test_5xx_and_429_are_unavailable(status: int) -> None:
    with pytest.raises(HubUnavailable, match=str(status)):
        _client(lambda r: httpx.Response(status, text="busy")).tracks()


def test_connect_error_and_timeout_are_unavailable() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    with pytest.raises(HubUnavailable, match="ConnectError"):
        _client(refuse).tracks()
    with pytest.raises(HubUnavailable, match="ReadTimeout"):
        _client(slow).leaderboard("tiny")


def test_real_closed_port_is_unavailable() -> None:
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    with HubClient(f"http://127.0.0.1:{port}", timeout=2.0) as hub, pytest.raises(HubUnavailable):
        hub.healthz()


def test_unexpected_2xx_body_is_hub_error() -> None:
    with pytest.raises(HubError, match="unexpected body") as info:
        _client(lambda r: httpx.Response(200, json={"hello": 1})).best("tiny")
    assert not isinstance(info.value, (HubUnavailable, RecordRejected))


def test_iter_experiments_follows_cursors_and_sends_filters() -> None:
    record = experiment_record()
    keys = KeyPair.generate()
    view = {
        "id": "c" * 64,
        "key_id": keys.key_id,
        "client_name": "a",
        "received_at": "2026-01-01T00:00:00Z",
        "record": record.model_dump(mode="json", by_alias=True),
        "replications": {"n": 1},
    }
    queries: list[dict[str, str]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        params = dict(request.url.params)
        queries.append(params)
        nxt = {None: "p2", "p2": "p3", "p3": None}[params.get("cursor")]
        return httpx.Response(200, json={"items": [view], "next_cursor": nxt})

    items = list(_client(handler).iter_experiments(track="tiny", hardware_class="cpu:x:2"))
    assert len(items) == 3 and items[0].record == record
    assert [q.get("cursor") for q in queries] == [None, "p2", "p3"]
    assert all(q["track"] == "tiny" and q["hardware_class"] == "cpu:x:2" for q in queries)


def test_put_source_and_submit_against_fake_hub() -> None:
    hub = FakeHub()
    client = _client(hub)
    keys = KeyPair.generate()
    client.register(registration(keys))
    env = sign(experiment_record(), keys)
    with pytest.raises(RecordRejected) as info:
        client.submit_experiment(env)
    assert info.value.reason == "unknown_parent" and info.value.status == 409
    parent = "LR = 0.01\nSTEPS = 10\n"
    from autoresearch.protocol import sha256_hex

    client.put_source(sha256_hex(parent), parent)
    first = client.submit_experiment(env)
    again = client.submit_experiment(env)
    assert (first.created, again.created) == (True, False)
    assert json.loads(hub.records[first.id]) == json.loads(env.to_json())
