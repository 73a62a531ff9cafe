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


def served_source(hub: HubClient, sha256: str) -> str:
    """The ``train.py`` the hub stores under ``sha256``, checked to hash to it and be safe to handle.

    Raises:
        HubUnavailable, RecordRejected: fetching failed.
        BadHubResponse: the body hashes to something else, or :func:`source_problem` refuses it.
    """
    text = hub.source(sha256)
    if sha256_hex(text) != sha256:
        raise BadHubResponse(f"the hub's source {sha256[:12]}… does not hash to its name")
    problem = source_problem(text)
    if problem is not None:
        raise BadHubResponse(f"the hub's source {sha256[:12]}… is refused: {problem}")
    return text


def derive_combined(hub: HubClient, suggestion: Suggestion) -> tuple[str, list[str]]:
    """Re-derive a ``combine`` suggestion's merged ``train.py`` here, from signed experiments only.

    A combine is made by the hub and signed by nobody. Its ``evidence`` names the experiments merged
    (the first is the base of the fold) and ``parent_sha256`` their common parent. Each experiment's
    envelope is verified, its child fetched by hash, the parent too, and the fold redone with
    :func:`autoresearch.protocol.source.merge_three_way` — the merge the hub uses. The hub's file is
    accepted only when it is byte-identical to that result. Returns ``(train.py, signer key ids)``:
    decide trust on the signers.

    Raises:
        HubUnavailable, RecordRejected: fetching failed.
        BadHubResponse: a record does not verify, is not a child of the named parent, or the merge
            differs from the hub's file (or does not merge at all).
    """
    from autoresearch.protocol.source import MergeConflict, merge_three_way

    ids, parent_sha = suggestion.evidence, suggestion.parent_sha256
    if len(ids) < 2 or parent_sha is None or suggestion.train_py is None:
        raise BadHubResponse("a combine suggestion must name its parent and at least two experiments")
    parent = served_source(hub, parent_sha)
    children: list[str] = []
    signers: list[str] = []
    for experiment_id in ids:
        try:
            verified = verify(hub.envelope(experiment_id), expected_schema=EXPERIMENT_SCHEMA)
        except ProtocolError as exc:
            raise BadHubResponse(safe_text(f"the envelope of {experiment_id[:12]} does not verify: {exc}", one_line=True)) from exc
        record = verified.record
        assert isinstance(record, ExperimentRecord)
        if verified.record_id != experiment_id or record.parent_sha256 != parent_sha:
            raise BadHubResponse(f"experiment {experiment_id[:12]} is not a signed child of the combine's parent")
        children.append(served_source(hub, record.child_sha256))
        signers.append(verified.keyid)
    merged = children[0]
    try:
        for child in children[1:]:
            merged = merge_three_way(parent, merged, child)
    except MergeConflict as exc:
        raise BadHubResponse(f"the experiments of the combine do not merge here: {exc}") from exc
    if merged != suggestion.train_py:
        raise BadHubResponse("the hub's merged train.py is not the merge of the signed experiments it names")
    return merged, signers


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
