"""A typed client of the hub's JSON API (``/api/v1``), built like httpx's own clients, that trusts no hub.

Every method maps to one pinned path (DESIGN.md "Pinned surface", docs/architecture.md "Hub API
additions"), sends signed envelopes as they are (:meth:`Envelope.to_json`) and parses the answer into
the protocol model of ``autoresearch.protocol.api``. Failures are typed (client/errors.py):

- :class:`~autoresearch.client.errors.HubUnavailable` — connect error, timeout (per read, or the
  total deadline of the request), 5xx or 429: the request may be retried later unchanged;
- :class:`~autoresearch.client.errors.RecordRejected` — any other 4xx; ``status`` and ``reason``
  (the ``code`` of the hub's :class:`ErrorBody`) say why; retrying the same request will not help;
- :class:`~autoresearch.client.errors.BadHubResponse` — the hub answered 2xx with a body this client
  refuses: larger than ``max_response_bytes``, nested deeper than the JSON parser's limit, or not the
  expected model (a different, broken or hostile hub).

What a hub answers is bounded before anything uses it:

- **size**: the body is streamed and the request aborted once it passes ``max_response_bytes``
  (default 32 MiB: a page of 50 experiments with 256 KiB diffs fits); a larger ``Content-Length`` is
  refused before reading;
- **time**: besides httpx's per-read timeout, every request has a *total* deadline
  (``deadline_seconds``), enforced inside the network stream, so a hub that drips one byte every
  few seconds (headers or body) is cut off at the deadline, not after hours;
- **depth and schema**: bodies are parsed only by pydantic-core's JSON parser straight into the
  expected model; it refuses nesting past its recursion limit (about 200 levels) with a validation
  error, so no recursion error can escape; nothing is ``json.loads``-ed;
- **text**: error messages quoting the hub pass through :func:`~autoresearch.client.safetext.safe_text`.

The hub's ``Date`` header gives :attr:`HubClient.clock_skew_seconds` (this machine's clock minus the
hub's); a skew beyond :data:`CLOCK_SKEW_WARN_SECONDS` is logged once per hub, because the hub refuses
records dated in its future (``future_timestamp``).

The ``httpx.Client`` is injectable so tests can pass one on ``httpx.MockTransport`` or on the ASGI
app; the client never owns an injected ``httpx.Client`` (it closes only one it created). The total
deadline is enforced in the network stream only for clients this class creates; for an injected one
it is checked between received chunks.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Any, TypeVar

import httpcore
import httpx
from pydantic import BaseModel, TypeAdapter, ValidationError

from autoresearch.protocol import (
    Accepted,
    ClaimAnswer,
    ClientView,
    CommunityBest,
    DirectionStats,
    Envelope,
    ErrorBody,
    ExperimentDetail,
    ExperimentView,
    Leaderboard,
    Page,
    SuggestionList,
    TrackView,
    parse_envelope,
)
from autoresearch.protocol import ProtocolError as _ProtocolError

from .config import hub_deadline_seconds
from .errors import BadHubResponse, HubUnavailable, RecordRejected, UsageError
from .safetext import safe_text

_logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT = httpx.Timeout(15.0, connect=5.0)
"""Seconds: 5 to connect, 15 for each read/write."""
DEFAULT_DEADLINE_SECONDS = 30.0
"""Seconds a whole request may take (connect, send, headers and body), whatever the hub drips."""
MAX_RESPONSE_BYTES = 32 * 1024 * 1024
"""Bytes of one answer body (decoded); a page of 50 experiments with 256 KiB diffs fits."""
CLOCK_SKEW_WARN_SECONDS = 60.0
"""Seconds of clock difference to the hub's ``Date`` header beyond which a warning is logged."""

API = "/api/v1"
M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")

_HINTS = {
    "key_revoked": "this key was revoked by the hub's admin; your records stay in the local outbox",
    "unregistered_key": "register first: `autoresearch join HUB_URL`",
    "key_pending": "the hub's admin has not approved this key yet",
    "token_required": "this hub is private: pass --token (or set AUTORESEARCH_HUB_TOKEN)",
    "bad_token": "the token is unknown or revoked: ask the hub's admin for a new one",
    "admin_required": "this needs the hub's admin token",
    "unknown_track": "list the hub's tracks: GET /api/v1/tracks",
    "future_timestamp": "this machine's clock is ahead of the hub's: sync it (e.g. `timedatectl set-ntp true`)",
}

