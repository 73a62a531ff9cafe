"""Source analysis of ``train.py``: the one definition the client, the hub, the proposers and the
simulator share (docs/architecture.md, "Source analysis"). Torch-free and FastAPI-free.

Sections, top to bottom:

1. **Hashes**: :func:`source_sha256` (the text), :func:`canonical_text` / :func:`canonical_sha256`
   (``ast`` unparse, DESIGN.md "Deduplication and claims"), memoised.
2. **Diff and patch**: :func:`unified_diff` (``a/train.py`` → ``b/train.py``) and :func:`apply_diff`
   (strict: every context line must match; `whatthepatch`_).
3. **Seeding**: :func:`seed_names` and the blanking that makes a change *seed-only* — any change whose
   only effect is on random seeding, whatever its spelling (see "Seeding" below).
4. **Directions**: :func:`extract_directions` (AST difference parent → child as direction keys),
   :func:`possible_directions`, :func:`is_seed_only`.
5. **Near-duplicates**: :func:`changed_constants`, :func:`near_duplicate_constants`,
   :func:`const_changes`, :func:`diff_tokens`, :func:`minhash_signature`, :func:`jaccard`,
   :func:`is_near_duplicate`.
6. **Three-way merge**: :func:`merge_three_way` (merge3, conflicts re-resolved at zero context) and
   :func:`rebase` (the loop's rebase of a prepared proposal onto a new best; a merge that changes
   something else than the proposal did is a conflict).

Direction keys (docs/architecture.md, "Direction keys"):

- ``NAME ↑`` / ``NAME ↓``: a module-level numeric constant went up / down (``MATRIX_LR = 0.04`` →
  ``0.05``). Numeric means an int/float literal or arithmetic over literals and earlier numeric
  constants (``2**19``, ``-1``, ``TOTAL // 8``).
- ``NAME``: any other change of a top-level name: a non-numeric constant, a function, a class added,
  removed or changed outside its methods, an import.
- ``Class.method``: a method whose body changed (or that was added or removed in a kept class).
- ``<module>``: other module-level code that binds no name (the training loop, a bare call).
- ``seed``: a statement whose change is a seeding change only (below). A change whose every
  direction is ``seed`` is seed-only: a re-run under other random numbers, never a gain.

Seeding. A *seed sink* is an argument of a seeding call — a call whose function name has the word
``seed`` (``torch.manual_seed``, ``manual_seed_all``, ``random.seed``, ``np.random.seed``,
``set_seed``, ``seed_everything``) or is an RNG constructor (``random.Random``,
``np.random.default_rng``, ``RandomState``, ``SeedSequence``, ``PCG64``, …) — or the value of a
``seed=`` / ``random_state=`` keyword of any call. A *seed name* is a variable whose every read is
inside a seed sink or feeds another seed name (data flow, to a fixed point); a variable that is
never read counts when its name has the word ``seed`` (``SEED``, ``DATA_SEED``). Blanking a source
replaces every seed sink by a placeholder and drops the assignments of seed names and the
statements that are only a seeding call. Two sources whose blanked forms agree differ only in how
random numbers are seeded. So ``SEED = 42`` → ``7``, ``torch.manual_seed(SEED + h.seed)`` →
``torch.manual_seed(7 + h.seed)``, ``S = 1; random.seed(S)`` → ``S = 2`` and adding a
``torch.manual_seed(0)`` line are all seed-only, while ``SEED = 42`` → ``7`` where ``SEED`` also sets
``range(SEED)`` is not (it changes more than seeding).

Decision: **a count of seeds is not a seed**. ``NUM_SEEDS = 2`` → ``4`` (the word is ``seeds``, and
the value is a count that is read outside any seeding call, e.g. ``range(NUM_SEEDS)``) changes how
much is computed or averaged, so it is a real change with a direction (``NUM_SEEDS ↑``) and is
measured like any other. The offline proposer never mutates seed names (:func:`seed_names`).

Pure logic: no I/O. :func:`minhash_signature` imports ``datasketch`` on first use (hub and agent
extras); everything else needs only the base dependencies (``merge3``, ``whatthepatch``).

.. _whatthepatch: https://github.com/cscorley/whatthepatch
"""

from __future__ import annotations

import ast
import copy
import difflib
import json
import logging
import math
import operator
import re
import sys
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from typing import Any, Literal, TypeAlias, TypeGuard

import merge3
import whatthepatch
from whatthepatch.exceptions import WhatThePatchException

from .canonical import AST_LOCK, sha256_hex, take_parsed
from .errors import ProtocolError, SchemaError
from .records import MAX_DIFF_BYTES

_logger = logging.getLogger(__name__)

UP = "↑"
DOWN = "↓"
SEED = "seed"
MODULE = "<module>"

ConstantValue: TypeAlias = int | float | bool | str | bytes | tuple[object, ...] | None
"""A literal value of a module-level constant (``None`` also stands for "absent")."""

