"""Bounds at the edge: every limit a request must meet before the hub does any work on it.

One place for the checks that keep hostile bytes out (docs/hub.md, "Bounds at the edge"); each
refusal is a 4xx with its code from :data:`~autoresearch.hub.errors.STATUS_BY_CODE`, raised before
anything is stored. In the order a request meets them:

- **request shape** (:func:`check_parameters`, :func:`check_json_body`): no control character (NUL
  included) in a path or query parameter (``bad_parameter``); an envelope body is UTF-8
  (``not_utf8``), JSON (``malformed_json``, a key given twice included), at most
  :data:`MAX_JSON_DEPTH` deep (``json_too_deep``), with integers within ±(2**53 − 1)
  (``number_too_large``). Body size is the route dependency's (``body_too_large``).
- **numbers**: the protocol's valid ranges (``protocol/records.py``: finite, never subnormal,
  plausible magnitudes; reason ``out_of_range``), then the per-track ranges of
  :func:`track_bounds` (:func:`check_record`, ``out_of_range``) and a lease bound
  (``lease_too_long``).
- **text** (:func:`text_problem`): no control character but tab/newline/CR/form feed in the diff and
  the error tail, none at all in one-line fields, and no bidi embedding, override or isolate
  anywhere (they reorder what a reader sees: "Trojan Source", CVE-2021-42574) — ``bad_text``;
  display names follow :mod:`.names` (``bad_display_name``).
- **sources** (:func:`source_shape`, :func:`check_changes`): a ``train.py`` parses with at most
  :data:`~autoresearch.protocol.MAX_AST_DEPTH` levels (``unparsable_source``) and at most
  ``max_source_ast_nodes`` syntax-tree nodes (``source_too_complex``); an experiment changes at most
  ``max_changed_symbols`` top-level statements (``too_many_changes``), counted on source text so a
  change of thousands of constants is refused in milliseconds, before directions, near-duplicate
  fingerprints and MinHash cost seconds.
"""

from __future__ import annotations

import ast
import functools
import json
import math
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import pydantic_core
from starlette.requests import Request

from autoresearch.protocol import (
    MAX_TOKENS_PER_SECOND,
    CalibrationRecord,
    ClaimRecord,
    ClientRegistration,
    ExperimentRecord,
    SignedRecord,
    TrackSpec,
    hand_on,
    parse_source_shape,
)

from .errors import BadRequest, Rejected
from .names import check_display_name

MAX_JSON_DEPTH = 16
"""Deepest JSON a request body may be (a DSSE envelope is 3 levels deep)."""
MAX_SAFE_INT = 2**53 - 1
EARLIEST_RECORD = datetime(2025, 1, 1, tzinfo=UTC)
"""No record is older than the project; ``created_at`` before it is ``out_of_range``."""

# per-track ranges (see track_bounds)
VAL_BPB_PER_VOCAB_BIT = 8.0
"""val_bpb is at most this × log2(vocab_size): a uniform guess is ≤ log2(vocab) bits per byte."""
TRAINING_SLACK_SECONDS = 300.0
"""Training time is at most 2 × TIME_BUDGET (the harness's kill deadline) + this."""
RUN_SLACK_SECONDS = 3600.0
"""A run's total, start-up and evaluation times are at most 2 × TIME_BUDGET + this."""
MAX_STEPS_PER_SECOND = 1e5
CALIBRATION_BUDGET_RANGE = (1 / 64, 16.0)
"""A calibration's budgets lie within these multiples of TIME_BUDGET (calibrate runs ¼ … 2)."""

_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_MULTILINE_OK = frozenset("\t\n\r\x0c")
_CONTROLS = "".join(chr(c) for c in [*range(0x20), *range(0x7F, 0xA0)])  # Unicode category Cc, all 65 of them
_CONTROL = re.compile("[" + re.escape(_CONTROLS) + "]")
_BAD_ONE_LINE = re.compile("[" + re.escape(_CONTROLS + "".join(sorted(_BIDI_CONTROLS))) + "]")
_BAD_MULTILINE = re.compile(
    "[" + re.escape("".join(c for c in _CONTROLS if c not in _MULTILINE_OK) + "".join(sorted(_BIDI_CONTROLS))) + "]"
)
MULTILINE_FIELDS = frozenset({"diff", "error"})
"""Fields of a record that may span lines; every other string is one line."""