_skew_warned: set[str] = set()  # hubs whose clock skew was already logged in this process


# --------------------------------------------------------------------------------------------------
# the total deadline, enforced in the network stream (httpx has per-read timeouts only: encode/httpx#1450)

class _Limit:
    """The bounds of the request in progress on this thread: its deadline (monotonic seconds) and the
    client's interrupt event (:meth:`HubClient.interrupt`)."""

    __slots__ = ("deadline", "interrupted")

    def __init__(self, deadline: float, interrupted: threading.Event) -> None:
        self.deadline, self.interrupted = deadline, interrupted

    def remaining(self, timeout: float | None, exc: type[Exception]) -> float | None:
        """``timeout`` clamped to what is left before the deadline; raises ``exc`` when none is left
        or the client was interrupted."""
        if self.interrupted.is_set():
            raise exc("request interrupted")
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise exc("total deadline of the request passed")
        return left if timeout is None else min(timeout, left)


_LIMIT: contextvars.ContextVar[_Limit | None] = contextvars.ContextVar("hub_request_limit", default=None)
_SLICE_SECONDS = 0.5  # a blocked read wakes this often to notice an interrupt


def _remaining(timeout: float | None, exc: type[Exception]) -> float | None:
    limit = _LIMIT.get()
    return timeout if limit is None else limit.remaining(timeout, exc)


class _DeadlineStream(httpcore.NetworkStream):
    """A network stream whose every read and write waits at most until the request's deadline.

    A read waits in slices of ``_SLICE_SECONDS`` (still honouring the per-read ``timeout``), so an
    interrupt ends it promptly.
    """

    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        limit = _LIMIT.get()
        if limit is None:
            return self._inner.read(max_bytes, timeout)
        give_up = None if timeout is None else time.monotonic() + timeout
        while True:
            wait = limit.remaining(None, httpcore.ReadTimeout)
            assert wait is not None
            if give_up is not None:
                if time.monotonic() >= give_up:
                    raise httpcore.ReadTimeout("timed out")
                wait = min(wait, give_up - time.monotonic())
            try:
                return self._inner.read(max_bytes, max(0.001, min(wait, _SLICE_SECONDS)))
            except httpcore.ReadTimeout:
                continue

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, _remaining(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None) -> httpcore.NetworkStream:
        inner = self._inner.start_tls(ssl_context, server_hostname, _remaining(timeout, httpcore.ConnectTimeout))
        return _DeadlineStream(inner)

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _DeadlineBackend(httpcore.NetworkBackend):
    """Wraps httpcore's backend so every stream it opens honours the request's total deadline."""

    def __init__(self, inner: httpcore.NetworkBackend) -> None:
        self._inner = inner

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        stream = self._inner.connect_tcp(host, port, _remaining(timeout, httpcore.ConnectTimeout), local_address, socket_options)
        return _DeadlineStream(stream)

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.NetworkStream:
        stream = self._inner.connect_unix_socket(path, _remaining(timeout, httpcore.ConnectTimeout), socket_options)
        return _DeadlineStream(stream)

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


def _install_deadline(http: httpx.Client) -> bool:
    """Wrap the network backend of every connection pool of ``http`` (its transport and any proxy
    mounts) in :class:`_DeadlineBackend`. httpx offers no public hook for this, so it reaches the
    pools' ``_network_backend``; returns False (and the deadline is then checked between chunks only)
    when that attribute is missing in some httpx version."""
    transports = [getattr(http, "_transport", None), *getattr(http, "_mounts", {}).values()]
    installed = False
    for transport in transports:
        pool = getattr(transport, "_pool", None)
        backend = getattr(pool, "_network_backend", None)
        if backend is None:
            continue
        if not isinstance(backend, _DeadlineBackend):
            pool._network_backend = _DeadlineBackend(backend)  # type: ignore[union-attr]
        installed = True
    if not installed:
        _logger.debug("httpx internals changed: the total deadline is checked between chunks only")
    return installed


