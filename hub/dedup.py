"""Near-duplicate detection (DESIGN.md, "Deduplication and claims").

Two experiments on the same track and parent canonical hash, with different child canonical hashes,
are near-duplicates when either

- both change only numeric module-level constants (every direction is ``NAME ↑``/``NAME ↓``, seeds
  aside), the same set of them, with new values within a relative tolerance (:func:`autoresearch.hub.directions.near_duplicate_constants`, default ``rel_tol`` 0.05), or
- the token sets of their changes are similar: MinHash (datasketch, 128 permutations) over 3-token
  shingles of the changed lines of the diff between the *canonical* sources (so formatting and
  comments never count), with estimated Jaccard similarity at or above a threshold (default 0.9).

The MinHash signature is computed once at ingest and stored beside the experiment.
"""

from __future__ import annotations

import difflib
import functools
import json
import logging
import re
from typing import Any

import numpy as np
from datasketch import MinHash

from autoresearch.protocol import canonical_source

from . import directions

_logger = logging.getLogger(__name__)

NUM_PERM = 128
SHINGLE = 3
_TOKEN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|\d+(?:\.\d*)?(?:[eE][-+]?\d+)?|\S")

ConstChanges = dict[str, tuple[directions.ConstantValue, directions.ConstantValue]]


@functools.lru_cache(maxsize=256)
def canonical_text(source: str) -> str:
    """:func:`~autoresearch.protocol.canonical_source`, memoised: parents (the reference, community
    bests) recur in almost every submission, and parsing and unparsing a ``train.py`` costs
    milliseconds. Raises SchemaError when the source does not parse."""
    text: str = canonical_source(source)
    return text


def diff_tokens(parent_source: str, child_source: str) -> list[str]:
    """Tokens of the changed lines (``-``/``+`` prefixed) between the canonical forms of two sources."""
    a = canonical_text(parent_source).split("\n")
    b = canonical_text(child_source).split("\n")
    tokens: list[str] = []
    for line in difflib.unified_diff(a, b, lineterm="", n=0):
        if line.startswith(("---", "+++", "@@")):
            continue
        tokens.append(line[0])
        tokens.extend(_TOKEN.findall(line[1:]))
    return tokens


def minhash_bytes(tokens: list[str]) -> bytes | None:
    """The MinHash signature (``NUM_PERM`` uint64, little endian) of the token shingles; None if no tokens."""
    if not tokens:
        return None
    shingles = {" ".join(tokens[i : i + SHINGLE]) for i in range(max(1, len(tokens) - SHINGLE + 1))}
    mh = MinHash(num_perm=NUM_PERM, seed=1)
    mh.update_batch([s.encode("utf-8") for s in sorted(shingles)])
    return np.asarray(mh.hashvalues, dtype="<u8").tobytes()


def jaccard(a: bytes, b: bytes) -> float:
    """Estimated Jaccard similarity of two :func:`minhash_bytes` signatures (fraction of equal slots)."""
    va = np.frombuffer(a, dtype="<u8")
    vb = np.frombuffer(b, dtype="<u8")
    return float(np.count_nonzero(va == vb)) / float(len(va))


def const_changes(parent_source: str, child_source: str, direction_keys: list[str]) -> ConstChanges | None:
    """``{name: (old, new)}`` of the changed module-level constants (see :mod:`.directions`), or None
    when the change touches anything but constants (then only the MinHash rule can apply)."""
    numeric = [key for key in direction_keys if key != directions.SEED]
    if not numeric or not all(key.endswith((directions.UP, directions.DOWN)) for key in numeric):
        return None  # something other than numeric constants changed: only the MinHash rule applies
    changes = directions.changed_constants(parent_source, child_source)
    touched = {key.split(" ", 1)[0] for key in numeric}
    if not changes or not touched <= set(changes):
        return None
    return changes


def dump_changes(changes: ConstChanges) -> str:
    """JSON text of constant changes (tuples become lists)."""
    return json.dumps({k: list(v) for k, v in changes.items()}, sort_keys=True)


def load_changes(text: str | None) -> ConstChanges:
    """Inverse of :func:`dump_changes` (``{}`` for None)."""
    if not text:
        return {}
    return {k: (_tuple(v[0]), _tuple(v[1])) for k, v in json.loads(text).items()}


def _tuple(value: Any) -> Any:
    return tuple(_tuple(v) for v in value) if isinstance(value, list) else value


def is_near_duplicate(
    changes_a: ConstChanges,
    minhash_a: bytes | None,
    changes_b: ConstChanges,
    minhash_b: bytes | None,
    *,
    rel_tol: float,
    threshold: float,
) -> bool:
    """Whether two changes of one parent are near-duplicates (constants rule, or MinHash rule)."""
    if changes_a and directions.near_duplicate_constants(changes_a, changes_b, rel_tol=rel_tol):
        return True
    if minhash_a is None or minhash_b is None:
        return False
    return jaccard(minhash_a, minhash_b) >= threshold
