"""The one JSON error shape and the code → HTTP status table, pinned (datasette's test_error_shape)."""

from __future__ import annotations

import pytest

from autoresearch.hub.errors import (
    STATUS_BY_CODE,
    AuthError,
    BadRequest,
    Conflict,
    HubError,
    NotFound,
    Rejected,
    error_body,
    from_protocol,
)
from autoresearch.protocol import (
    CanonicalError,
    EnvelopeError,
    ErrorBody,
    SchemaError,
    SignatureError,
)

from .conftest import Hub

PINNED = {
    "malformed_json": 400, "envelope_malformed": 400, "bad_base64": 400, "bad_cursor": 400, "bad_request": 400,
    "not_utf8": 400, "json_too_deep": 400, "number_too_large": 400, "bad_parameter": 400,
    "token_required": 401, "bad_token": 401,
    "admin_required": 403, "bad_signature": 403, "bad_public_key": 403, "unregistered_key": 403, "key_revoked": 403, "key_pending": 403,
    "read_only_token": 403,
    "not_found": 404, "unknown_experiment": 404, "unknown_client": 404, "unknown_source": 404, "unknown_track": 404,
    "method_not_allowed": 405,
    "unknown_parent": 409, "display_name_taken": 409, "key_already_registered": 409, "ambiguous_id": 409, "conflict": 409,
    "body_too_large": 413, "diff_too_large": 413, "source_too_large": 413, "source_too_complex": 413, "too_many_changes": 413,
    "unsupported_media_type": 415,
    "unknown_schema": 422, "wrong_schema": 422, "schema_invalid": 422, "non_canonical": 422, "unparsable_source": 422,
    "diff_does_not_apply": 422, "hash_mismatch": 422, "future_timestamp": 422, "invalid_request": 422,
    "out_of_range": 422, "bad_text": 422, "bad_display_name": 422, "lease_too_long": 422,
    "rate_limited": 429, "quota_exceeded": 429,
    "internal_error": 500, "database_unavailable": 503,
}


def test_status_table_is_pinned() -> None:
    assert STATUS_BY_CODE == PINNED


def test_error_body_shape() -> None:
    assert error_body("unknown_track", "no such track").model_dump() == {
        "error": {"code": "unknown_track", "message": "no such track", "status": 404}
    }
    assert Conflict("x").status == 409 and NotFound("x").status == 404 and BadRequest("x").status == 400
    assert AuthError("x").status == 401 and Rejected("x").status == 422
    with pytest.raises(ValueError, match="unknown error code"):
        HubError("x", code="made_up")


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (EnvelopeError("x", reason="malformed_json"), "malformed_json"),
        (EnvelopeError("x", reason="unknown_payload_type"), "unknown_schema"),
        (SchemaError("x"), "schema_invalid"),
        (SchemaError("x", reason="wrong_schema"), "wrong_schema"),
        (CanonicalError("x"), "non_canonical"),
        (SignatureError("x"), "bad_signature"),
    ],
)
def test_protocol_errors_map_to_codes(exc: Exception, code: str) -> None:
    assert from_protocol(exc).code == code  # type: ignore[arg-type]


def test_framework_errors_use_the_shape(hub: Hub) -> None:
    for response, status, code in [
        (hub.client.delete("/api/v1/tracks"), 405, "method_not_allowed"),
        (hub.client.get("/api/v1/experiments", params={"limit": "many"}), 422, "invalid_request"),
        (hub.client.get("/api/v1/experiments/not-a-hash"), 422, "invalid_request"),
        (hub.client.get("/no/such/page"), 404, "not_found"),
    ]:
        assert response.status_code == status
        body = ErrorBody.model_validate_json(response.content)
        assert (body.error.code, body.error.status) == (code, status)