ConstChanges: TypeAlias = dict[str, tuple[ConstantValue, ConstantValue]]
"""``{name: (old, new)}`` of changed module-level constants."""


# ==================================================================================================
# 1. Hashes


def source_sha256(source: str) -> str:
    """Hex SHA-256 of the UTF-8 source text (the ``parent_sha256`` / ``child_sha256`` of a record)."""
    return sha256_hex(source)


def canonical_text(source: str) -> str:
    """:func:`~autoresearch.protocol.canonical_source`, memoised: parents (the reference, community
    bests) recur in almost every call, and parsing plus unparsing a ``train.py`` costs milliseconds.
    Computed by the same single parse as the source's direction summary (:func:`_analysis`).

    Raises:
        SchemaError: the source does not parse (``reason="unparsable_source"``).
    """
    try:
        return _analysis(source).canonical
    except SyntaxError as exc:
        where = f"line {exc.lineno}: " if exc.lineno else ""
        raise SchemaError(f"train.py does not parse: {where}{exc.msg}", reason="unparsable_source") from exc


def canonical_sha256(source: str) -> str:
    """Hex SHA-256 of :func:`canonical_text` — the dedup key of a ``train.py``. Raises SchemaError."""
    return sha256_hex(canonical_text(source))


def canonical_sha256_or_none(source: str) -> str | None:
    """:func:`canonical_sha256`, or None when the source does not parse."""
    try:
        return canonical_sha256(source)
    except SchemaError:
        return None


# ==================================================================================================
# 2. Diff and patch


class PatchError(ProtocolError):
    """A record's diff does not give its child: ``reason`` is ``diff_does_not_apply`` (not a
    single-file unified diff, or a context/removed line does not match the parent) or
    ``hash_mismatch`` (it applies, but the result does not hash to the expected SHA-256)."""

    reason = "diff_does_not_apply"


