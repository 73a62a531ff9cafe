"""Combine two kept experiments on the same parent into one ``train.py`` (a ``combine`` suggestion).

DESIGN.md ("Suggestions"): two kept experiments on the same parent that touch disjoint names are
merged by the hub, and the merged ``train.py`` is served ready to run. :func:`combine_sources` does a
three-way merge parent → (left, right) and refuses, with :class:`CombineRefused`, anything it cannot
prove clean:

1. both children change something, neither is a seed-only change, and their direction names are
   disjoint (``MLP`` overlaps ``MLP.forward``; ``<module>`` overlaps ``<module>``);
2. the line merge has no conflict: :func:`autoresearch.protocol.source.merge_three_way`, the one
   three-way merge of the project (the client's rebase uses it too), which also merges edits on
   adjacent lines;
3. the merged file parses, its directions against the parent are exactly the union of both sides'
   directions (so the merge neither lost nor invented a change), and it passes the static policy
   check :func:`autoresearch.trainer.policy.check_source`.

Pure logic: no torch, no FastAPI, no I/O.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

from autoresearch.protocol.errors import SchemaError
from autoresearch.protocol.source import (
    MODULE,
    SEED,
    MergeConflict,
    extract_directions,
    merge_three_way,
)
from autoresearch.trainer.policy import check_source

_logger = logging.getLogger(__name__)

RefusalReason = Literal[
    "no_change", "seed_only", "overlap", "conflict", "unparsable", "drift", "policy"
]


class CombineRefused(ValueError):
    """The two experiments cannot be combined; ``reason`` says why (see :data:`RefusalReason`)."""

    def __init__(self, message: str, *, reason: RefusalReason) -> None:
        super().__init__(message)
        self.reason: RefusalReason = reason


@dataclass(frozen=True)
class Combined:
    """A clean merge: the merged ``train.py`` and its directions against the common parent."""

    train_py: str
    directions: list[str]
    left_directions: list[str]
    right_directions: list[str]


def combine_sources(parent: str, left: str, right: str) -> Combined:
    """Three-way merge of two children of ``parent`` that change disjoint top-level names.

    Args:
        parent: the common parent ``train.py``.
        left: one kept child of ``parent``.
        right: another kept child of ``parent``.

    Returns:
        :class:`Combined` with the merged source.

    Raises:
        CombineRefused: the changes overlap, conflict, do not parse, drift from the union of the two
            changes, or fail the policy check (``reason`` names which).
    """
    try:
        left_dirs = extract_directions(parent, left)
        right_dirs = extract_directions(parent, right)
    except SchemaError as exc:
        raise CombineRefused(str(exc), reason="unparsable") from exc
    _check_disjoint(left_dirs, right_dirs)
    try:
        merged = merge_three_way(parent, left, right)
    except MergeConflict as exc:
        raise CombineRefused(str(exc), reason="conflict") from exc
    try:
        merged_dirs = extract_directions(parent, merged)
    except SchemaError as exc:
        raise CombineRefused(f"merged train.py does not parse: {exc}", reason="unparsable") from exc
    expected = sorted(set(left_dirs) | set(right_dirs))
    if merged_dirs != expected:
        raise CombineRefused(
            f"merged train.py changes {merged_dirs}, expected exactly {expected}", reason="drift"
        )
    findings = check_source(merged)
    if findings:
        raise CombineRefused(
            f"merged train.py fails the policy check: {'; '.join(findings)}", reason="policy"
        )
    return Combined(
        train_py=merged,
        directions=merged_dirs,
        left_directions=left_dirs,
        right_directions=right_dirs,
    )


def direction_names(directions: list[str]) -> set[str]:
    """The symbols a list of direction keys touches: ``MATRIX_LR ↑`` → ``MATRIX_LR``."""
    return {d.split(" ", 1)[0] for d in directions}


def overlapping(left_directions: list[str], right_directions: list[str]) -> set[str]:
    """Symbols both sides touch; a class overlaps its own methods (``MLP`` vs ``MLP.forward``)."""
    left, right = direction_names(left_directions), direction_names(right_directions)
    shared = left & right
    for a in left:
        for b in right:
            if b.startswith(a + ".") or a.startswith(b + "."):
                shared.update((a, b))
    return shared


# --------------------------------------------------------------------------------------------------


def _check_disjoint(left_dirs: list[str], right_dirs: list[str]) -> None:
    if not left_dirs or not right_dirs:
        raise CombineRefused(
            "one side changes nothing (comments or formatting only)", reason="no_change"
        )
    if SEED in left_dirs or SEED in right_dirs:
        raise CombineRefused("a seed change is not a finding to combine", reason="seed_only")
    shared = overlapping(left_dirs, right_dirs)
    if shared:
        where = ", ".join(sorted(shared))
        hint = " (both change module-level code)" if MODULE in shared else ""
        raise CombineRefused(f"both experiments change {where}{hint}", reason="overlap")
