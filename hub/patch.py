"""Apply an experiment's unified diff to its parent ``train.py`` (strictly: every context line must
match) with `whatthepatch <https://github.com/cscorley/whatthepatch>`_.

A unified diff does not say whether the child ends with a newline unless it carries
``\\ No newline at end of file``; difflib never writes that marker, so the caller's expected SHA-256
decides between the two candidate texts (:func:`apply_to`).
"""

from __future__ import annotations

import logging

import whatthepatch
from whatthepatch.exceptions import WhatThePatchException

from autoresearch.protocol import sha256_hex

from .errors import Rejected

_logger = logging.getLogger(__name__)


def apply_to(parent: str, diff: str, expected_sha256: str) -> str:
    """The child text: ``diff`` applied to ``parent``, which must hash to ``expected_sha256``.

    An empty diff means the child is the parent.

    Raises:
        Rejected: ``diff_does_not_apply`` (not a single-file unified diff, or a context/removed line
            does not match the parent), or ``hash_mismatch`` (it applies, but the result's SHA-256 is
            not ``expected_sha256``).
    """
    if not diff.strip():
        candidates = [parent]
    else:
        lines = _apply_lines(parent, diff)
        text = "\n".join(lines)
        candidates = [text + "\n", text] if lines else [""]
    for candidate in candidates:
        if sha256_hex(candidate) == expected_sha256:
            return candidate
    raise Rejected(
        f"the diff applied to the parent gives sha256 {sha256_hex(candidates[0])[:12]}…, "
        f"not the record's child_sha256 {expected_sha256[:12]}…",
        code="hash_mismatch",
    )


def _apply_lines(parent: str, diff: str) -> list[str]:
    try:
        patches = list(whatthepatch.parse_patch(diff))
    except (WhatThePatchException, ValueError, IndexError) as exc:
        raise Rejected(f"diff is not a unified diff: {exc}", code="diff_does_not_apply") from exc
    if len(patches) != 1 or not patches[0].changes:
        raise Rejected(f"diff must change exactly one file (train.py), found {len(patches)}", code="diff_does_not_apply")
    if _body_lines(diff) != len(patches[0].changes):
        raise Rejected("diff holds lines outside its hunks (more than one file?)", code="diff_does_not_apply")
    try:
        result = whatthepatch.apply_diff(patches[0], parent)
    except (WhatThePatchException, ValueError, IndexError) as exc:
        raise Rejected(f"diff does not apply to the parent: {exc}", code="diff_does_not_apply") from exc
    if not isinstance(result, list):  # whatthepatch returns a tuple when the patch has rejects
        raise Rejected("diff does not apply to the parent", code="diff_does_not_apply")
    return result


def _body_lines(diff: str) -> int:
    """Hunk body lines of a diff (everything after the first ``@@`` but hunk headers and
    ``\\ No newline`` markers): the parser must have read every one of them."""
    lines = diff.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("@@")), len(lines))
    return sum(1 for line in lines[start:] if not line.startswith(("@@", "\\")))