def unified_diff(parent: str, child: str) -> str:
    """Unified diff parent → child with ``a/train.py`` / ``b/train.py`` headers (``''`` when equal).

    A last line without a newline gets git's ``\\ No newline at end of file`` marker, so
    :func:`apply_diff` gives back the exact child.
    """
    lines = difflib.unified_diff(
        parent.splitlines(keepends=True), child.splitlines(keepends=True), "a/train.py", "b/train.py"
    )
    return "".join(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n" for line in lines)


def diff_too_large(parent: str, child: str) -> bool:
    """Whether the diff would exceed the protocol's ``MAX_DIFF_BYTES`` (256 KiB)."""
    return len(unified_diff(parent, child).encode("utf-8")) > MAX_DIFF_BYTES


def changed_lines(parent: str, child: str) -> int:
    """Number of added plus removed lines between two sources."""
    return sum(
        1
        for line in difflib.unified_diff(parent.splitlines(), child.splitlines(), lineterm="", n=0)
        if line[:1] in "+-" and not line.startswith(("+++", "---"))
    )


def apply_diff(parent: str, diff: str, expected_sha256: str) -> str:
    """The child text: ``diff`` applied to ``parent`` (strictly), which must hash to ``expected_sha256``.

    An empty diff means the child is the parent. A unified diff does not say whether the child ends
    with a newline unless it carries ``\\ No newline at end of file`` (difflib never writes it), so
    the expected hash decides between the two candidate texts.

    Raises:
        PatchError: ``diff_does_not_apply`` or ``hash_mismatch`` (see :class:`PatchError`).
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
    raise PatchError(
        f"the diff applied to the parent gives sha256 {sha256_hex(candidates[0])[:12]}…, "
        f"not the record's child_sha256 {expected_sha256[:12]}…",
        reason="hash_mismatch",
    )


def _apply_lines(parent: str, diff: str) -> list[str]:
    try:
        patches = list(whatthepatch.parse_patch(diff))
    except (WhatThePatchException, ValueError, IndexError) as exc:
        raise PatchError(f"diff is not a unified diff: {exc}") from exc
    if len(patches) != 1 or not patches[0].changes:
        raise PatchError(f"diff must change exactly one file (train.py), found {len(patches)}")
    if _body_lines(diff) != len(patches[0].changes):
        raise PatchError("diff holds lines outside its hunks (more than one file?)")
    try:
        result = whatthepatch.apply_diff(patches[0], parent)
    except (WhatThePatchException, ValueError, IndexError) as exc:
        raise PatchError(f"diff does not apply to the parent: {exc}") from exc
    if not isinstance(result, list):  # whatthepatch returns a tuple when the patch has rejects
        raise PatchError("diff does not apply to the parent")
    return result


def _body_lines(diff: str) -> int:
    """Hunk body lines of a diff (after the first ``@@``, hunk headers and ``\\ No newline`` markers
    excluded): the parser must have read every one of them."""
    lines = diff.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("@@")), len(lines))
    return sum(1 for line in lines[start:] if not line.startswith(("@@", "\\")))


# ==================================================================================================
# 3. Seeding

_RNG_CONSTRUCTORS = frozenset(
    {"Random", "SystemRandom", "RandomState", "default_rng", "SeedSequence", "PCG64", "PCG64DXSM",
     "Philox", "MT19937", "SFC64"}
)
_SEED_KEYWORDS = frozenset({"seed", "random_state"})
_WORD = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+")
_PLACEHOLDER = "<seed>"


def _words(name: str) -> list[str]:
    """Lower-case words of an identifier: ``DATA_SEED`` → data, seed; ``baseSeed`` → base, seed."""
    return [w.lower() for w in _WORD.findall(name)]


def _has_seed_word(name: str) -> bool:
    return SEED in _words(name)


def _call_name(node: ast.Call) -> str:
    func = node.func
    if isinstance(func, ast.Attribute):
        return func.attr
    return func.id if isinstance(func, ast.Name) else ""


def _is_seeding_call(node: ast.AST) -> TypeGuard[ast.Call]:
    """``torch.manual_seed(…)``, ``random.seed(…)``, ``np.random.default_rng(…)``, ``Random(…)`` …"""
    if not isinstance(node, ast.Call):
        return False
    name = _call_name(node)
    return _has_seed_word(name) or name in _RNG_CONSTRUCTORS


def _sinks(node: ast.Call) -> list[ast.expr]:
    """The seed-sink expressions of one call: every argument of a seeding call, else the values of
    ``seed=`` / ``random_state=`` keywords."""
    if _is_seeding_call(node):
        return [*node.args, *(k.value for k in node.keywords)]
    return [k.value for k in node.keywords if k.arg in _SEED_KEYWORDS]


def _assigned_names(node: ast.stmt) -> list[str]:
    """Plain names an assignment statement stores (``a = …``, ``a, b = …``, ``a: int = …``, ``a += …``)."""
    targets: list[ast.expr]
    if isinstance(node, ast.Assign):
        targets = list(node.targets)
    elif isinstance(node, ast.AnnAssign | ast.AugAssign):
        targets = [node.target]
    else:
        return []
    out: list[str] = []
    for target in targets:
        for sub in ast.walk(target):
            if isinstance(sub, ast.Name) and isinstance(sub.ctx, ast.Store):
                out.append(sub.id)
    return out


def _is_plain_assignment(node: ast.stmt) -> bool:
    """An assignment whose targets are all plain names (``a = …``, ``a, b = …``)."""
    if isinstance(node, ast.Assign):
        return all(isinstance(t, ast.Name | ast.Tuple | ast.List) for t in node.targets) and all(
            isinstance(e, ast.Name)
            for t in node.targets
            for e in (t.elts if isinstance(t, ast.Tuple | ast.List) else [t])
        )
    return isinstance(node, ast.AnnAssign | ast.AugAssign) and isinstance(node.target, ast.Name)


class _Reads(ast.NodeVisitor):
    """Every read of a name, with whether it is inside a seed sink and which names the enclosing
    assignment stores (the data flow :func:`seed_names` follows)."""

    def __init__(self) -> None:
        self.stored: set[str] = set()
        self.reads: list[tuple[str, bool, frozenset[str]]] = []  # (name, in_sink, assignment targets)
        self._in_sink = 0
        self._targets: frozenset[str] = frozenset()

    def visit_Call(self, node: ast.Call) -> None:
        sinks = {id(s) for s in _sinks(node)}
        self.visit(node.func)
        for child in [*node.args, *(k.value for k in node.keywords)]:
            inside = id(child) in sinks
            self._in_sink += inside
            self.visit(child)
            self._in_sink -= inside

    def _assignment(self, node: ast.Assign | ast.AnnAssign | ast.AugAssign) -> None:
        names = _assigned_names(node)
        self.stored.update(names)
        targets = frozenset(names) if _is_plain_assignment(node) else frozenset()
        outer, self._targets = self._targets, targets
        if node.value is not None:
            self.visit(node.value)
        self._targets = outer
        target_list = node.targets if isinstance(node, ast.Assign) else [node.target]
        for target in target_list:
            self.visit(target)  # subscripts and attributes read names too (``a[i] = …``)
        if isinstance(node, ast.AugAssign) and isinstance(node.target, ast.Name):  # ``a += 1`` reads ``a``
            self.reads.append((node.target.id, False, targets))
        if isinstance(node, ast.AnnAssign):
            self.visit(node.annotation)

    visit_Assign = _assignment
    visit_AnnAssign = _assignment
    visit_AugAssign = _assignment

    def visit_Name(self, node: ast.Name) -> None:
        if isinstance(node.ctx, ast.Load):
            self.reads.append((node.id, self._in_sink > 0, self._targets))
        else:
            self.stored.add(node.id)


_Read = tuple[str, bool, frozenset[str]]
_READS_MEMO: dict[bytes, tuple[frozenset[str], tuple[_Read, ...]]] = {}


def _statement_reads(node: ast.stmt, segment: bytes | None) -> tuple[frozenset[str], tuple[_Read, ...]]:
    """``(stored names, reads)`` of one top-level statement (:class:`_Reads`), memoised by its exact
    source text like :func:`_statement_dumps`: a child repeats its parent's statements."""
    if segment is not None and (hit := _READS_MEMO.get(segment)) is not None:
        return hit
    reads = _Reads()
    reads.visit(node)
    found = (frozenset(reads.stored), tuple(reads.reads))
    if segment is not None:
        if len(_READS_MEMO) >= _STATEMENT_MEMO_SIZE:
            _READS_MEMO.clear()
        _READS_MEMO[segment] = found
    return found


def _seed_names_of(module: ast.Module, segments: _Segments | None = None) -> frozenset[str]:
    stored: set[str] = set()
    all_reads: list[_Read] = []
    for node in module.body:  # top-level statements are independent: _Reads starts each outside sinks and targets
        names_stored, reads = _statement_reads(node, segments.of(node) if segments else None)
        stored |= names_stored
        all_reads.extend(reads)
    used = {name for name, _, _ in all_reads}
    names = {n for n in stored if n in used or _has_seed_word(n)}  # a never-read name seeds nothing
    changed = True
    while changed:  # drop every name read outside a sink and outside the value of a seed name
        changed = False
        for name, in_sink, targets in all_reads:
            if name in names and not in_sink and not (targets and targets <= names):
                names.discard(name)
                changed = True
    return frozenset(names)


def seed_names(source: str) -> frozenset[str]:
    """Names of ``source`` that only seed random number generators (see "Seeding" above).

    Raises:
        SchemaError: the source does not parse (``reason="unparsable_source"``).
    """
    return _summary(source, "source").seed_names


class _Blank(ast.NodeTransformer):
    """Replace seed sinks by a placeholder; drop seed-name assignments and bare seeding calls."""

    def __init__(self, names: frozenset[str]) -> None:
        self.names = names

    def visit_Call(self, node: ast.Call) -> ast.Call:
        sinks = {id(s) for s in _sinks(node)}
        node.func = self.visit(node.func)
        node.args = [ast.Constant(_PLACEHOLDER) if id(a) in sinks else self.visit(a) for a in node.args]
        for k in node.keywords:
            k.value = ast.Constant(_PLACEHOLDER) if id(k.value) in sinks else self.visit(k.value)
        return node

    def _drop_if_seed(self, node: ast.stmt) -> ast.stmt | None:
        names = _assigned_names(node)
        if names and _is_plain_assignment(node) and set(names) <= self.names:
            return None
        return self.generic_visit(node)  # type: ignore[return-value]

    visit_Assign = _drop_if_seed
    visit_AnnAssign = _drop_if_seed
    visit_AugAssign = _drop_if_seed

    def visit_Expr(self, node: ast.Expr) -> ast.stmt | None:
        if _is_seeding_call(node.value):
            return None
        return self.generic_visit(node)  # type: ignore[return-value]


def _blanked_dump(node: ast.stmt, names: frozenset[str]) -> str:
    """:func:`_dump` of the statement with its seeding blanked; ``""`` when nothing but seeding."""
    blanked = _Blank(names).visit(copy.deepcopy(node))
    return "" if blanked is None else _dump(blanked)


# ==================================================================================================
# 4. Directions

_MAX_POW_EXPONENT = 64  # refuse to evaluate 10**10**10 and friends
_BINOPS: dict[type[ast.operator], Callable[[float, float], float]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}


def extract_directions(parent_source: str, child_source: str) -> list[str]:
    """Direction keys of the change parent → child (sorted, deduplicated; ``[]`` for no change).

    Returns:
        e.g. ``["MATRIX_LR ↑", "MLP.forward"]``; ``["seed"]`` for a seed-only change; ``[]`` when only
        comments, docstrings or formatting differ.

    Raises:
        SchemaError: either source does not parse as Python (``reason="unparsable_source"``).
    """
    parent = _summary(parent_source, "parent")
    child = _summary(child_source, "child")
    directions: set[str] = set()
    for key in parent.statements.keys() | child.statements.keys():
        if parent.statements.get(key, []) == child.statements.get(key, []):
            continue
        if parent.blanked.get(key, []) == child.blanked.get(key, []):
            directions.add(SEED)
            continue
        directions.add(_direction_of(key, parent, child))
    directions.discard("")
    return sorted(directions)


def is_seed_only(directions: Sequence[str]) -> bool:
    """True when the directions are exactly ``["seed"]``: a re-run under other random numbers,
    never a gain (the loop never keeps it as an improvement; the hub never ranks it)."""
    return list(directions) == [SEED]


def possible_directions(source: str) -> list[str]:
    """Every direction a change of this ``train.py`` could have, in source order.

    ``NAME ↑`` and ``NAME ↓`` for numeric UPPER_CASE module-level constants, ``NAME`` for other
    UPPER_CASE constants and for functions, ``Class.method`` for methods, ``<module>`` when there is
    module-level code. Imports, seed names, lowercase module-level variables (program state such as
    ``model``) and a class outside its methods are left out. The suggestion engine's ``explore``
    candidates come from the track's reference ``train.py`` through this.

    Raises:
        SchemaError: the source does not parse as Python.
    """
    return list(_possible_directions(source))


@lru_cache(maxsize=16)
def _possible_directions(source: str) -> tuple[str, ...]:
    summary = _summary(source, "source")
    out: list[str] = []
    for key in summary.statements:
        if key in summary.imported or key in summary.classes or key in summary.seed_names:
            continue
        if "." not in key and key != MODULE and not key.isupper() and key not in summary.functions:
            continue  # a lowercase module-level variable (model, t_start) is program state
        out.extend((f"{key} {UP}", f"{key} {DOWN}") if key in summary.numeric else (key,))
    return tuple(out)


class _Summary:
    """The parts of a module that directions compare.

    ``statements``: key → formatting-free dumps of the statements under that key, in source order
    (a key is a top-level name, ``Class.method``, ``Class`` — the class outside its methods — or
    ``<module>``); ``blanked``: the same with seeding blanked (empty dumps left out).
    ``constants``: module-level literal constants (seed names excluded); ``numeric``: the numeric
    ones. ``seed_names``: :func:`seed_names`.
    """

    def __init__(self, seed_names: frozenset[str]) -> None:
        self.seed_names = seed_names
        self.statements: dict[str, list[str]] = defaultdict(list)
        self.blanked: dict[str, list[str]] = defaultdict(list)
        self.constants: dict[str, ConstantValue] = {}
        self.numeric: dict[str, float] = {}
        self.classes: set[str] = set()
        self.functions: set[str] = set()
        self.imported: set[str] = set()

    def add(self, key: str, node: ast.stmt, segment: bytes | None = None) -> None:
        dump, blanked = _statement_dumps(node, segment, self.seed_names)
        self.statements[key].append(dump)
        if blanked:
            self.blanked[key].append(blanked)


def _summary(source: str, what: str) -> _Summary:
    """The (shared, read-only) summary of a source: the hub asks for the same parent again and
    again (every child of the current best), and parsing dominates its cost per record.

    Raises:
        SchemaError: the source does not parse (``reason="unparsable_source"``).
    """
    try:
        return _cached_summary(source)
    except SyntaxError as exc:
        raise SchemaError(
            f"{what} train.py does not parse: line {exc.lineno}: {exc.msg}", reason="unparsable_source"
        ) from exc


def _cached_summary(source: str) -> _Summary:
    return _analysis(source).summary


class _Analysis:
    """What one parse of a source gives: its canonical text (``ast.unparse``, taken before the
    summary strips docstrings from the tree) and its direction summary."""

    __slots__ = ("canonical", "summary")

    def __init__(self, canonical: str, summary: _Summary) -> None:
        self.canonical = canonical
        self.summary = summary


@lru_cache(maxsize=256)
def _analysis(source: str) -> _Analysis:
    """Parse ``source`` once and derive its canonical text and summary (memoised per source text:
    parents recur in almost every experiment). Statement dumps are memoised across sources by the
    statement's exact text (:func:`_statement_dumps`), so a child that differs from its parent in one
    statement costs one statement's dumps, not the module's.

    Raises:
        SyntaxError: as :func:`~autoresearch.protocol.canonical.parse_source`.
        SchemaError: the tree cannot be unparsed (nesting; bounded by the parser's depth limit).
    """
    with AST_LOCK:
        module = take_parsed(source)  # the hub's limits have usually just parsed it (hub/limits.py)
        try:
            canonical = ast.unparse(module)
        except (MemoryError, RecursionError) as exc:  # bounded by MAX_AST_DEPTH; kept as a typed guard
            raise SchemaError("train.py nests too deeply to unparse", reason="unparsable_source") from exc
        return _Analysis(canonical, _summarise(module, _Segments(source)))


class _Segments:
    """Exact source bytes of a statement, found from its line/column (UTF-8 byte) offsets. Lines end
    at ``\r\n``, ``\n`` or ``\r``, as the parser counts them."""

    def __init__(self, source: str) -> None:
        self.data = source.encode("utf-8")
        self.starts = [0] + [m.end() for m in _LINE_END.finditer(self.data)]

    def of(self, node: ast.stmt) -> bytes | None:
        if node.end_lineno is None or node.end_col_offset is None:
            return None
        decorators = getattr(node, "decorator_list", None)
        if decorators:  # the decorators are part of the node but precede its line: from their line's start
            start = self.starts[min(d.lineno for d in decorators) - 1]
        else:
            start = self.starts[node.lineno - 1] + node.col_offset
        return self.data[start : self.starts[node.end_lineno - 1] + node.end_col_offset]


_LINE_END = re.compile(rb"\r\n|\n|\r")
_STATEMENT_MEMO: dict[tuple[bytes, frozenset[str]], tuple[str, str]] = {}
_STATEMENT_MEMO_SIZE = 4096


def _statement_dumps(node: ast.stmt, segment: bytes | None, names: frozenset[str]) -> tuple[str, str]:
    """``(dump, blanked dump)`` of a statement (:func:`_dump`, :func:`_blanked_dump`), memoised by
    its exact source text and the module's seed names: the same text parses to the same tree, so
    the parent's statements, which a child repeats, are dumped once. Runs under ``AST_LOCK``."""
    key = (segment, names) if segment is not None else None
    if key is not None and (hit := _STATEMENT_MEMO.get(key)) is not None:
        return hit
    blanked = _blanked_dump(node, names)  # before _dump, which strips docstrings in place
    dumps = (_dump(node), blanked)
    if key is not None:
        if len(_STATEMENT_MEMO) >= _STATEMENT_MEMO_SIZE:
            _STATEMENT_MEMO.clear()
        _STATEMENT_MEMO[key] = dumps
    return dumps


def _summarise(module: ast.Module, segments: _Segments | None = None) -> _Summary:
    summary = _Summary(_seed_names_of(module, segments))
    assigned_twice = _names_assigned_more_than_once(module)
    for node in _without_docstring(module.body):
        if isinstance(node, ast.ClassDef):
            _summarise_class(node, summary, segments)
            continue
        names = _bound_names(node)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            summary.functions.add(node.name)
        if isinstance(node, ast.Import | ast.ImportFrom):
            summary.imported.update(names)
        segment = segments.of(node) if segments is not None else None
        for name in names or [MODULE]:
            summary.add(name, node, segment)
        _record_constant(node, names, assigned_twice, summary)
    return summary


def _summarise_class(node: ast.ClassDef, summary: _Summary, segments: _Segments | None) -> None:
    summary.classes.add(node.name)
    rest: list[ast.stmt] = []
    for item in _without_docstring(node.body):
        if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef):
            summary.add(f"{node.name}.{item.name}", item, segments.of(item) if segments is not None else None)
        else:
            rest.append(item)
    shell = ast.ClassDef(
        name=node.name, bases=node.bases, keywords=node.keywords, body=rest, decorator_list=node.decorator_list
    )
    if sys.version_info >= (3, 12):  # PEP 695 type parameters (``class C[T]:``)
        shell.type_params = node.type_params
    summary.add(node.name, shell)


