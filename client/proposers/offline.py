"""The offline proposer: mutates module-level hyperparameter constants of ``train.py`` with libcst.

No API key, no network: it is the embedded default. Each proposal changes one UPPER_CASE constant
(two once every single change has been tried), edited through a concrete syntax tree so comments and
formatting stay and the result always parses. Mutation rules:

- integers stay integers; a power of two stays a power of two (× 2 or ÷ 2), ``2**k`` steps ``k``;
  other integers step by about 25 %;
- floats are scaled (× 0.5 … × 2); a value in (0, 1) stays below 1;
- strings of ``S``/``L`` (the sliding-window pattern) are swapped for another pattern;
- seed names (:func:`autoresearch.protocol.source.seed_names`: values that only seed random number
  generators, whatever their spelling) and the track's fixed settings are never touched.

Hub suggestions are sampled first: ``combine``/``replicate`` run the suggestion's ``train_py``;
``exploit NAME ↑/↓`` mutates that name that way; ``avoid`` directions are skipped.
Descriptions follow upstream's ``PARAM old → new`` style.
"""

from __future__ import annotations

import logging
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass

import libcst as cst

from autoresearch.protocol import SchemaError
from autoresearch.protocol.source import canonical_sha256_or_none, seed_names

from ..errors import ProposerError
from . import Proposal, ProposalContext

_logger = logging.getLogger(__name__)

_CONST_NAME = re.compile(r"^[A-Z][A-Z0-9_]*$")
_DIRECTION = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*) ([↑↓])$")
FIXED_NAMES = frozenset({"TIME_BUDGET", "MAX_SEQ_LEN", "EVAL_TOKENS", "VOCAB_SIZE", "TRACK"})
UP_FACTORS = (1.25, 1.5, 2.0)
DOWN_FACTORS = (0.8, 0.67, 0.5)
WINDOW_PATTERNS = ("L", "SL", "SSL", "LLL", "SSSL", "SSLL", "SLSL", "SSSSL", "LLLL")
MAX_PAIR_TRIES = 400


@dataclass(frozen=True)
class Constant:
    """A mutable module-level constant: its name, Python value and how it is written."""

    name: str
    value: int | float | str
    code: str  # the value's source text
    power_base: int | None = None  # set when written as ``base**exponent``


@dataclass(frozen=True)
class Mutation:
    """A new value for one constant; ``direction`` is a direction key (``NAME ↑``, ``NAME``)."""

    name: str
    old_code: str
    new_code: str
    direction: str

    @property
    def description(self) -> str:
        return f"{self.name} {self.old_code} → {self.new_code}"


def parse(source: str) -> cst.Module:
    """The concrete syntax tree of ``source``.

    Raises:
        ProposerError: the source does not parse.
    """
    try:
        return cst.parse_module(source)
    except cst.ParserSyntaxError as exc:
        raise ProposerError(f"train.py does not parse: {exc}") from exc


def find_constants(source: str | cst.Module) -> list[Constant]:
    """The mutable module-level UPPER_CASE constants of ``source`` (text or parsed), in file order.

    Raises:
        ProposerError: the source does not parse.
    """
    module = parse(source) if isinstance(source, str) else source
    try:
        seeds = seed_names(module.code)  # the one seed rule (protocol.source): whatever the spelling
    except SchemaError as exc:
        raise ProposerError(str(exc)) from exc
    found: list[Constant] = []
    for stmt in module.body:
        if not isinstance(stmt, cst.SimpleStatementLine):
            continue
        for small in stmt.body:
            name, value = _assignment(small)
            if name is None or value is None or name in FIXED_NAMES or name in seeds:
                continue
            const = _constant(name, value)
            if const is not None:
                found.append(const)
    return found