_HEX = frozenset("0123456789abcdef")


def experiment_id_arg(text: str) -> str:
    """An experiment id as a person types it (surrounding blanks, upper case) → the lowercase hex
    the API takes: 64 digits, or a unique prefix of at least 8 as the tables show.

    Raises:
        UsageError: anything else, naming the text (instead of the API's raw pattern error).
    """
    value = text.strip().lower()
    if not 8 <= len(value) <= 64 or not set(value) <= _HEX:
        raise UsageError(
            f"{safe_text(text, one_line=True)!r} is not an experiment id",
            hint="give its 64 hex digits, or a unique prefix of at least 8 as the tables show",
        )
    return value


class HubClient:
    """Client of one hub.

    Args:
        base_url: the hub's root URL, e.g. ``http://127.0.0.1:8000`` (``/api/v1`` is appended).
        token: bearer token (enrollment or read token of a private hub), sent on every request.
        http: an ``httpx.Client`` to use (tests: MockTransport or ASGI); its base URL is ignored.
        timeout: httpx timeout used when the client creates its own ``httpx.Client`` (per connect,
            read and write, seconds).
        deadline_seconds: the most one request may take in all, seconds (then :class:`HubUnavailable`);
            default: ``$AUTORESEARCH_HUB_DEADLINE`` or :data:`DEFAULT_DEADLINE_SECONDS`.
        max_response_bytes: the largest answer body accepted, bytes (then :class:`BadHubResponse`).
    """

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        http: httpx.Client | None = None,
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
        deadline_seconds: float | None = None,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.deadline_seconds = deadline_seconds if deadline_seconds is not None else hub_deadline_seconds(DEFAULT_DEADLINE_SECONDS)
        self.max_response_bytes = max_response_bytes
        self.clock_skew_seconds: float | None = None
        """This machine's clock minus the hub's (seconds, from the last ``Date`` header; None: unknown)."""
        self._owns_http = http is None
        if http is None:
            http = httpx.Client(timeout=timeout)
            _install_deadline(http)
        self._http = http
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._interrupted = threading.Event()

    # -- lifecycle ----------------------------------------------------------------------------------

    def interrupt(self) -> None:
        """End the requests in progress on this client (from any thread) within about half a second,
        with :class:`HubUnavailable`; new requests fail the same way until :meth:`resume`. Only the
        network streams of a client this class created can be interrupted mid-read."""
        self._interrupted.set()

    def resume(self) -> None:
        """Allow requests again after :meth:`interrupt`."""
        self._interrupted.clear()

    @property
    def interrupted(self) -> bool:
        """True between :meth:`interrupt` and :meth:`resume`: a failure now is ours, not the hub's."""
        return self._interrupted.is_set()

    def close(self) -> None:
        """Close the underlying ``httpx.Client`` if this object created it."""
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> HubClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- submissions (signed envelopes) -------------------------------------------------------------

    def register(self, envelope: Envelope) -> Accepted:
        """``POST /api/v1/clients`` with the envelope of a :class:`ClientRegistration`."""
        return self._post_envelope("/clients", envelope, Accepted)

    def claim(self, envelope: Envelope) -> ClaimAnswer:
        """``POST /api/v1/claims`` with the envelope of a :class:`ClaimRecord` → granted/done/held."""
        return self._post_envelope("/claims", envelope, ClaimAnswer)

    def submit_experiment(self, envelope: Envelope) -> Accepted:
        """``POST /api/v1/experiments``; ``created`` is False when the hub already had the record.

        Raises:
            RecordRejected: ``reason == "unknown_parent"`` (409) means: PUT the parent source, retry.
        """
        return self._post_envelope("/experiments", envelope, Accepted)

    def submit_calibration(self, envelope: Envelope) -> Accepted:
        """``POST /api/v1/calibrations`` with the envelope of a :class:`CalibrationRecord`."""
        return self._post_envelope("/calibrations", envelope, Accepted)

    def put_source(self, sha256: str, source: str) -> None:
        """``PUT /api/v1/sources/{sha256}``: upload a ``train.py`` (text/plain, UTF-8)."""
        self._request(
            "PUT",
            f"/sources/{sha256}",
            content=source.encode("utf-8"),
            headers={"Content-Type": "text/plain; charset=utf-8"},
        )

    # -- reads --------------------------------------------------------------------------------------

    def source(self, sha256: str) -> str:
        """``GET /api/v1/sources/{sha256}``: a stored ``train.py`` (check its hash before use).

        Raises:
            BadHubResponse: the body is not UTF-8 text.
        """
        reply = self._request("GET", f"/sources/{sha256}")
        try:
            return reply.content.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise BadHubResponse(f"hub served source {sha256[:12]}… that is not UTF-8 text") from exc

    def tracks(self) -> list[TrackView]:
        """``GET /api/v1/tracks``."""
        return self._parse(self._request("GET", "/tracks"), list[TrackView])

    def track(self, track: str) -> TrackView:
        """``GET /api/v1/tracks/{track}`` (short name or full id)."""
        return self._parse(self._request("GET", f"/tracks/{track}"), TrackView)

    def experiments(
        self,
        *,
        track: str | None = None,
        hardware_class: str | None = None,
        outcome: str | None = None,
        client: str | None = None,
        cursor: str | None = None,
        limit: int | None = None,
    ) -> Page[ExperimentView]:
        """One page of ``GET /api/v1/experiments`` (filters are optional query parameters)."""
        params = _params(
            track=track, hardware_class=hardware_class, outcome=outcome, client=client, cursor=cursor, limit=limit
        )
        return self._parse(self._request("GET", "/experiments", params=params), Page[ExperimentView])

    def iter_experiments(self, *, max_pages: int = 1000, **filters: str | int | None) -> Iterator[ExperimentView]:
        """Every experiment matching ``filters``, following ``next_cursor`` page by page.

        Raises:
            BadHubResponse: the hub's cursors loop (a cursor seen before) or run past ``max_pages``.
        """
        cursor: str | None = None
        seen: set[str] = set()
        for _ in range(max_pages):
            page = self.experiments(cursor=cursor, **filters)  # type: ignore[arg-type]
            yield from page.items
            if page.next_cursor is None:
                return
            if page.next_cursor in seen:
                raise BadHubResponse(f"hub {self.base_url} answered a pagination cursor it gave before (a loop)")
            seen.add(page.next_cursor)
            cursor = page.next_cursor
        raise BadHubResponse(f"hub {self.base_url} paginated past {max_pages} pages")

    def experiment(self, experiment_id: str) -> ExperimentDetail:
        """``GET /api/v1/experiments/{id}``: record, sources, lineage, replications.

        ``experiment_id``: 64 hex digits or a unique prefix of at least 8 (the hub resolves it).

        Raises:
            UsageError: ``experiment_id`` is not that shape (checked here: no request is made).
            RecordRejected: ``unknown_experiment``, or ``ambiguous_id`` for a prefix of several.
        """
        experiment_id = experiment_id_arg(experiment_id)
        return self._parse(self._request("GET", f"/experiments/{experiment_id}"), ExperimentDetail)

    def envelope(self, experiment_id: str) -> Envelope:
        """``GET /api/v1/experiments/{id}/envelope``: the DSSE envelope as signed (verify it yourself).

        Raises:
            BadHubResponse: the body is not a DSSE envelope.
        """
        experiment_id = experiment_id_arg(experiment_id)
        reply = self._request("GET", f"/experiments/{experiment_id}/envelope")
        envelope = self._parse(reply, Envelope)
        try:
            return parse_envelope(envelope)
        except _ProtocolError as exc:
            raise BadHubResponse(safe_text(f"hub served a malformed envelope for {experiment_id}: {exc}")) from exc

    def leaderboard(self, track: str) -> Leaderboard:
        """``GET /api/v1/tracks/{track}/leaderboard``."""
        return self._parse(self._request("GET", f"/tracks/{track}/leaderboard"), Leaderboard)

    def best(self, track: str, *, hardware_class: str | None = None) -> CommunityBest:
        """``GET /api/v1/tracks/{track}/best``: per hardware class when given, else by ECM."""
        params = _params(hardware_class=hardware_class)
        return self._parse(self._request("GET", f"/tracks/{track}/best", params=params), CommunityBest)

    def suggestions(
        self, track: str, *, hardware_class: str | None = None, client: str | None = None
    ) -> SuggestionList:
        """``GET /api/v1/tracks/{track}/suggestions``."""
        params = _params(hardware_class=hardware_class, client=client)
        return self._parse(
            self._request("GET", f"/tracks/{track}/suggestions", params=params), SuggestionList
        )

    def directions(self, track: str) -> list[DirectionStats]:
        """``GET /api/v1/tracks/{track}/directions``."""
        return self._parse(self._request("GET", f"/tracks/{track}/directions"), list[DirectionStats])

    def client(self, key_id: str) -> ClientView:
        """``GET /api/v1/clients/{key_id}``."""
        return self._parse(self._request("GET", f"/clients/{key_id}"), ClientView)

    def healthz(self) -> None:
        """``GET /healthz``; raises :class:`HubUnavailable` unless the hub answers 2xx."""
        self._request("GET", "/healthz", api=False)

    # -- plumbing -----------------------------------------------------------------------------------

    def _post_envelope(self, path: str, envelope: Envelope, model: type[M]) -> M:
        reply = self._request(
            "POST", path, content=envelope.to_json().encode("utf-8"), headers={"Content-Type": "application/json"}
        )
        return self._parse(reply, model)

    def _request(
        self,
        method: str,
        path: str,
        *,
        api: bool = True,
        params: dict[str, str] | None = None,
        content: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> _Reply:
        """One request under the total deadline, its body read up to the size cap.

        Raises:
            HubUnavailable: connect error, timeout, deadline, 5xx or 429.
            RecordRejected: another 4xx.
            BadHubResponse: the body is larger than ``max_response_bytes`` or cannot be decoded.
        """
        url = f"{self.base_url}{API if api else ''}{path}"
        deadline = time.monotonic() + self.deadline_seconds
        token = _LIMIT.set(_Limit(deadline, self._interrupted))
        try:
            with self._http.stream(
                method, url, params=params, content=content, headers={**self._headers, **(headers or {})}
            ) as response:
                self._note_clock(response)
                reply = _Reply(method, path, response.status_code, self._read_body(response, deadline, method, path))
        except httpx.TransportError as exc:  # connect errors, timeouts, protocol errors
            if self._interrupted.is_set():
                why = "request interrupted"
            elif time.monotonic() >= deadline:
                why = f"no complete answer within the {self.deadline_seconds:g} s deadline"
            else:
                why = f"{type(exc).__name__}: {exc}"
            raise HubUnavailable(
                safe_text(f"hub {self.base_url} unreachable ({why})", one_line=True),
                hint="is the hub running? records wait in the outbox and are resent later",
            ) from exc
        except httpx.RequestError as exc:  # a body httpx cannot decode (bad gzip, …)
            raise BadHubResponse(safe_text(f"hub {self.base_url} answered {method} {path} with a broken body: {exc}", one_line=True)) from exc
        finally:
            _LIMIT.reset(token)
        _logger.debug("%s %s → %d", method, url, reply.status)
        if reply.status >= 500 or reply.status == 429:
            raise HubUnavailable(
                f"hub {self.base_url} answered {reply.status} to {method} {path}: {_error_text(reply)}"
            )
        if reply.status >= 400:
            code, message = _error_code(reply)
            raise RecordRejected(
                f"hub refused {method} {path} ({reply.status} {code}): {message}",
                status=reply.status,
                reason=code,
                hint=_HINTS.get(code),
            )
        return reply

    def _read_body(self, response: httpx.Response, deadline: float, method: str, path: str) -> bytes:
        """The body, streamed: at most ``max_response_bytes`` for a 2xx (else :class:`BadHubResponse`),
        the first ``_ERROR_BODY_BYTES`` of an error (the rest is not read)."""
        ok = response.status_code < 400
        cap = self.max_response_bytes if ok else _ERROR_BODY_BYTES
        declared = response.headers.get("content-length", "")
        if ok and declared.isdigit() and int(declared) > cap:
            raise BadHubResponse(
                f"hub {self.base_url} announced a {int(declared)}-byte answer to {method} {path}; the limit is {cap} bytes"
            )
        chunks: list[bytes] = []
        size = 0
        for chunk in response.iter_bytes():
            size += len(chunk)
            if size > cap:
                if not ok:
                    chunks.append(chunk[: cap - (size - len(chunk))])
                    break
                raise BadHubResponse(f"hub {self.base_url} answered {method} {path} with more than {cap} bytes; aborted")
            chunks.append(chunk)
            if time.monotonic() > deadline or self._interrupted.is_set():  # an injected transport: not checked inside the stream
                raise httpx.ReadTimeout("total deadline of the request passed", request=response.request)
        return b"".join(chunks)

    def _note_clock(self, response: httpx.Response) -> None:
        """Record the clock skew from the hub's ``Date`` header; warn once per hub when it is large."""
        try:
            hub_time = parsedate_to_datetime(response.headers.get("date", ""))
        except (TypeError, ValueError, IndexError):
            return
        if hub_time.tzinfo is None:
            return
        # Date has 1 s resolution (truncated): the hub's time is on average half a second later
        skew = (datetime.now(UTC) - hub_time).total_seconds() - 0.5
        self.clock_skew_seconds = skew
        if abs(skew) > CLOCK_SKEW_WARN_SECONDS and self.base_url not in _skew_warned:
            _skew_warned.add(self.base_url)
            _logger.warning(
                "this machine's clock is %s %s the hub's (%s, Date header); %s; fix: sync the clock (e.g. `timedatectl set-ntp true`)",
                format_duration(abs(skew)),
                "ahead of" if skew > 0 else "behind",
                self.base_url,
                "the hub refuses records dated in its future, so they wait in the outbox until its clock passes them"
                if skew > 0
                else "leases and timestamps will look old to the hub",
            )

    def _parse(self, reply: _Reply, model: type[T]) -> T:
        try:
            return TypeAdapter(model).validate_json(reply.content)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first.get("loc", ())) or "(root)"
            raise BadHubResponse(
                safe_text(
                    f"hub answered {reply.method} {reply.path} with an unexpected body: {where}: {first.get('msg')}",
                    one_line=True,
                ),
                hint="is this an autoresearch hub of a compatible version?",
            ) from exc


