"""Canonical bytes and content ids.

There is exactly one function that turns a record into bytes: :func:`canonical_bytes`, the
RFC 8785 (JSON Canonicalization Scheme) serialisation of the model's JSON form. A record's id is the
hex SHA-256 of those bytes, so resubmitting the same record is idempotent everywhere.
"""

from __future__ import annotations

import ast
import hashlib
import threading
from typing import Any

import rfc8785
from pydantic import BaseModel

from .errors import SchemaError


def canonical_json(value: Any) -> bytes:
    """RFC 8785 canonical bytes of a JSON value (dicts, lists, str, int, float, bool, None).

    Raises:
        SchemaError: the value holds something JSON cannot carry exactly (NaN, ±inf, an integer
            beyond ±2**53, a non-string key).
    """
    try:
        return rfc8785.dumps(value)
    except (rfc8785.CanonicalizationError, TypeError, ValueError) as exc:
        raise SchemaError(f"value cannot be canonicalised (RFC 8785): {exc}") from exc


def canonical_bytes(record: BaseModel) -> bytes:
    """RFC 8785 canonical bytes of a record model (its ``model_dump(mode="json", by_alias=True)``).

    Raises:
        SchemaError: the model holds a value RFC 8785 cannot carry (see :func:`canonical_json`).
    """
    return canonical_json(record.model_dump(mode="json", by_alias=True))


def sha256_hex(data: bytes | str) -> str:
    """Hex SHA-256 of bytes (str is encoded as UTF-8)."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    return hashlib.sha256(data).hexdigest()


def record_id(record: BaseModel) -> str:
    """The record's id: hex SHA-256 of its canonical bytes (64 lowercase hex characters)."""
    return sha256_hex(canonical_bytes(record))


AST_LOCK = threading.RLock()
"""Held around every ``ast`` parse in this project (re-entrant, so callers may hold it around
larger blocks of AST work); see :func:`parse_source`."""


MAX_AST_DEPTH = 100
"""Deepest syntax tree a ``train.py`` may have (the reference's is 15). Deeper trees make the
recursive parts of ``ast`` (``unparse``, ``compile``, visitors) fail with RecursionError or
MemoryError, so :func:`parse_source` refuses them up front."""


def ast_shape(tree: ast.AST) -> tuple[int, int]:
    """``(depth, nodes)`` of a syntax tree, walked level by level (never recursion-limited). Inlines
    :func:`ast.iter_child_nodes` (1.3 ms against 1.9 ms for the 25 kB reference's 4,365 nodes)."""
    depth, nodes = 0, 0
    level: list[ast.AST] = [tree]
    while level:
        depth += 1
        nodes += len(level)
        below: list[ast.AST] = []
        for node in level:
            for name in node._fields:
                value = getattr(node, name, None)
                if isinstance(value, ast.AST):
                    below.append(value)
                elif isinstance(value, list):
                    below.extend(item for item in value if isinstance(item, ast.AST))
        level = below
    return depth, nodes


def parse_source(source: str, filename: str = "train.py") -> ast.Module:
    """``ast.parse`` behind a process-wide lock, refusing trees deeper than :data:`MAX_AST_DEPTH`
    (see :func:`parse_source_shape`).

    Raises:
        SyntaxError: as :func:`parse_source_shape`.
    """
    return parse_source_shape(source, filename)[0]


def parse_source_shape(source: str, filename: str = "train.py") -> tuple[ast.Module, int, int]:
    """``(tree, depth, nodes)``: :func:`parse_source` and the :func:`ast_shape` it measured anyway.

    CPython 3.11's C AST converter is not safe for concurrent use from several threads: two threads
    parsing at once can fail with ``SystemError: AST constructor recursion depth mismatch`` (seen on
    3.11.7 in the hub's thread pool). Every parse in this project goes through here.

    Raises:
        SyntaxError: the source does not parse, holds a NUL, or nests too deeply (the parser's own
            MemoryError/RecursionError on pathological nesting become a SyntaxError here too).
    """
    with AST_LOCK:
        try:
            tree = ast.parse(source, filename=filename)
        except (MemoryError, RecursionError):  # ``-`` * 10**5 + "1", "1+" * 10**5 + "1"
            raise SyntaxError(f"{filename} nests too deeply to parse (more than {MAX_AST_DEPTH} levels)") from None
        except ValueError as exc:  # older 3.11 releases: NUL bytes
            raise SyntaxError(f"{filename}: {exc}") from None
    depth, nodes = ast_shape(tree)
    if depth > MAX_AST_DEPTH:
        raise SyntaxError(f"{filename} nests {depth} levels deep; at most {MAX_AST_DEPTH} are allowed")
    return tree, depth, nodes


_HANDED_ON: dict[str, ast.Module] = {}  # source → its tree, oldest first
_HANDED_ON_SIZE = 8  # trees of sources checked but not (yet) analysed, e.g. refused records


def hand_on(source: str, tree: ast.Module) -> None:
    """Keep ``source``'s tree, from :func:`parse_source_shape`, for one later :func:`take_parsed`:
    the hub's limits parse a child first (hub/limits.py) and its analysis (protocol/source.py) then
    takes that tree instead of parsing the same text again (≈ 9 ms for 25 kB). The caller must be
    done reading the tree: the taker may change it."""
    with AST_LOCK:
        _HANDED_ON[source] = tree
        while len(_HANDED_ON) > _HANDED_ON_SIZE:
            _HANDED_ON.pop(next(iter(_HANDED_ON)))


def take_parsed(source: str) -> ast.Module:
    """The tree :func:`hand_on` kept for ``source`` (handed over once, so the caller may change it),
    else a fresh :func:`parse_source`.

    Raises:
        SyntaxError: as :func:`parse_source_shape`.
    """
    with AST_LOCK:
        tree = _HANDED_ON.pop(source, None)
    return tree if tree is not None else parse_source(source)


def canonical_source(source: str) -> str:
    """Canonical form of a ``train.py``: ``ast.unparse(ast.parse(source))``.

    Comments, blank lines and formatting disappear, so two files that differ only in those map to the
    same text (DESIGN.md, "Deduplication and claims").

    Raises:
        SchemaError: the source does not parse as Python.
    """
    try:
        tree = parse_source(source)
    except SyntaxError as exc:
        where = f"line {exc.lineno}: " if exc.lineno else ""
        raise SchemaError(f"train.py does not parse: {where}{exc.msg}", reason="unparsable_source") from exc
    with AST_LOCK:
        try:
            return ast.unparse(tree)
        except (MemoryError, RecursionError) as exc:  # bounded by MAX_AST_DEPTH; kept as a typed guard
            raise SchemaError("train.py nests too deeply to unparse", reason="unparsable_source") from exc


def canonical_source_sha256(source: str) -> str:
    """Hex SHA-256 of :func:`canonical_source` — the dedup key of a ``train.py``."""
    return sha256_hex(canonical_source(source))