def _record_constant(node: ast.stmt, names: list[str], assigned_twice: set[str], summary: _Summary) -> None:
    """Remember ``NAME = literal`` (single target, bound once at module level, not a seed) as a constant."""
    if len(names) != 1 or names[0] in assigned_twice or names[0] in summary.seed_names:
        return
    if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
        value_node: ast.expr | None = node.value
    elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
        value_node = node.value
    else:
        return
    if value_node is None:
        return
    number = _eval_number(value_node, summary.numeric)
    if number is not None:
        summary.numeric[names[0]] = number
        summary.constants[names[0]] = number
        return
    try:
        value = ast.literal_eval(value_node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return
    if isinstance(value, int | float | bool | str | bytes | tuple) or value is None:
        summary.constants[names[0]] = value


def _direction_of(key: str, parent: _Summary, child: _Summary) -> str:
    """The direction key of a key whose statements differ (beyond seeding) between parent and child."""
    if key == MODULE:
        return key
    if "." in key:  # Class.method; a method of a class added or removed is that class's change
        cls = key.split(".", 1)[0]
        return key if cls in parent.classes and cls in child.classes else cls
    old, new = parent.numeric.get(key), child.numeric.get(key)
    if old is not None and new is not None:
        if new > old:
            return f"{key} {UP}"
        if new < old:
            return f"{key} {DOWN}"
        return ""  # same value, written differently: no direction
    return key


def _without_docstring(body: list[ast.stmt]) -> list[ast.stmt]:
    """The body without bare string statements (docstrings) anywhere."""
    return [
        node
        for node in body
        if not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str))
    ]


