"""OpenAPI fragments shared by the routes: the raw bodies the hub reads itself (a DSSE envelope, a
``train.py``) and the one error shape every route can answer with."""

from __future__ import annotations

from typing import Any

from autoresearch.protocol import Envelope, ErrorBody


def _inline(schema: dict[str, Any]) -> dict[str, Any]:
    """A JSON schema with its local ``$defs`` references inlined (the envelope's are not recursive)."""
    defs = schema.pop("$defs", {})

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return walk(dict(defs[ref.split("/")[-1]]))
            return {k: walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    return walk(schema)  # type: ignore[no-any-return]


ENVELOPE_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "a DSSE envelope (protocol/envelope.py), stored exactly as received",
        "content": {"application/json": {"schema": _inline(Envelope.model_json_schema(by_alias=True))}},
    }
}

SOURCE_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "a train.py, UTF-8",
        "content": {"text/plain": {"schema": {"type": "string"}}},
    }
}

ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": text}
    for status, text in [
        (400, "malformed request"),
        (401, "token missing or wrong"),
        (403, "not allowed (signature, key state, admin)"),
        (404, "not found"),
        (409, "conflict"),
        (413, "too large"),
        (422, "invalid content"),
        (429, "a quota is spent; Retry-After says when to try again"),
    ]
}
