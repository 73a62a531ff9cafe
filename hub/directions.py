"""Directions: what an experiment changed in ``train.py``, as short stable keys.

A *direction* is a family of experiments that change the same symbols of ``train.py`` the same way
(DESIGN.md, "Suggestions"; key format in docs/architecture.md, "Direction keys"). This module turns
a parent/child pair of sources into direction keys by comparing their ASTs, so comments, blank lines,
formatting and docstrings never count as a change:

- ``NAME ↑`` / ``NAME ↓``: a module-level numeric constant went up / down (``MATRIX_LR = 0.04`` →
  ``0.05`` gives ``MATRIX_LR ↑``). Numeric means an int/float literal or arithmetic over literals and
  earlier numeric constants (``2**19``, ``-1``, ``TOTAL // 8``).
- ``NAME``: any other change of a top-level name: a non-numeric constant, a function, a class added,
  removed or changed outside its methods, an import.
- ``Class.method``: a method of a class whose body changed (or that was added or removed).
- ``seed``: a constant whose name is or contains the word ``SEED`` (``SEED``, ``DATA_SEED``), or a
  module-level call of a ``*seed`` function (``torch.manual_seed(42)``). A seed-only change has the
  single direction ``seed``, which the suggestion engine never treats as a gain.
- ``<module>``: any other change of module-level code that binds no name (the top-level training
  loop, a bare call, an ``if __name__ == "__main__":`` block).

One experiment can have several directions; the list is sorted and deduplicated. A comment-,
docstring- or formatting-only change has none.

:func:`changed_constants` gives the literal values of the changed module-level constants, which the
hub uses for near-duplicate detection (DESIGN.md, "Deduplication and claims");
:func:`near_duplicate_constants` applies the relative-tolerance rule to two such changes.

Pure logic: no torch, no FastAPI, no I/O.
"""

from __future__ import annotations

import ast
import logging
import math
import operator
import re
import sys
from collections import defaultdict
from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import TypeAlias, TypeGuard

from autoresearch.protocol import parse_source
from autoresearch.protocol.errors import SchemaError

_logger = logging.getLogger(__name__)

UP = "↑"
DOWN = "↓"
SEED = "seed"
MODULE = "<module>"

ConstantValue: TypeAlias = int | float | bool | str | bytes | tuple[object, ...] | None
"""A literal value of a module-level constant (``None`` also stands for "absent")."""

_SEED_NAME = re.compile(r"(^|_)seed($|_)", re.IGNORECASE)
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


# --------------------------------------------------------------------------------------------------
# Public API


def extract_directions(parent_source: str, child_source: str) -> list[str]:
    """Direction keys of the change parent → child (sorted, deduplicated; ``[]`` for no change).

    Args:
        parent_source: the parent ``train.py`` source text.
        child_source: the child ``train.py`` source text.

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
        directions.add(_direction_of(key, parent, child))
    directions.discard("")
    return sorted(directions)


def changed_constants(
    parent_source: str, child_source: str
) -> dict[str, tuple[ConstantValue, ConstantValue]]:
    """Module-level constants whose literal value differs: ``{name: (old, new)}``.

    Only names bound once at module level to a literal (numbers, strings, booleans, tuples of those,
    or arithmetic over numeric constants) count. A constant added or removed shows ``None`` on the
    missing side. Equal values written differently (``2**19`` vs ``524288``) are not a change.

    Raises:
        SchemaError: either source does not parse as Python.
    """
    parent = _summary(parent_source, "parent").constants
    child = _summary(child_source, "child").constants
    changed: dict[str, tuple[ConstantValue, ConstantValue]] = {}
    for name in sorted(parent.keys() | child.keys()):
        old, new = parent.get(name), child.get(name)
        if not _same_value(old, new):
            changed[name] = (old, new)
    return changed


def near_duplicate_constants(
    a: Mapping[str, tuple[ConstantValue, ConstantValue]],
    b: Mapping[str, tuple[ConstantValue, ConstantValue]],
    *,
    rel_tol: float = 0.05,
) -> bool:
    """Whether two :func:`changed_constants` results are the same change within ``rel_tol``.

    The rule of DESIGN.md ("Deduplication and claims"): the same set of changed constants, with new
    numeric values within a relative tolerance (``math.isclose(x, y, rel_tol=rel_tol)``) and other
    values equal. Two empty changes are not near-duplicates (nothing to compare).
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


def is_seed_only(directions: list[str]) -> bool:
    """True when the directions are exactly ``["seed"]``: a re-run under another seed, never a gain."""
    return directions == [SEED]


def possible_directions(source: str) -> list[str]:
    """Every direction a change of this ``train.py`` could have, in source order.

    ``NAME ↑`` and ``NAME ↓`` for numeric UPPER_CASE module-level constants, ``NAME`` for other
    UPPER_CASE constants and for functions, ``Class.method`` for methods, ``<module>`` when there is
    module-level code. Imports, seeds, lowercase module-level variables (program state such as
    ``model``) and a class outside its methods are left out. The suggestion engine's ``explore``
    candidates come from the track's reference ``train.py`` through this.

    Raises:
        SchemaError: the source does not parse as Python.
    """
    return list(_possible_directions(source))