def _strip_docstrings(node: ast.AST) -> ast.AST:
    for child in ast.walk(node):
        if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Module):
            child.body = _without_docstring(child.body) or [ast.Pass()]
    return node


def _dump(node: ast.AST) -> str:
    """A formatting-free fingerprint of one statement (docstrings removed, no line numbers)."""
    return ast.dump(_strip_docstrings(node), annotate_fields=False, include_attributes=False)


def _bound_names(node: ast.stmt) -> list[str]:
    """Names a simple top-level statement binds (compound statements such as loops bind none here)."""
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        return [node.name]
    if isinstance(node, ast.Import | ast.ImportFrom):
        return [(alias.asname or alias.name).split(".")[0] for alias in node.names]
    targets: list[ast.expr] = []
    if isinstance(node, ast.Assign):
        targets = list(node.targets)
    elif isinstance(node, ast.AnnAssign | ast.AugAssign):
        targets = [node.target]
    elif hasattr(ast, "TypeAlias") and isinstance(node, ast.TypeAlias):
        targets = [node.name]
    names: list[str] = []
    for target in targets:
        for name in _target_names(target):
            if name not in names:
                names.append(name)
    return names


def _target_names(target: ast.expr) -> list[str]:
    """Names an assignment target touches: ``a``, ``a, b``, ``*a``, and the base of ``a.x`` / ``a[i]``."""
    if isinstance(target, ast.Name):
        return [target.id]
    if isinstance(target, ast.Tuple | ast.List):
        return [name for element in target.elts for name in _target_names(element)]
    if isinstance(target, ast.Starred | ast.Attribute | ast.Subscript):
        return _target_names(target.value)
    return []