# --------------------------------------------------------------------------------------------------
# Request shape


def check_parameters(request: Request) -> None:
    """Refuse a control character (NUL included: PostgreSQL cannot store it) in the path or in any
    query parameter name or value, before any route or database sees it.

    Raises:
        BadRequest: ``bad_parameter``.
    """
    path = request.scope.get("path", "")
    if _has_control(path):
        raise BadRequest("the path holds a control character", code="bad_parameter")
    for name, value in request.query_params.multi_items():
        if _has_control(name) or _has_control(value):
            raise BadRequest(f"query parameter {ascii(name)[:40]} holds a control character", code="bad_parameter")


def _has_control(text: str) -> bool:
    return _CONTROL.search(text) is not None


def check_json_body(body: bytes) -> None:
    """Refuse a request body that is not plain, shallow JSON, before any model parses it.

    jiter (pydantic-core's parser) reads it first: it refuses invalid UTF-8, lone surrogates, nesting
    past 200 levels and numbers of thousands of digits without recursion; the standard parser then
    finds keys given twice (which parsers resolve differently), and one iterative walk bounds depth
    and integers.

    Raises:
        BadRequest: ``not_utf8``, ``malformed_json``, ``json_too_deep``, ``number_too_large``.
    """
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest(f"body is not UTF-8 (byte {exc.start})", code="not_utf8") from exc
    try:
        pydantic_core.from_json(body)
    except ValueError as exc:
        message = str(exc)
        if "recursion limit" in message:
            raise BadRequest(f"body nests deeper than {MAX_JSON_DEPTH} levels", code="json_too_deep") from exc
        if "number out of range" in message:
            raise BadRequest("body holds a number literal of thousands of digits", code="number_too_large") from exc
        raise BadRequest(f"body is not JSON: {message[:200]}", code="malformed_json") from exc
    value = json.loads(body, object_pairs_hook=_no_duplicate_keys)
    for depth, item in _walk(value):
        if depth > MAX_JSON_DEPTH:
            raise BadRequest(f"body nests deeper than {MAX_JSON_DEPTH} levels", code="json_too_deep")
        if isinstance(item, int) and not isinstance(item, bool) and abs(item) > MAX_SAFE_INT:
            raise BadRequest("body holds an integer beyond ±(2**53 − 1)", code="number_too_large")


def _no_duplicate_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        dup = next(k for k in keys if keys.count(k) > 1)
        raise BadRequest(f"body gives the key {ascii(dup)[:40]} twice", code="malformed_json")
    return dict(pairs)


def _walk(value: object) -> Iterator[tuple[int, object]]:
    """(depth, value) of every JSON value, iteratively; containers count one level."""
    stack: list[tuple[int, object]] = [(1, value)]
    while stack:
        depth, item = stack.pop()
        yield depth, item
        if isinstance(item, dict):
            stack.extend((depth + 1, v) for v in item.values())
        elif isinstance(item, list):
            stack.extend((depth + 1, v) for v in item)


# --------------------------------------------------------------------------------------------------
# Text


def text_problem(value: str, *, multiline: bool = False) -> str | None:
    """What is wrong with a string from a stranger, or None when it is plain text.

    One-line text holds no control character at all; multi-line text (diffs, tracebacks) may hold
    tab, newline, carriage return and form feed. Neither holds a bidi embedding, override or
    isolate (U+202A–U+202E, U+2066–U+2069)."""
    found = (_BAD_MULTILINE if multiline else _BAD_ONE_LINE).search(value)  # one C scan: 25 kB in ~0.1 ms
    if found is None:
        return None
    ch, i = found.group(), found.start()
    what = "a bidi control" if ch in _BIDI_CONTROLS else "a control character"
    return f"U+{ord(ch):04X} ({what}) at {i}"


def check_text(record: SignedRecord) -> None:
    """Every string of a record is plain text (:func:`text_problem`); a display name also follows
    :func:`~autoresearch.hub.names.check_display_name`.

    Raises:
        Rejected: ``bad_text`` naming the field, ``bad_display_name``.
    """
    for path, value in _strings(record.model_dump(mode="json", by_alias=True)):
        problem = text_problem(value, multiline=path.rsplit(".", 1)[-1] in MULTILINE_FIELDS)
        if problem is not None:
            raise Rejected(f"{path} holds {problem}; send plain text", code="bad_text")
    if isinstance(record, ClientRegistration):
        check_display_name(record.display_name)


