"""Frames between the harness and its sandboxed workers: a JSON header plus raw bytes (stdlib only).

This module runs on both sides of the trust boundary: inside the sandbox (imported as ``worker.wire``
by the worker) and in the harness (``autoresearch.trainer.worker.wire``). The harness reads frames
that an untrusted ``train.py`` may have forged, so every length is checked against the reader's
limits before anything is allocated, and a malformed frame raises :class:`WireError` instead of
being guessed at.

Frame layout (all integers big-endian)::

    >I header length (bytes, ≤ MAX_HEADER_BYTES) | >Q payload length | header | payload

The header is a UTF-8 JSON object with an ``op`` string; the payload is opaque bytes (token rows,
scores, the pickled model), whose meaning and size limit depend on ``op``.
"""

from __future__ import annotations

import json
import socket
import struct
from collections.abc import Callable

PREFIX = struct.Struct(">IQ")
MAX_HEADER_BYTES = 64 * 1024
MAX_JSON_DEPTH = 8  # headers are flat objects with small lists; deeper nesting is an attack


class WireError(Exception):
    """A frame broke the format or a limit (the peer is broken or hostile)."""


class PeerClosed(WireError):
    """The peer closed the connection (at a frame boundary or inside a frame)."""


def encode(header: dict[str, object], payload: bytes | bytearray | memoryview = b"") -> tuple[bytes, memoryview]:
    """The frame for ``header`` and ``payload``: the prefixed header and the payload's bytes."""
    head = json.dumps(header, separators=(",", ":"), allow_nan=False).encode("utf-8")
    if len(head) > MAX_HEADER_BYTES:
        raise WireError(f"header of {len(head)} bytes exceeds {MAX_HEADER_BYTES}")
    view = memoryview(payload).cast("B")
    return PREFIX.pack(len(head), view.nbytes) + head, view


def send(sock: socket.socket, header: dict[str, object], payload: bytes | bytearray | memoryview = b"") -> None:
    """Send one frame (blocking, or bounded by the socket's timeout).

    Raises:
        WireError: the header is too large or not JSON-serialisable.
        OSError: the socket failed (``TimeoutError`` when the peer stopped reading).
    """
    head, body = encode(header, payload)
    sock.sendall(head)
    if body.nbytes:
        sock.sendall(body)


def _depth(value: object, level: int = 0) -> int:
    if isinstance(value, dict):
        return max((_depth(v, level + 1) for v in value.values()), default=level + 1)
    if isinstance(value, list):
        return max((_depth(v, level + 1) for v in value), default=level + 1)
    return level


def parse_header(raw: bytes) -> dict[str, object]:
    """A header's JSON object, checked for shape and depth.

    Raises:
        WireError: not UTF-8 JSON, not an object with a string ``op``, or nested too deeply.
    """
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise WireError(f"header is not UTF-8 JSON: {exc}") from None
    if not isinstance(header, dict) or not isinstance(header.get("op"), str):
        raise WireError("header must be a JSON object with a string 'op'")
    if _depth(header) > MAX_JSON_DEPTH:
        raise WireError(f"header nests deeper than {MAX_JSON_DEPTH} levels")
    return header


class FrameBuffer:
    """Reassembles frames from bytes as they arrive (works with blocking and polled sockets).

    ``max_payload(header)`` returns the largest payload allowed for that header (0 for none); it is
    asked before the payload is buffered, so a forged length cannot make us allocate.
    """

    def __init__(self, max_payload: Callable[[dict[str, object]], int]) -> None:
        self._max_payload = max_payload
        self._buf = bytearray()
        self._header: dict[str, object] | None = None
        self._need_payload = 0

    def feed(self, data: bytes) -> list[tuple[dict[str, object], bytes]]:
        """Add bytes; return the frames completed by them, in order.

        Raises:
            WireError: a header or payload breaks the format or a limit.
        """
        self._buf += data
        frames: list[tuple[dict[str, object], bytes]] = []
        while True:
            if self._header is None:
                if len(self._buf) < PREFIX.size:
                    return frames
                head_len, payload_len = PREFIX.unpack_from(self._buf)
                if head_len > MAX_HEADER_BYTES:
                    raise WireError(f"header length {head_len} exceeds {MAX_HEADER_BYTES}")
                if len(self._buf) < PREFIX.size + head_len:
                    return frames
                header = parse_header(bytes(self._buf[PREFIX.size : PREFIX.size + head_len]))
                limit = self._max_payload(header)
                if payload_len > limit:
                    raise WireError(f"{header['op']!r} payload of {payload_len} bytes exceeds its limit of {limit}")
                del self._buf[: PREFIX.size + head_len]
                self._header, self._need_payload = header, payload_len
            if len(self._buf) < self._need_payload:
                return frames
            payload = bytes(self._buf[: self._need_payload])
            del self._buf[: self._need_payload]
            frames.append((self._header, payload))
            self._header, self._need_payload = None, 0

    @property
    def mid_frame(self) -> bool:
        """True when part of a frame has arrived but not all of it."""
        return bool(self._buf) or self._header is not None


class Connection:
    """A blocking frame connection over a socket (the worker's side, and simple harness calls)."""

    def __init__(self, sock: socket.socket, max_payload: Callable[[dict[str, object]], int]) -> None:
        self.sock = sock
        self._frames = FrameBuffer(max_payload)
        self._ready: list[tuple[dict[str, object], bytes]] = []

    def send(self, header: dict[str, object], payload: bytes | bytearray | memoryview = b"") -> None:
        send(self.sock, header, payload)

    def recv(self) -> tuple[dict[str, object], bytes]:
        """The next frame (blocking).

        Raises:
            PeerClosed: the peer closed the connection.
            WireError: the frame broke the format or a limit.
        """
        while not self._ready:
            data = self.sock.recv(1 << 20)
            if not data:
                raise PeerClosed("connection closed" + (" inside a frame" if self._frames.mid_frame else ""))
            self._ready.extend(self._frames.feed(data))
        return self._ready.pop(0)