def _names_assigned_more_than_once(module: ast.Module) -> set[str]:
    seen: set[str] = set()
    twice: set[str] = set()
    for node in module.body:
        for name in _bound_names(node):
            (twice if name in seen else seen).add(name)
    return twice


def _eval_number(node: ast.expr, known: Mapping[str, float]) -> float | None:
    """Value of a numeric expression over literals and known numeric constants, else None."""
    if isinstance(node, ast.Constant):
        return float(node.value) if _is_number(node.value) else None
    if isinstance(node, ast.Name):
        return known.get(node.id)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        inner = _eval_number(node.operand, known)
        if inner is None:
            return None
        return -inner if isinstance(node.op, ast.USub) else inner
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        left, right = _eval_number(node.left, known), _eval_number(node.right, known)
        if left is None or right is None:
            return None
        if isinstance(node.op, ast.Pow) and abs(right) > _MAX_POW_EXPONENT:
            return None
        try:
            result = _BINOPS[type(node.op)](left, right)
        except (ZeroDivisionError, OverflowError, ValueError):
            return None
        return float(result) if isinstance(result, int | float) and math.isfinite(result) else None
    return None


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _same_value(old: ConstantValue, new: ConstantValue) -> bool:
    if _is_number(old) and _is_number(new):
        return float(old) == float(new)
    return type(old) is type(new) and old == new


