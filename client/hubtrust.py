"""What a hub sends, checked by this client before anything uses it.

The hub client (client/hubclient.py) already bounds size, time, JSON depth and schema. This module
checks the *content* that can hurt: code and text.

- :func:`source_problem` — a ``train.py`` from a hub must be at most ``MAX_SOURCE_BYTES`` of UTF-8,
  parse, and nest at most ``protocol.MAX_AST_DEPTH`` AST levels (``parse_source`` refuses deeper
  trees, which would make ``ast.unparse`` and every ``ast.NodeVisitor`` — canonical hash, policy
  check, proposers — raise ``RecursionError``), and have a canonical hash.
- :func:`verify_served_code` — code the hub attributes to an experiment runs here only if the
  experiment's DSSE envelope verifies, is the experiment asked for, is signed by the key the hub
  names (a lying ``key_id`` is caught) and signs the ``child_sha256`` the code hashes to.
- :func:`screen_suggestions` — hub suggestions made safe for proposers and prompts: text through
  :func:`~autoresearch.client.safetext.safe_text`, and code kept only when it passes
  :func:`source_problem` and, for ``replicate``, :func:`verify_served_code`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from autoresearch.protocol import (
    EXPERIMENT_SCHEMA,
    MAX_SOURCE_BYTES,
    ExperimentRecord,
    ProtocolError,
    Suggestion,
    Verified,
    canonical_source_sha256,
    parse_source,
    sha256_hex,
    verify,
)

from .errors import BadHubResponse
from .hubclient import HubClient
from .safetext import safe_text

_logger = logging.getLogger(__name__)

def source_problem(source: str) -> str | None:
    """Why a ``train.py`` from a hub cannot be handled safely, or None when it can.

    Never raises: oversize, unparsable, too deeply nested (including the ``RecursionError`` and
    ``MemoryError`` CPython's parser raises for such input) all come back as a one-line reason.
    """
    size = len(source.encode("utf-8", errors="surrogatepass"))
    if size > MAX_SOURCE_BYTES:
        return f"train.py is {size} bytes, over the {MAX_SOURCE_BYTES}-byte limit"
    try:
        parse_source(source)
    except SyntaxError as exc:
        return f"train.py does not parse: line {exc.lineno}: {safe_text(str(exc.msg), one_line=True)}"
    except ValueError as exc:  # NUL bytes (Python 3.11)
        return f"train.py cannot be parsed: {safe_text(str(exc), one_line=True)}"
    try:
        canonical_source_sha256(source)  # the canonical hash must be computable too
    except (ProtocolError, RecursionError, MemoryError) as exc:
        return f"train.py has no canonical form: {safe_text(str(exc), one_line=True)}"
    return None


def verify_served_code(hub: HubClient, experiment_id: str, source: str, *, claimed_key_id: str | None = None) -> Verified:
    """Check code a hub serves as experiment ``experiment_id``'s child ``train.py``.

    Fetches the experiment's envelope and verifies it under its embedded key (bound to its key id).
    Returns the verification, whose ``keyid`` is the real signer (decide trust on that).

    Raises:
        HubUnavailable, RecordRejected: fetching the envelope failed.
        BadHubResponse: the envelope does not verify, is another experiment, is signed by another key
            than ``claimed_key_id``, or the code does not hash to the signed ``child_sha256``; or the
            code cannot be handled safely (:func:`source_problem`).
    """
    short = experiment_id[:12]
    problem = source_problem(source)
    if problem is not None:
        raise BadHubResponse(f"the hub's train.py for {short} is refused: {problem}")
    try:
        verified = verify(hub.envelope(experiment_id), expected_schema=EXPERIMENT_SCHEMA)
    except ProtocolError as exc:
        raise BadHubResponse(safe_text(f"the hub's envelope for {short} does not verify: {exc}", one_line=True)) from exc
    record = verified.record
    assert isinstance(record, ExperimentRecord)  # verify() checked the schema
    if verified.record_id != experiment_id:
        raise BadHubResponse(f"the hub's envelope for {short} is another experiment ({verified.record_id[:12]})")
    if claimed_key_id is not None and verified.keyid != claimed_key_id:
        raise BadHubResponse(
            f"the hub says {short} was signed by {claimed_key_id[:16]}…, but its envelope is signed by {verified.keyid[:16]}…"
        )
    if sha256_hex(source) != record.child_sha256:
        raise BadHubResponse(f"the hub's train.py for {short} does not hash to the signed child_sha256")
    return verified


def screen_suggestions(
    suggestions: Iterable[Suggestion],
    *,
    verify_code: Callable[[Suggestion], str | None],
) -> list[Suggestion]:
    """Suggestions safe to hand to proposers and prompts.

    Text fields (``direction``, ``rationale``) go through :func:`safe_text`. A suggestion carrying
    ``train_py`` keeps it only when :func:`source_problem` finds nothing and ``verify_code(s)``
    returns None (else the reason, logged; the suggestion stays, without its code).
    """
    out = []
    for s in suggestions:
        update: dict[str, object] = {
            "direction": safe_text(s.direction, one_line=True),
            "rationale": safe_text(s.rationale, one_line=True),
        }
        if s.train_py is not None:
            problem = source_problem(s.train_py) or verify_code(s)
            if problem is not None:
                _logger.warning("ignoring the code of the hub's %s suggestion %s: %s", s.kind, update["direction"], problem)
                update["train_py"] = None
        out.append(s.model_copy(update=update))
    return out