@lru_cache(maxsize=16)
def _possible_directions(source: str) -> tuple[str, ...]:
    module = _parse(source, "source")
    summary = _summarise(module)
    imported = {
        name
        for node in module.body
        if isinstance(node, ast.Import | ast.ImportFrom)
        for name in _bound_names(node)
    }
    functions = {
        node.name
        for node in module.body
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    }
    out: list[str] = []
    for key in summary.statements:
        if key == SEED or key in imported or key in summary.classes or _SEED_NAME.search(key):
            continue
        if "." not in key and key != MODULE and not key.isupper() and key not in functions:
            continue  # a lowercase module-level variable (model, t_start) is program state
        out.extend((f"{key} {UP}", f"{key} {DOWN}") if key in summary.numeric else (key,))
    return tuple(out)


# --------------------------------------------------------------------------------------------------
# AST summary of one source


class _Summary:
    """The parts of a module that directions compare.

    ``statements``: key → normalised dumps of the statements under that key, in source order. A key
    is a top-level name, ``Class.method``, ``Class`` (the class outside its methods), ``seed`` or
    ``<module>``. ``constants``: module-level literal constants. ``numeric``: the numeric ones.
    """

    def __init__(self) -> None:
        self.statements: dict[str, list[str]] = defaultdict(list)
        self.constants: dict[str, ConstantValue] = {}
        self.numeric: dict[str, float] = {}
        self.classes: set[str] = set()


def _parse(source: str, what: str) -> ast.Module:
    try:
        tree: ast.Module = parse_source(source)
    except SyntaxError as exc:
        raise SchemaError(
            f"{what} train.py does not parse: line {exc.lineno}: {exc.msg}",
            reason="unparsable_source",
        ) from exc
    return tree


def _summary(source: str, what: str) -> _Summary:
    """The (shared, read-only) summary of a source: ingest asks for the same parent again and again
    (every child of the current best), and parsing dominates the hub's cost per record."""
    try:
        return _cached_summary(source)
    except SyntaxError as exc:
        raise SchemaError(
            f"{what} train.py does not parse: line {exc.lineno}: {exc.msg}",
            reason="unparsable_source",
        ) from exc


@lru_cache(maxsize=256)
def _cached_summary(source: str) -> _Summary:
    return _summarise(parse_source(source))


def _summarise(module: ast.Module) -> _Summary:
    summary = _Summary()
    assigned_twice = _names_assigned_more_than_once(module)
    for node in _without_docstring(module.body):
        if isinstance(node, ast.ClassDef):
            _summarise_class(node, summary)
            continue
        names = _bound_names(node)
        dump = _dump(node)
        if not names:
            summary.statements[SEED if _is_seed_call(node) else MODULE].append(dump)
            continue
        for name in names:
            summary.statements[name].append(dump)
        _record_constant(node, names, assigned_twice, summary)
    return summary


def _summarise_class(node: ast.ClassDef, summary: _Summary) -> None:
    summary.classes.add(node.name)
    rest: list[ast.stmt] = []
    for item in _without_docstring(node.body):
        if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef):
            summary.statements[f"{node.name}.{item.name}"].append(_dump(item))
        else:
            rest.append(item)
    shell = ast.ClassDef(
        name=node.name,
        bases=node.bases,
        keywords=node.keywords,
        body=rest,
        decorator_list=node.decorator_list,
    )
    if sys.version_info >= (3, 12):  # PEP 695 type parameters (``class C[T]:``)
        shell.type_params = node.type_params
    summary.statements[node.name].append(_dump(shell))


def _record_constant(
    node: ast.stmt, names: list[str], assigned_twice: set[str], summary: _Summary
) -> None:
    """Remember ``NAME = literal`` (single target, bound once at module level) as a constant."""
    if len(names) != 1 or names[0] in assigned_twice:
        return
    if (
        isinstance(node, ast.Assign)
        and len(node.targets) == 1
        and isinstance(node.targets[0], ast.Name)
    ):
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
    """The direction key for a key whose statements differ between parent and child."""
    if key in (SEED, MODULE):
        return key
    if "." in key:  # Class.method; a method of a class added or removed is that class's change
        cls = key.split(".", 1)[0]
        return key if cls in parent.classes and cls in child.classes else cls
    if _SEED_NAME.search(key):
        return SEED
    old, new = parent.numeric.get(key), child.numeric.get(key)
    if old is not None and new is not None:
        if new > old:
            return f"{key} {UP}"
        if new < old:
            return f"{key} {DOWN}"
        return ""  # same value, written differently: no direction
    return key


# --------------------------------------------------------------------------------------------------
# Small AST helpers


def _without_docstring(body: list[ast.stmt]) -> list[ast.stmt]:
    """The body without a leading docstring and without bare string statements anywhere."""
    return [
        node
        for node in body
        if not (
            isinstance(node, ast.Expr)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
        )
    ]


def _strip_docstrings(node: ast.AST) -> ast.AST:
    for child in ast.walk(node):
        if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Module):
            body = _without_docstring(child.body)
            child.body = body or [ast.Pass()]
    return node


def _dump(node: ast.stmt) -> str:
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


def _is_seed_call(node: ast.stmt) -> bool:
    """``torch.manual_seed(42)``, ``random.seed(0)``, ``np.random.seed(SEED)`` at module level."""
    if not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Call)):
        return False
    func = node.value.func
    name = (
        func.attr
        if isinstance(func, ast.Attribute)
        else func.id
        if isinstance(func, ast.Name)
        else ""
    )
    return name.lower().endswith("seed")


def _eval_number(node: ast.expr, known: Mapping[str, float]) -> float | None:
    """Value of a numeric expression over literals and known numeric constants, else None."""
    if isinstance(node, ast.Constant):
        value = node.value
        return float(value) if _is_number(value) else None
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
