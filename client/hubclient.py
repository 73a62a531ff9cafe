"""A typed client of the hub's JSON API (``/api/v1``), built like httpx's own clients.

Every method maps to one pinned path (DESIGN.md "Pinned surface", docs/architecture.md "Hub API
additions"), sends signed envelopes as they are (:meth:`Envelope.to_json`) and parses the answer into
the protocol model of ``autoresearch.protocol.api``. Failures are typed (client/errors.py):

- :class:`~autoresearch.client.errors.HubUnavailable` — connect error, timeout, 5xx or 429: the
  request may be retried later unchanged;
- :class:`~autoresearch.client.errors.RecordRejected` — any other 4xx; ``status`` and ``reason``
  (the ``code`` of the hub's :class:`ErrorBody`) say why; retrying the same request will not help;
- :class:`~autoresearch.client.errors.HubError` — the hub answered 2xx with a body that is not the
  expected model (a different or broken hub).

The ``httpx.Client`` is injectable so tests can pass one on ``httpx.MockTransport`` or on the ASGI
app; the client never owns an injected ``httpx.Client`` (it closes only one it created).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from types import TracebackType
from typing import TypeVar

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

from .errors import HubError, HubUnavailable, RecordRejected

_logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=5.0)
"""Seconds: 5 to connect, 30 for each read/write (an experiment envelope is at most ~1 MiB)."""

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
}


class HubClient:
    """Client of one hub.

    Args:
        base_url: the hub's root URL, e.g. ``http://127.0.0.1:8000`` (``/api/v1`` is appended).
        token: bearer token (enrollment or read token of a private hub), sent on every request.
        http: an ``httpx.Client`` to use (tests: MockTransport or ASGI); its base URL is ignored.
        timeout: httpx timeout used when the client creates its own ``httpx.Client``.
    """

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        http: httpx.Client | None = None,
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._owns_http = http is None
        self._http = http if http is not None else httpx.Client(timeout=timeout)
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}

    # -- lifecycle ----------------------------------------------------------------------------------

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
        """``GET /api/v1/sources/{sha256}``: a stored ``train.py``."""
        return self._request("GET", f"/sources/{sha256}").text

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

    def iter_experiments(self, **filters: str | int | None) -> Iterator[ExperimentView]:
        """Every experiment matching ``filters``, following ``next_cursor`` page by page."""
        cursor: str | None = None
        while True:
            page = self.experiments(cursor=cursor, **filters)  # type: ignore[arg-type]
            yield from page.items
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    def experiment(self, experiment_id: str) -> ExperimentDetail:
        """``GET /api/v1/experiments/{id}``: record, sources, lineage, replications."""
        return self._parse(self._request("GET", f"/experiments/{experiment_id}"), ExperimentDetail)

    def envelope(self, experiment_id: str) -> Envelope:
        """``GET /api/v1/experiments/{id}/envelope``: the DSSE envelope as signed (verify it yourself).

        Raises:
            HubError: the body is not a DSSE envelope.
        """
        response = self._request("GET", f"/experiments/{experiment_id}/envelope")
        try:
            return parse_envelope(response.content)
        except _ProtocolError as exc:
            raise HubError(f"hub served a malformed envelope for {experiment_id}: {exc}") from exc

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
        response = self._request(
            "POST", path, content=envelope.to_json().encode("utf-8"), headers={"Content-Type": "application/json"}
        )
        return self._parse(response, model)

    def _request(
        self,
        method: str,
        path: str,
        *,
        api: bool = True,
        params: dict[str, str] | None = None,
        content: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        url = f"{self.base_url}{API if api else ''}{path}"
        try:
            response = self._http.request(
                method, url, params=params, content=content, headers={**self._headers, **(headers or {})}
            )
        except httpx.TransportError as exc:  # connect errors, timeouts, protocol errors
            raise HubUnavailable(
                f"hub {self.base_url} unreachable ({type(exc).__name__}: {exc})",
                hint="is the hub running? records wait in the outbox and are resent later",
            ) from exc
        _logger.debug("%s %s → %d", method, url, response.status_code)
        if response.status_code >= 500 or response.status_code == 429:
            raise HubUnavailable(
                f"hub {self.base_url} answered {response.status_code} to {method} {path}: {_error_text(response)}"
            )
        if response.status_code >= 400:
            code, message = _error_code(response)
            raise RecordRejected(
                f"hub refused {method} {path} ({response.status_code} {code}): {message}",
                status=response.status_code,
                reason=code,
                hint=_HINTS.get(code),
            )
        return response

    def _parse(self, response: httpx.Response, model: type[T]) -> T:
        try:
            return TypeAdapter(model).validate_json(response.content)
        except ValidationError as exc:
            raise HubError(
                f"hub answered {response.request.method} {response.request.url.path} with an unexpected body: "
                f"{exc.errors()[0].get('msg')}",
                hint="is this an autoresearch hub of a compatible version?",
            ) from exc


def _params(**values: str | int | None) -> dict[str, str]:
    return {k: str(v) for k, v in values.items() if v is not None}


def _error_code(response: httpx.Response) -> tuple[str, str]:
    """``(code, message)`` from an :class:`ErrorBody`; ``http_<status>`` when the body is not one."""
    try:
        body = ErrorBody.model_validate_json(response.content)
    except ValidationError:
        return f"http_{response.status_code}", _error_text(response)
    return body.error.code, body.error.message


def _error_text(response: httpx.Response) -> str:
    try:
        message: str = ErrorBody.model_validate_json(response.content).error.message
    except ValidationError:
        return response.text[:200]
    return message