# ==================================================================================================
# 5. Near-duplicates (DESIGN.md, "Deduplication and claims")

NUM_PERM = 128
"""MinHash permutations (datasketch's default; standard error of the Jaccard estimate ≈ 1/√128 ≈ 0.09)."""
SHINGLE = 3
"""Tokens per shingle of the changed lines."""
_TOKEN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|\d+(?:\.\d*)?(?:[eE][-+]?\d+)?|\S")


def changed_constants(parent_source: str, child_source: str) -> ConstChanges:
    """Module-level constants whose literal value differs: ``{name: (old, new)}``.

    Only names bound once at module level to a literal (numbers, strings, booleans, tuples of those,
    or arithmetic over numeric constants) count; seed names never do. A constant added or removed
    shows ``None`` on the missing side. Equal values written differently (``2**19`` vs ``524288``)
    are not a change.

    Raises:
        SchemaError: either source does not parse as Python.
    """
    parent = _summary(parent_source, "parent").constants
    child = _summary(child_source, "child").constants
    changed: ConstChanges = {}
    for name in sorted(parent.keys() | child.keys()):
        old, new = parent.get(name), child.get(name)
        if not _same_value(old, new):
            changed[name] = (old, new)
    return changed


def near_duplicate_constants(a: Mapping[str, tuple[ConstantValue, ConstantValue]],
                             b: Mapping[str, tuple[ConstantValue, ConstantValue]], *,
                             rel_tol: float = 0.05) -> bool:
    """Whether two :func:`changed_constants` results are the same change within ``rel_tol``.

    The same set of changed constants, with new numeric values within a relative tolerance
    (``math.isclose(x, y, rel_tol=rel_tol)``) and other values equal. Two empty changes are not
    near-duplicates (nothing to compare).
    """
    if not a or a.keys() != b.keys():
        return False
    for name, (_, new_a) in a.items():
        new_b = b[name][1]
        if _is_number(new_a) and _is_number(new_b):
            if not math.isclose(float(new_a), float(new_b), rel_tol=rel_tol):
                return False
        elif new_a != new_b:
            return False
    return True


def const_changes(parent_source: str, child_source: str, direction_keys: Sequence[str]) -> ConstChanges | None:
    """:func:`changed_constants` when the change touches only numeric constants (seeding aside), else
    None (then only the MinHash rule can find a near-duplicate)."""
    numeric = [key for key in direction_keys if key != SEED]
    if not numeric or not all(key.endswith((UP, DOWN)) for key in numeric):
        return None
    changes = changed_constants(parent_source, child_source)
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


def diff_tokens(parent_source: str, child_source: str) -> list[str]:
    """Tokens of the changed lines (``-``/``+`` prefixed) between the canonical forms of two sources.

    Raises:
        SchemaError: either source does not parse.
    """
    a = canonical_text(parent_source).split("\n")
    b = canonical_text(child_source).split("\n")
    tokens: list[str] = []
    for line in difflib.unified_diff(a, b, lineterm="", n=0):
        if line.startswith(("---", "+++", "@@")):
            continue
        tokens.append(line[0])
        tokens.extend(_TOKEN.findall(line[1:]))
    return tokens


