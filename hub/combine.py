"""Combine two kept experiments on the same parent into one ``train.py`` (a ``combine`` suggestion).

DESIGN.md ("Suggestions"): two kept experiments on the same parent that touch disjoint names are
merged by the hub, and the merged ``train.py`` is served ready to run. :func:`combine_sources` does a
three-way merge parent → (left, right) and refuses, with :class:`CombineRefused`, anything it cannot
prove clean:

1. both children change something, neither is a seed-only change, and their direction names are
   disjoint (``MLP`` overlaps ``MLP.forward``; ``<module>`` overlaps ``<module>``);
2. the line merge has no conflict. ``merge3`` (the bzr/breezy three-way merge, on PyPI) finds the
   regions. Like ``git merge-file`` it calls two edits on *adjacent* lines a conflict, which would
   refuse the most common combination (two hyperparameters on consecutive lines), so a conflict
   region is resolved at zero context: each side's edits inside the region (``difflib`` opcodes)
   are applied when they touch different lines, and refused when they overlap or insert at the same
   point;
3. the merged file parses, its directions against the parent are exactly the union of both sides'
   directions (so the merge neither lost nor invented a change), and it passes the static policy
   check :func:`autoresearch.trainer.policy.check_source`.

Pure logic: no torch, no FastAPI, no I/O.
"""

from __future__ import annotations

import difflib
import logging
from dataclasses import dataclass
from typing import Literal

import merge3

from autoresearch.protocol.errors import SchemaError
from autoresearch.trainer.policy import check_source

from .directions import MODULE, SEED, extract_directions

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
    merged = merge_three_way(parent, left, right)
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


def merge_three_way(base: str, left: str, right: str) -> str:
    """Line-level three-way merge (merge3, conflicts resolved at zero context when disjoint).

    Raises:
        CombineRefused: ``reason="conflict"`` when both sides edit the same lines or insert at the
            same point.
    """
    base_lines, left_lines, right_lines = (s.splitlines(keepends=True) for s in (base, left, right))
    _ensure_final_newline(base_lines, left_lines, right_lines)
    merger = merge3.Merge3(base_lines, left_lines, right_lines)
    out: list[str] = []
    for region in merger.merge_regions():
        if region[0] == "conflict":  # (kind, z1, z2, a1, a2, b1, b2)
            _, z1, z2, a1, a2, b1, b2 = region
            out.extend(_resolve(base_lines[z1:z2], left_lines[a1:a2], right_lines[b1:b2]))
            continue
        kind, start, end = region
        if kind == "unchanged":
            out.extend(base_lines[start:end])
        elif kind in ("a", "same"):
            out.extend(left_lines[start:end])
        elif kind == "b":
            out.extend(right_lines[start:end])
    return "".join(out)


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


def _ensure_final_newline(*line_lists: list[str]) -> None:
    for lines in line_lists:
        if lines and not lines[-1].endswith("\n"):
            lines[-1] += "\n"


_Edit = tuple[int, int, list[str]]  # replace base[i1:i2] with these lines


def _edits(base: list[str], side: list[str]) -> list[_Edit]:
    matcher = difflib.SequenceMatcher(None, base, side, autojunk=False)
    return [
        (i1, i2, side[j1:j2]) for tag, i1, i2, j1, j2 in matcher.get_opcodes() if tag != "equal"
    ]


def _clash(a: _Edit, b: _Edit) -> bool:
    """Edits clash when they replace a common base line or insert at the same point."""
    (a1, a2, _), (b1, b2, _) = a, b
    if max(a1, b1) < min(a2, b2):
        return True
    if a1 == a2 and b1 == b2:
        return a1 == b1
    if a1 == a2:
        return b1 < a1 < b2
    if b1 == b2:
        return a1 < b1 < a2
    return False


def _resolve(base: list[str], left: list[str], right: list[str]) -> list[str]:
    """Apply both sides' edits of one conflict region when no two of them clash."""
    edits: list[_Edit] = []
    left_edits, right_edits = _edits(base, left), _edits(base, right)
    for edit in left_edits + right_edits:
        if edit in edits:
            continue  # the same edit on both sides
        clashing = [other for other in edits if _clash(edit, other)]
        if clashing:
            raise CombineRefused(
                f"both experiments edit the same lines: {''.join(base[edit[0] : edit[1]]).strip()!r}",
                reason="conflict",
            )
        edits.append(edit)
    out: list[str] = []
    cursor = 0
    for i1, i2, lines in sorted(edits, key=lambda e: (e[0], e[1])):
        out.extend(base[cursor:i1])
        out.extend(lines)
        cursor = i2
    out.extend(base[cursor:])
    return out