_ERROR_BODY_BYTES = 64 * 1024  # bytes of an error answer read for its code and message


class _Reply:
    """What :meth:`HubClient._request` read: method, path, status and the (capped) body bytes."""

    __slots__ = ("content", "method", "path", "status")

    def __init__(self, method: str, path: str, status: int, content: bytes) -> None:
        self.method, self.path, self.status, self.content = method, path, status, content


def format_duration(seconds: float) -> str:
    """``seconds`` as ``1 h 02 min``, ``10 min 03 s`` or ``4.2 s``."""
    if seconds >= 3600:
        return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} min"
    if seconds >= 60:
        return f"{int(seconds // 60)} min {int(seconds % 60):02d} s"
    return f"{seconds:.1f} s"


def _params(**values: str | int | None) -> dict[str, str]:
    return {k: str(v) for k, v in values.items() if v is not None}


def _error_code(reply: _Reply) -> tuple[str, str]:
    """``(code, message)`` from an :class:`ErrorBody` (made safe to show); ``http_<status>`` when the
    body is not one."""
    try:
        body = ErrorBody.model_validate_json(reply.content)
    except ValidationError:
        return f"http_{reply.status}", _error_text(reply)
    return safe_text(body.error.code[:80], one_line=True), safe_text(body.error.message[:500], one_line=True)


def _error_text(reply: _Reply) -> str:
    """The hub's error message, or the start of its body, made safe to show on one line."""
    try:
        message: str = ErrorBody.model_validate_json(reply.content).error.message
    except ValidationError:
        message = reply.content[:200].decode("utf-8", errors="replace")
    return safe_text(message[:500], one_line=True)
