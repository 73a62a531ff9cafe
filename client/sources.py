"""Operations on ``train.py`` sources that the loop and the proposers share: hashes, unified diffs,
the seed-only test and the three-way merge used to rebase a prepared proposal onto a new best.
"""

from __future__ import annotations

import ast
import difflib
import functools
import re
import subprocess
import tempfile
from pathlib import Path

from autoresearch.protocol import (
    MAX_DIFF_BYTES,
    SchemaError,
    canonical_source_sha256,
    parse_source,
    sha256_hex,
)

_SEED_NAME = re.compile(r"SEED", re.IGNORECASE)


def source_sha256(source: str) -> str:
    """Hex SHA-256 of the UTF-8 source text."""
    digest: str = sha256_hex(source)
    return digest


@functools.lru_cache(maxsize=512)
def canonical_sha256_or_none(source: str) -> str | None:
    """Canonical ``train.py`` hash (``ast`` unparse, then SHA-256), or None when it does not parse.

    Memoised: the loop asks for the same sources several times per experiment, and parsing plus
    unparsing a full ``train.py`` costs tens of milliseconds.
    """
    try:
        digest: str = canonical_source_sha256(source)
    except SchemaError:
        return None
    return digest


def unified_diff(parent: str, child: str) -> str:
    """Unified diff parent → child with ``a/train.py`` / ``b/train.py`` headers ('' when equal)."""
    lines = difflib.unified_diff(
        parent.splitlines(keepends=True), child.splitlines(keepends=True), "a/train.py", "b/train.py"
    )
    out = []
    for line in lines:
        out.append(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n")
    return "".join(out)


def diff_too_large(parent: str, child: str) -> bool:
    """Whether the diff would exceed the protocol's ``MAX_DIFF_BYTES`` (256 KiB)."""
    limit: int = MAX_DIFF_BYTES
    return len(unified_diff(parent, child).encode("utf-8")) > limit


def changed_lines(parent: str, child: str) -> int:
    """Number of added plus removed lines between two sources."""
    return sum(
        1
        for line in difflib.unified_diff(parent.splitlines(), child.splitlines(), lineterm="", n=0)
        if line[:1] in "+-" and not line.startswith(("+++", "---"))
    )


def _blank_seeds(tree: ast.Module) -> str:
    for node in tree.body:
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AnnAssign):
            targets = [node.target]
        else:
            continue
        if any(isinstance(t, ast.Name) and _SEED_NAME.search(t.id) for t in targets):
            node.value = ast.Constant(None)
    return ast.dump(tree)


def only_seed_changed(parent: str, child: str) -> bool:
    """True when the two sources differ only in module-level ``*SEED*`` constants.

    Such a child measures seed noise, not an idea: the loop never counts it as an improvement
    (docs/architecture.md, direction key ``seed``). Formatting and comments are ignored.
    """
    changed = [line for line in unified_diff(parent, child).splitlines()[2:] if line[:1] in "+-"]
    if not any(_SEED_NAME.search(line) for line in changed):
        return False  # cheap: a seed-only change must touch a line that names a seed
    try:
        p, c = parse_source(parent), parse_source(child)
    except SyntaxError:
        return False
    if ast.dump(p) == ast.dump(c):
        return False
    return _blank_seeds(p) == _blank_seeds(c)


class MergeConflict(Exception):
    """A three-way merge of ``train.py`` versions conflicted (``conflicts`` hunks)."""

    def __init__(self, conflicts: int) -> None:
        super().__init__(f"three-way merge had {conflicts} conflicting hunk(s)")
        self.conflicts = conflicts


def three_way_merge(base: str, ours: str, theirs: str) -> str:
    """Merge the change base → theirs onto ours with ``git merge-file`` (diff3 semantics).

    Used to rebase a proposal prepared against ``base`` onto the new best ``ours``.

    Raises:
        MergeConflict: overlapping edits (the caller re-proposes).
        subprocess.CalledProcessError: git failed for another reason.
    """
    with tempfile.TemporaryDirectory(prefix="ar-merge-") as tmp:
        paths = []
        for name, text in (("ours", ours), ("base", base), ("theirs", theirs)):
            path = Path(tmp) / name
            path.write_text(text, encoding="utf-8")
            paths.append(str(path))
        proc = subprocess.run(
            ["git", "merge-file", "-p", "--quiet", *paths], capture_output=True, text=True, check=False
        )
    if 0 < proc.returncode < 128:  # the number of conflicts (git truncates it at 127)
        raise MergeConflict(proc.returncode)
    if proc.returncode != 0:  # git exits negative (255) on error
        raise subprocess.CalledProcessError(proc.returncode, "git merge-file", proc.stdout, proc.stderr)
    return proc.stdout
