"""A hostile hub: the real hub app (SQLite) behind an ASGI layer that answers chosen requests with an
attack, served by real uvicorn on loopback. Used by tests/client/test_hostile_hub.py and
bench/hostile_hub_bench.py.

``hub.attack(pattern, attack)`` makes every request whose ``"METHOD /path"`` matches the regex
``pattern`` get ``attack`` (``hub.calm()`` removes them all); everything else is the honest hub.

Attacks (each models a broken or malicious hub, not a bug of ours):

- ``nested``: 200 with JSON nested 100 000 levels deep;
- ``nested_code``: the honest answer with every ``train_py`` / ``child_source`` replaced by valid,
  deeply nested Python (``x = 1+1+…``, 5 000 terms), hashes updated to match;
- ``drip``: 200 and then one byte every ``drip_interval`` seconds (a slow-loris hub);
- ``huge``: 200 and ``huge_bytes`` of body (default 300 MB), streamed, with no ``Content-Length``;
- ``wrong_schema``: 200 ``{"unexpected": true}``;  ``not_json``: 200 with an HTML page;
- ``tampered_code``: the honest answer with the code changed under its signature (``EVIL = 1``
  appended; the unsigned ``sha256`` fields recomputed, the signed ``child_sha256`` cannot be);
- ``lying_signer``: the honest answer with every ``key_id`` replaced by ``lie_key_id`` (a key the
  victim trusts);
- ``hostile_text``: the honest answer with terminal escape sequences and rich markup appended to
  every description, display name, direction, rationale and error message;
- ``done_lie``: a claim's answer turned into ``done`` with ``done_with`` (another experiment's view)
  as the result, which would make the client skip every run.

``clock_offset_seconds`` shifts the ``Date`` header of every answer (the hub's clock, as the client
sees it); tests that need the hub to *act* on that clock also shift its routes' ``utc_now``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import socket
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, MutableMapping
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

HOSTILE_TEXT = "\x1b]0;pwned\x07\x1b[2J[/][bold red]x[/]\x1b]8;;http://evil.invalid\x07click\x1b]8;;\x07\u202e\x9b31m"
"""Window title (OSC 0), screen clear (CSI 2 J), stray rich markup, an OSC 8 hyperlink, a bidi
override and an 8-bit CSI."""
NESTED_SOURCE = "x = " + "1+" * 5000 + "1\n"
TEXT_FIELDS = frozenset({"description", "client_name", "display_name", "direction", "rationale", "message", "hardware_class"})
GENERATED = frozenset({"nested", "drip", "huge", "wrong_schema", "not_json"})
TAMPERED = frozenset({"nested_code", "tampered_code", "lying_signer", "hostile_text", "done_lie"})


class HostileHub:
    """The real hub on ``db_url`` with attacks layered on top (see the module docstring).

    Args:
        db_url: SQLAlchemy URL of the hub's database.
        settings: further ``HubSettings`` fields.
    """

    def __init__(self, db_url: str, **settings: object) -> None:
        self.db_url = db_url
        self.settings = settings
        self.rules: list[tuple[re.Pattern[str], str]] = []
        self.hits: Counter[str] = Counter()
        self.drip_interval = 0.5  # s between dripped bytes
        self.drip_seconds = 120.0  # how long a drip lasts in all (s); a client without a deadline waits that long
        self.huge_bytes = 300 * 1000 * 1000
        self.lie_key_id = "0" * 64
        self.done_with: dict[str, Any] | None = None  # an ExperimentView as JSON, for done_lie
        self.clock_offset_seconds = 0.0
        self.port = 0
        self._server: Any = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def attack(self, pattern: str, attack: str) -> HostileHub:
        assert attack in GENERATED | TAMPERED, attack
        self.rules.append((re.compile(pattern), attack))
        return self

    def calm(self) -> None:
        self.rules.clear()

    def _attack_for(self, method: str, path: str) -> str | None:
        key = f"{method} {path}"
        return next((attack for pattern, attack in self.rules if pattern.search(key)), None)

    # -- serving ------------------------------------------------------------------------------------

    def start(self) -> str:
        import uvicorn

        from autoresearch.hub.app import create_app
        from autoresearch.hub.migrate import upgrade
        from autoresearch.hub.settings import HubSettings

        upgrade(self.db_url)
        app = create_app(HubSettings(db_url=self.db_url, json_logs=False, **self.settings))  # type: ignore[arg-type]
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            _Layer(app, self), log_level="warning", access_log=False, lifespan="on", date_header=False,
            timeout_graceful_shutdown=1,
        )  # fmt: skip
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, name="hostile-hub", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 60
        while not self._server.started:
            assert self._thread.is_alive() and time.monotonic() < deadline, "hostile hub did not start"
            time.sleep(0.05)
        return self.url

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=30)
        self._server = self._thread = None

    def __enter__(self) -> HostileHub:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _Layer:
    """The ASGI layer: honest requests pass through; attacked ones are answered or tampered."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]], hub: HostileHub) -> None:
        self.app = app
        self.hub = hub

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        attack = self.hub._attack_for(scope["method"], scope["path"])
        date = (b"date", format_datetime(datetime.now(UTC) + timedelta(seconds=self.hub.clock_offset_seconds), usegmt=True).encode())
        if attack is None:
            await self.app(scope, receive, _with_header(send, date))
            return
        self.hub.hits[attack] += 1
        if attack in GENERATED:
            await _generate(attack, self.hub, receive, send, date)
            return
        status, headers, body = await _collect(self.app, scope, receive)
        if body[:1] in (b"{", b"["):
            body = json.dumps(_tamper(json.loads(body), attack, self.hub)).encode()
        headers = [(k, v) for k, v in headers if k.lower() not in (b"content-length", b"date")]
        headers += [(b"content-length", str(len(body)).encode()), date]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def _with_header(send: Send, header: tuple[bytes, bytes]) -> Send:
    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", []), header]}
        await send(message)

    return wrapped