def _assignment(node: cst.BaseSmallStatement) -> tuple[str | None, cst.BaseExpression | None]:
    if isinstance(node, cst.Assign) and len(node.targets) == 1 and isinstance(node.targets[0].target, cst.Name):
        name = node.targets[0].target.value
    elif isinstance(node, cst.AnnAssign) and isinstance(node.target, cst.Name) and node.value is not None:
        name = node.target.value
    else:
        return None, None
    return (name, node.value) if _CONST_NAME.match(name) else (None, None)


def _constant(name: str, value: cst.BaseExpression) -> Constant | None:
    if isinstance(value, cst.Integer):
        return Constant(name, int(value.evaluated_value), value.value)
    if isinstance(value, cst.Float):
        return Constant(name, float(value.evaluated_value), value.value)
    if isinstance(value, cst.SimpleString) and isinstance(value.evaluated_value, str):
        text = value.evaluated_value
        return Constant(name, text, value.value) if text and set(text) <= {"S", "L"} else None
    if (
        isinstance(value, cst.BinaryOperation)
        and isinstance(value.operator, cst.Power)
        and isinstance(value.left, cst.Integer)
        and isinstance(value.right, cst.Integer)
    ):
        base, exponent = int(value.left.evaluated_value), int(value.right.evaluated_value)
        if base >= 2 and 0 <= exponent <= 62:
            return Constant(name, exponent, f"{value.left.value}**{value.right.value}", power_base=base)
    return None


def _fmt_float(x: float) -> str:
    text = repr(float(f"{x:.3g}"))
    return text