def minhash_signature(tokens: Sequence[str]) -> bytes | None:
    """MinHash (datasketch, ``NUM_PERM`` uint64 little endian, seed 1) of the token shingles; None
    when there are no tokens. Imports ``datasketch`` (hub and agent extras) on first use."""
    if not tokens:
        return None
    from datasketch import MinHash  # numpy + scipy: only the hub and the agent pay for them

    shingles = {" ".join(tokens[i : i + SHINGLE]) for i in range(max(1, len(tokens) - SHINGLE + 1))}
    mh = MinHash(num_perm=NUM_PERM, seed=1)
    mh.update_batch([s.encode("utf-8") for s in sorted(shingles)])
    return b"".join(int(v).to_bytes(8, "little") for v in mh.hashvalues)


def jaccard(a: bytes, b: bytes) -> float:
    """Estimated Jaccard similarity of two :func:`minhash_signature` values (share of equal slots).
    Slots compare as native 8-byte integers (equal bytes ⇔ equal integers, whatever the byte order)."""
    slots = min(len(a), len(b)) // 8
    if not slots:
        return 0.0
    x = memoryview(a)[: 8 * slots].cast("Q")
    y = memoryview(b)[: 8 * slots].cast("Q")
    return sum(map(int.__eq__, x, y)) / slots


def is_near_duplicate(changes_a: ConstChanges, minhash_a: bytes | None, changes_b: ConstChanges,
                      minhash_b: bytes | None, *, rel_tol: float, threshold: float) -> bool:
    """Whether two changes of one parent are near-duplicates: the constants rule
    (:func:`near_duplicate_constants`) or the MinHash rule (:func:`jaccard` ≥ ``threshold``)."""
    if changes_a and near_duplicate_constants(changes_a, changes_b, rel_tol=rel_tol):
        return True
    if minhash_a is None or minhash_b is None:
        return False
    return jaccard(minhash_a, minhash_b) >= threshold


# ==================================================================================================
# 6. Three-way merge

ConflictReason = Literal["conflict", "unparsable", "drift"]


class MergeConflict(ValueError):
    """A three-way merge of ``train.py`` versions cannot be done cleanly; ``reason`` says why:
    ``conflict`` (both sides edit the same lines or insert at the same point), ``unparsable`` (the
    result does not parse) or ``drift`` (the result changes something else than the change merged)."""

    def __init__(self, message: str, *, reason: ConflictReason = "conflict") -> None:
        super().__init__(message)
        self.reason: ConflictReason = reason


def merge_three_way(base: str, left: str, right: str) -> str:
    """Line-level three-way merge of ``left`` and ``right``, both edits of ``base``.

    ``merge3`` (the bzr/breezy algorithm) finds the regions. Like ``git merge-file`` it calls two
    edits on *adjacent* lines a conflict, which would refuse the most common case — two
    hyperparameters on consecutive lines — so a conflict region is re-resolved at zero context: each
    side's ``difflib`` edits inside it are applied when they touch different lines.

    Raises:
        MergeConflict: ``reason="conflict"``: the sides edit a common line or insert at one point.
    """
    base_lines, left_lines, right_lines = (s.splitlines(keepends=True) for s in (base, left, right))
    for lines in (base_lines, left_lines, right_lines):
        if lines and not lines[-1].endswith("\n"):
            lines[-1] += "\n"
    out: list[str] = []
    for region in merge3.Merge3(base_lines, left_lines, right_lines).merge_regions():
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


def rebase(base: str, onto: str, change: str) -> str:
    """The change ``base`` → ``change`` replayed onto ``onto`` (the loop's rebase of a proposal
    prepared against ``base`` onto a new best ``onto``), checked: the result parses and its
    directions against ``onto`` are exactly those of ``base`` → ``change``.

    Raises:
        MergeConflict: ``conflict``, ``unparsable`` or ``drift`` (the caller re-proposes).
    """
    merged = merge_three_way(base, onto, change)
    try:
        got = extract_directions(onto, merged)
        want = extract_directions(base, change)
    except SchemaError as exc:
        raise MergeConflict(f"rebased train.py does not parse: {exc}", reason="unparsable") from exc
    if got != want:
        raise MergeConflict(f"rebased train.py changes {got}, the proposal changed {want}", reason="drift")
    return merged


_Edit = tuple[int, int, list[str]]  # replace base[i1:i2] with these lines


def _edits(base: list[str], side: list[str]) -> list[_Edit]:
    matcher = difflib.SequenceMatcher(None, base, side, autojunk=False)
    return [(i1, i2, side[j1:j2]) for tag, i1, i2, j1, j2 in matcher.get_opcodes() if tag != "equal"]


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
    for edit in _edits(base, left) + _edits(base, right):
        if edit in edits:
            continue  # the same edit on both sides
        if any(_clash(edit, other) for other in edits):
            raise MergeConflict(
                f"both sides edit the same lines: {''.join(base[edit[0] : edit[1]]).strip()!r}", reason="conflict"
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