def _strings(value: object, path: str = "") -> Iterator[tuple[str, str]]:
    if isinstance(value, str):
        yield path or "(record)", value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(item, f"{path}.{key}" if path else key)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _strings(item, f"{path}[{i}]")


# --------------------------------------------------------------------------------------------------
# Numbers, per track


@dataclass(frozen=True)
class TrackBounds:
    """The per-track valid ranges of a record's numbers (units in the names)."""

    max_val_bpb: float
    max_training_seconds: float
    max_run_seconds: float
    max_tokens: int
    max_steps: int
    min_budget_seconds: float
    max_budget_seconds: float


def track_bounds(spec: TrackSpec) -> TrackBounds:
    """The valid ranges of numbers in records of ``spec`` (docs/hub.md, "Bounds at the edge")."""
    budget = spec.time_budget
    training = 2 * budget + TRAINING_SLACK_SECONDS
    return TrackBounds(
        max_val_bpb=VAL_BPB_PER_VOCAB_BIT * math.log2(max(spec.vocab_size, 2)),
        max_training_seconds=training,
        max_run_seconds=2 * budget + RUN_SLACK_SECONDS,
        max_tokens=int(MAX_TOKENS_PER_SECOND * training),
        max_steps=int(MAX_STEPS_PER_SECOND * training),
        min_budget_seconds=budget * CALIBRATION_BUDGET_RANGE[0],
        max_budget_seconds=budget * CALIBRATION_BUDGET_RANGE[1],
    )


def check_record(record: SignedRecord, spec: TrackSpec | None, *, lease_margin_seconds: float = 0.0) -> None:
    """Every bound of one verified record that needs no database: text, ``created_at`` and, when its
    track is given, the per-track ranges of its numbers and its lease.

    Raises:
        Rejected: ``bad_text``, ``bad_display_name``, ``out_of_range``, ``lease_too_long``.
    """
    check_text(record)
    if record.created_at < EARLIEST_RECORD:
        raise Rejected(f"created_at {record.created_at.isoformat()} is before {EARLIEST_RECORD.date()}", code="out_of_range")
    if spec is None:
        return
    b = track_bounds(spec)
    if isinstance(record, ExperimentRecord):
        m = record.metrics
        _at_most("metrics.val_bpb", m.val_bpb, b.max_val_bpb)
        _at_most("parent_val_bpb", record.parent_val_bpb, b.max_val_bpb)
        _at_most("metrics.training_seconds", m.training_seconds, b.max_training_seconds)
        for name in ("total_seconds", "startup_seconds", "eval_seconds"):
            _at_most(f"metrics.{name}", getattr(m, name), b.max_run_seconds)
        _at_most("metrics.total_tokens", m.total_tokens, b.max_tokens)
        _at_most("metrics.num_steps", m.num_steps, b.max_steps)
    elif isinstance(record, CalibrationRecord):
        if not math.isclose(record.time_budget_seconds, spec.time_budget, rel_tol=1e-9):
            raise Rejected(
                f"time_budget_seconds is {record.time_budget_seconds:g}, but track {spec.id} trains for {spec.time_budget:g} s",
                code="out_of_range",
            )
        if record.min_budget_seconds > record.max_budget_seconds:
            raise Rejected("min_budget_seconds is above max_budget_seconds", code="out_of_range")
        budgets = [("min_budget_seconds", record.min_budget_seconds), ("max_budget_seconds", record.max_budget_seconds)]
        budgets += [(f"points[{i}].budget_seconds", p.budget_seconds) for i, p in enumerate(record.points)]
        for name, value in budgets:
            _within(name, value, b.min_budget_seconds, b.max_budget_seconds)
        for i, p in enumerate(record.points):
            _at_most(f"points[{i}].val_bpb", p.val_bpb, b.max_val_bpb)
            _at_most(f"points[{i}].training_seconds", p.training_seconds, 2 * p.budget_seconds + TRAINING_SLACK_SECONDS)
    elif isinstance(record, ClaimRecord):
        longest = 2 * spec.time_budget + lease_margin_seconds
        if record.lease_seconds > longest:
            raise Rejected(
                f"lease_seconds is {record.lease_seconds}; track {spec.id} allows at most {longest:.0f} "
                f"(2 × its {spec.time_budget:g} s budget + {lease_margin_seconds:g} s)",
                code="lease_too_long",
            )