async def _collect(app: Callable[[Scope, Receive, Send], Awaitable[None]], scope: Scope, receive: Receive) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    start: Message = {}
    parts: list[bytes] = []

    async def capture(message: Message) -> None:
        if message["type"] == "http.response.start":
            start.update(message)
        elif message["type"] == "http.response.body":
            parts.append(message.get("body", b""))

    await app(scope, receive, capture)
    return start["status"], list(start.get("headers", [])), b"".join(parts)


async def _generate(attack: str, hub: HostileHub, receive: Receive, send: Send, date: tuple[bytes, bytes]) -> None:
    headers = [(b"content-type", b"application/json"), date]
    if attack == "nested":
        body = b'{"track":"t","items":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    elif attack == "wrong_schema":
        body = b'{"unexpected": true}'
    elif attack == "not_json":
        body, headers[0] = b"<html><body>502 Bad Gateway</body></html>", (b"content-type", b"text/html")
    else:
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await _stream(attack, hub, receive, send)
        return
    await send({"type": "http.response.start", "status": 200, "headers": [*headers, (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def _stream(attack: str, hub: HostileHub, receive: Receive, send: Send) -> None:
    """Drip or flood until done or the client hangs up (watched on ``receive``)."""
    gone = asyncio.Event()

    async def watch() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        gone.set()

    watcher = asyncio.ensure_future(watch())
    try:
        if attack == "drip":
            end = time.monotonic() + hub.drip_seconds
            while not gone.is_set() and time.monotonic() < end:
                await send({"type": "http.response.body", "body": b" ", "more_body": True})
                await asyncio.sleep(hub.drip_interval)
            tail = b'{"unexpected": true}'
        else:
            chunk = b"a" * (1 << 20)
            await send({"type": "http.response.body", "body": b'{"track": "', "more_body": True})
            sent = 0
            while not gone.is_set() and sent < hub.huge_bytes:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                sent += len(chunk)
                await asyncio.sleep(0)
            tail = b'"}'
        if not gone.is_set():
            await send({"type": "http.response.body", "body": tail})
    finally:
        watcher.cancel()


def _tamper(data: Any, attack: str, hub: HostileHub) -> Any:
    """Apply a content attack to every matching field of a JSON answer, recursively."""
    if isinstance(data, list):
        return [_tamper(item, attack, hub) for item in data]
    if not isinstance(data, dict):
        return data
    out = {k: _tamper(v, attack, hub) for k, v in data.items()}
    for field in ("train_py", "child_source"):
        if isinstance(out.get(field), str):
            if attack == "nested_code":
                out[field] = NESTED_SOURCE
            elif attack == "tampered_code":
                out[field] = out[field] + "\nEVIL = 1\n"
            if field == "train_py" and "sha256" in out and attack in ("nested_code", "tampered_code"):
                out["sha256"] = hashlib.sha256(out[field].encode()).hexdigest()
    if attack == "done_lie" and "status" in out and "child_canonical_sha256" in out:
        out["status"], out["experiment"] = "done", hub.done_with
    if attack == "lying_signer" and isinstance(out.get("key_id"), str):
        out["key_id"] = hub.lie_key_id
    if attack == "hostile_text":
        for field in TEXT_FIELDS & out.keys():
            if isinstance(out[field], str):
                out[field] = out[field][:40] + HOSTILE_TEXT
        if isinstance(out.get("directions"), list):
            out["directions"] = [f"{d}{HOSTILE_TEXT}" for d in out["directions"]]
    return out
