"""The hub's one error hierarchy, its code → HTTP status table and the one JSON error shape.

Every error the API returns is an :class:`~autoresearch.protocol.ErrorBody`
``{"error": {"code", "message", "status"}}``; ``code`` is stable and machine-readable and
:data:`STATUS_BY_CODE` fixes its HTTP status (tests/hub/test_error_shape.py pins both)::

    HubError                  base: code + message; status from STATUS_BY_CODE
    ├── BadRequest            the body or a parameter is malformed (400)
    ├── AuthError             token missing or wrong (401), or not allowed (403)
    ├── Rejected              a well-formed record the hub refuses (403/409/413/422)
    ├── NotFound              no such thing (404)
    ├── Conflict              a uniqueness or state conflict (409), never a 500
    └── TooManyRequests       a quota is spent (429), with ``retry_after`` seconds (``Retry-After``)

The edge checks that raise most of the 400/413/422 codes live in :mod:`.limits` and :mod:`.names`;
the quotas (429) in :mod:`.quotas`.
"""

from __future__ import annotations

from autoresearch.protocol import ErrorBody, ErrorDetail, ProtocolError

STATUS_BY_CODE: dict[str, int] = {
    # 400: the request itself is malformed
    "malformed_json": 400,
    "envelope_malformed": 400,
    "bad_base64": 400,
    "bad_cursor": 400,
    "bad_request": 400,
    "not_utf8": 400,
    "json_too_deep": 400,
    "number_too_large": 400,
    "bad_parameter": 400,
    # 401/403: who is asking
    "token_required": 401,
    "bad_token": 401,
    "admin_required": 403,
    "bad_signature": 403,
    "bad_public_key": 403,
    "unregistered_key": 403,
    "key_revoked": 403,
    "key_pending": 403,
    "read_only_token": 403,
    # 404
    "not_found": 404,
    "unknown_experiment": 404,
    "unknown_client": 404,
    "unknown_source": 404,
    "unknown_track": 404,
    # 405
    "method_not_allowed": 405,
    # 409: state conflicts (retry after fixing, or never)
    "unknown_parent": 409,
    "display_name_taken": 409,
    "key_already_registered": 409,
    "ambiguous_id": 409,
    "conflict": 409,
    # 413: too large
    "body_too_large": 413,
    "diff_too_large": 413,
    "source_too_large": 413,
    "source_too_complex": 413,
    "too_many_changes": 413,
    # 415
    "unsupported_media_type": 415,
    # 422: a well-formed request whose content is wrong
    "unknown_schema": 422,
    "wrong_schema": 422,
    "schema_invalid": 422,
    "non_canonical": 422,
    "unparsable_source": 422,
    "diff_does_not_apply": 422,
    "hash_mismatch": 422,
    "future_timestamp": 422,
    "invalid_request": 422,
    "out_of_range": 422,
    "bad_text": 422,
    "bad_display_name": 422,
    "lease_too_long": 422,
    # 429: a quota is spent; Retry-After says when to try again
    "rate_limited": 429,
    "quota_exceeded": 429,
    # 5xx
    "internal_error": 500,
    "database_unavailable": 503,
}

# protocol reasons (autoresearch.protocol.errors) → hub codes
_PROTOCOL_CODES: dict[str, str] = {
    "malformed_json": "malformed_json",
    "too_large": "body_too_large",
    "envelope_malformed": "envelope_malformed",
    "bad_base64": "bad_base64",
    "unknown_payload_type": "unknown_schema",
    "unknown_schema": "unknown_schema",
    "wrong_schema": "wrong_schema",
    "schema_invalid": "schema_invalid",
    "out_of_range": "out_of_range",
    "non_canonical": "non_canonical",
    "bad_signature": "bad_signature",
    "bad_public_key": "bad_public_key",
    "unparsable_source": "unparsable_source",
}


class HubError(Exception):
    """Base of every error the API reports. ``code`` must be a key of :data:`STATUS_BY_CODE`."""

    default_code = "internal_error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code or self.default_code
        if self.code not in STATUS_BY_CODE:
            raise ValueError(f"unknown error code {self.code!r}")
        self.message = message

    @property
    def status(self) -> int:
        return STATUS_BY_CODE[self.code]

    def body(self) -> ErrorBody:
        """The JSON error shape of this error."""
        return error_body(self.code, self.message)


class BadRequest(HubError):
    default_code = "bad_request"


class AuthError(HubError):
    default_code = "token_required"


class Rejected(HubError):
    default_code = "schema_invalid"


class NotFound(HubError):
    default_code = "not_found"


class Conflict(HubError):
    default_code = "conflict"


class TooManyRequests(HubError):
    """A quota is spent; ``retry_after`` is the whole number of seconds (≥ 1) until it refills."""

    default_code = "rate_limited"

    def __init__(self, message: str, *, retry_after: int, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.retry_after = max(1, int(retry_after))


def error_body(code: str, message: str) -> ErrorBody:
    """``{"error": {"code", "message", "status"}}`` for ``code``."""
    return ErrorBody(error=ErrorDetail(code=code, message=message, status=STATUS_BY_CODE[code]))


def from_protocol(exc: ProtocolError) -> HubError:
    """The hub error for a protocol failure (bad signature, schema, canonical form, …)."""
    code = _PROTOCOL_CODES.get(exc.reason, "schema_invalid")
    if code in ("bad_signature", "bad_public_key"):
        return AuthError(str(exc), code=code)
    if code in ("malformed_json", "envelope_malformed", "bad_base64"):
        return BadRequest(str(exc), code=code)
    return Rejected(str(exc), code=code)