def _at_most(name: str, value: float | None, hi: float) -> None:
    if value is not None and value > hi:
        raise Rejected(f"{name} is {value:g}; on this track it is at most {hi:g}", code="out_of_range")


def _within(name: str, value: float, lo: float, hi: float) -> None:
    if not lo <= value <= hi:
        raise Rejected(f"{name} is {value:g}; on this track it lies in [{lo:g}, {hi:g}]", code="out_of_range")


# --------------------------------------------------------------------------------------------------
# Sources


@dataclass(frozen=True)
class SourceShape:
    """What bounds the cost of a ``train.py``: tree depth and node count, and its top-level
    statements as whitespace-free source text (for :func:`changed_statements`)."""

    depth: int
    nodes: int
    statements: tuple[str, ...]


@functools.lru_cache(maxsize=64)
def source_shape(text: str) -> SourceShape:
    """Parse ``text`` once (parents recur, so the answer is memoised) and measure it.

    Raises:
        Rejected: ``unparsable_source`` (a syntax error, a NUL, nesting beyond MAX_AST_DEPTH),
            ``bad_text`` (a bidi control).
    """
    problem = text_problem(text, multiline=True)
    if problem is not None and "bidi" in problem:
        raise Rejected(f"train.py holds {problem}", code="bad_text")
    try:
        tree, depth, nodes = parse_source_shape(text)
    except SyntaxError as exc:
        where = f"line {exc.lineno}: " if exc.lineno else ""
        raise Rejected(f"train.py does not parse: {where}{exc.msg}", code="unparsable_source") from exc
    lines = text.splitlines(keepends=True)
    shape = SourceShape(depth=depth, nodes=nodes, statements=tuple(_segment(lines, stmt) for stmt in tree.body))
    hand_on(text, tree)  # the analysis that follows (protocol.source) takes this tree instead of parsing again
    return shape


def _segment(lines: list[str], node: ast.stmt) -> str:
    """The statement's source text without whitespace (so re-indenting or re-wrapping is no change)."""
    end = node.end_lineno or node.lineno
    if node.lineno == end:
        text = lines[node.lineno - 1][node.col_offset : node.end_col_offset]
    else:
        text = lines[node.lineno - 1][node.col_offset :] + "".join(lines[node.lineno : end - 1])
        text += lines[end - 1][: node.end_col_offset]
    return "".join(text.split())


def check_source(text: str, *, max_nodes: int) -> SourceShape:
    """:func:`source_shape`, refusing a tree of more than ``max_nodes`` nodes.

    Raises:
        Rejected: ``source_too_complex``, or as :func:`source_shape`.
    """
    shape = source_shape(text)
    if shape.nodes > max_nodes:
        raise Rejected(
            f"train.py has {shape.nodes} syntax-tree nodes; this hub takes at most {max_nodes}",
            code="source_too_complex",
        )
    return shape


def changed_statements(parent: SourceShape, child: SourceShape) -> int:
    """How many top-level statements the change touches: the larger of those only the parent has
    and those only the child has (a statement changed in place counts once)."""
    a, b = Counter(parent.statements), Counter(child.statements)
    return max(sum((a - b).values()), sum((b - a).values()))


def check_changes(parent: str, child: str, *, max_nodes: int, max_changed: int) -> None:
    """Bound what an experiment costs before directions and fingerprints are derived from it.

    Raises:
        Rejected: ``too_many_changes``, ``source_too_complex``, ``unparsable_source``, ``bad_text``.
    """
    child_shape = check_source(child, max_nodes=max_nodes)
    changed = changed_statements(source_shape(parent), child_shape)
    if changed > max_changed:
        raise Rejected(
            f"the experiment changes {changed} top-level statements of train.py; this hub takes at most "
            f"{max_changed} per experiment (split the change)",
            code="too_many_changes",
        )