def _is_pow2(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


def mutations(const: Constant) -> list[Mutation]:
    """Every single-step mutation of ``const`` (both directions, every factor), unordered."""
    name, v = const.name, const.value
    out: list[tuple[str, str]] = []  # (new_code, arrow)
    if const.power_base is not None:
        assert isinstance(v, int)
        out.append((f"{const.power_base}**{v + 1}", "↑"))
        if v > 0:
            out.append((f"{const.power_base}**{v - 1}", "↓"))
    elif isinstance(v, bool):
        return []
    elif isinstance(v, int):
        if _is_pow2(v):
            out.append((str(v * 2), "↑"))
            if v >= 2:
                out.append((str(v // 2), "↓"))
        elif v == 0:
            out.append(("1", "↑"))
        else:
            step = max(1, round(abs(v) * 0.25))
            out.append((str(v + step), "↑"))
            if v - step >= 1 or v < 0:
                out.append((str(v - step), "↓"))
    elif isinstance(v, float):
        if v == 0.0:
            out.append(("0.1", "↑"))
        else:
            for factor in UP_FACTORS + DOWN_FACTORS:
                new = v * factor
                if 0.0 < v < 1.0 and new >= 1.0:
                    continue
                code = _fmt_float(new)
                if float(code) != v:
                    out.append((code, "↑" if abs(new) > abs(v) else "↓"))
    else:
        quote = const.code[0] if const.code[:1] in ("'", '"') else '"'
        return [Mutation(name, const.code, f"{quote}{p}{quote}", name) for p in WINDOW_PATTERNS if p != v]
    seen: set[str] = set()
    result = []
    for code, arrow in out:
        if code not in seen:
            seen.add(code)
            result.append(Mutation(name, const.code, code, f"{name} {arrow}"))
    return result


class _Replace(cst.CSTTransformer):
    def __init__(self, values: dict[str, str]) -> None:
        self.values = values

    def visit_IndentedBlock(self, node: cst.IndentedBlock) -> bool:
        return False  # module level only

    def leave_Assign(self, original: cst.Assign, updated: cst.Assign) -> cst.Assign:
        target = original.targets[0].target if len(original.targets) == 1 else None
        if isinstance(target, cst.Name) and target.value in self.values:
            return updated.with_changes(value=cst.parse_expression(self.values[target.value]))
        return updated

    def leave_AnnAssign(self, original: cst.AnnAssign, updated: cst.AnnAssign) -> cst.AnnAssign:
        if isinstance(original.target, cst.Name) and original.target.value in self.values:
            return updated.with_changes(value=cst.parse_expression(self.values[original.target.value]))
        return updated


def apply_mutations(source: str | cst.Module, muts: list[Mutation]) -> str:
    """``source`` (text or a parsed module) with each mutation's constant set to its new value,
    formatting kept."""
    module = cst.parse_module(source) if isinstance(source, str) else source
    return module.visit(_Replace({m.name: m.new_code for m in muts})).code


class OfflineProposer:
    """Mutates hyperparameters; deterministic for a given seed, parent and history."""

    name = "offline"
    can_repair = False

    def __init__(self, *, seed: int = 0) -> None:
        self.seed = seed
        self._children: dict[tuple[str, tuple[tuple[str, str], ...]], str] = {}

    def propose(self, ctx: ProposalContext) -> Proposal:
        """A child of ``ctx.train_py`` not in ``ctx.tried`` (see the module docstring for the rules).

        Raises:
            ProposerError: the parent does not parse, or every candidate has been tried.
        """
        rng = random.Random(f"{self.seed}:{canonical_sha256_or_none(ctx.train_py)}:{len(ctx.tried)}")
        parent_hash = canonical_sha256_or_none(ctx.train_py)
        avoid = {s.direction for s in ctx.suggestions if s.kind == "avoid"}
        for source, description in self._candidates(ctx, rng, avoid):
            child_hash = canonical_sha256_or_none(source)  # memoised: a long night re-checks old candidates
            if child_hash is None or child_hash == parent_hash or child_hash in ctx.tried:
                continue
            return Proposal(source=source, description=description)
        raise ProposerError("the offline proposer has tried every mutation it knows for this train.py")

    def _candidates(self, ctx: ProposalContext, rng: random.Random, avoid: set[str]) -> Iterator[tuple[str, str]]:
        module = parse(ctx.train_py)  # parsed once; each candidate is a visit of it
        constants = find_constants(module)
        singles = [m for c in constants for m in mutations(c) if m.direction not in avoid]
        rng.shuffle(singles)
        from_hub = list(self._from_suggestions(ctx, constants, rng, avoid))
        if from_hub and rng.random() < 0.75:
            yield from from_hub
        for m in singles:
            yield self._apply(ctx.train_py, module, [m]), m.description
        yield from from_hub
        by_name: dict[str, list[Mutation]] = {}
        for m in singles:
            by_name.setdefault(m.name, []).append(m)
        names = sorted(by_name)
        for _ in range(MAX_PAIR_TRIES if len(names) >= 2 else 0):
            a, b = rng.sample(names, 2)
            pair = [rng.choice(by_name[a]), rng.choice(by_name[b])]
            yield self._apply(ctx.train_py, module, pair), ", ".join(m.description for m in pair)

    def _apply(self, parent: str, module: cst.Module, muts: list[Mutation]) -> str:
        """Memoised :func:`apply_mutations` of ``module`` (the parsed ``parent``)."""
        key = (parent, tuple((m.name, m.new_code) for m in muts))
        if key not in self._children:
            if len(self._children) > 4096:
                self._children.clear()
            self._children[key] = apply_mutations(module, muts)
        return self._children[key]

    def _from_suggestions(
        self, ctx: ProposalContext, constants: list[Constant], rng: random.Random, avoid: set[str]
    ) -> Iterator[tuple[str, str]]:
        by_name = {c.name: c for c in constants}
        for s in sorted(ctx.suggestions, key=lambda s: -s.score):
            if s.kind in ("combine", "replicate") and s.train_py:
                yield s.train_py, f"{s.kind}: {s.rationale}"[:500]
            elif s.kind in ("exploit", "explore"):
                match = _DIRECTION.match(s.direction)
                name = match.group(1) if match else s.direction
                const = by_name.get(name)
                if const is None:
                    continue
                options = [m for m in mutations(const) if m.direction not in avoid]
                if match:
                    options = [m for m in options if m.direction == s.direction]
                rng.shuffle(options)
                for m in options:
                    yield apply_mutations(ctx.train_py, [m]), m.description
