"""Static import/call policy of a candidate ``train.py`` (torch-free; the hub uses it for ``combine``).

The agent loop runs code written by a language model or pulled from other volunteers. Before any
such ``train.py`` runs, :func:`check_source` reads its AST and refuses what a training script has no
reason to do: import outside an allowlist (torch and a few standard-library helpers), start processes,
open sockets or files, evaluate strings as code, load native code, or reach the interpreter's
internals through dunder attributes.

This is defence in depth, not a sandbox: Python is too dynamic for a static check to be complete.
The second layer is the runner (``autoresearch.trainer.run``), whose subprocess environment holds no
API keys or hub credentials. The approach follows the allowlist-over-denylist rule of OWASP's input
validation guidance: anything not named here is refused.
"""

from __future__ import annotations

import ast
import re

from autoresearch.protocol import parse_source

# Top-level modules a train.py may import (submodules included unless listed in FORBIDDEN_PREFIXES).
ALLOWED_MODULES: frozenset[str] = frozenset(
    {
        "__future__",
        "torch",
        "math",
        "time",
        "dataclasses",
        "functools",
        "typing",
        "itertools",
        "collections",
        "contextlib",
        "enum",
        "abc",
        "operator",
        "random",
        "copy",
        "statistics",
        "numbers",
        "heapq",
        "bisect",
        "gc",
        "warnings",
        "os",  # only the attributes in OS_ALLOWED_ATTRS (upstream sets PYTORCH_CUDA_ALLOC_CONF)
    }
)
# The harness: the one module of ours a train.py may import from, and only class names (``Handle``
# for type hints); its module object would expose everything the harness itself imports.
HARNESS_MODULES: frozenset[str] = frozenset({"autoresearch.trainer.harness"})
_CLASS_NAME = re.compile(r"^[A-Z][A-Za-z0-9]*$")

# Dotted names (modules or attributes) that are refused even under an allowed top-level module.
FORBIDDEN_PREFIXES: tuple[str, ...] = (
    "torch.hub",  # downloads code and weights
    "torch.distributed",  # opens sockets
    "torch.multiprocessing",
    "torch.utils.cpp_extension",  # compiles and loads native code
    "torch.utils.data.datapipes.iter.Online",
    "torch.ops.load_library",
    "torch.classes.load_library",
    "torch.save",  # writes files
    "torch.load",  # unpickles arbitrary objects from files
    "torch.from_file",
    "torch.package",
    "torch.jit.load",
    "torch.jit.save",
    "torch.cuda.memory._dump_snapshot",
    "torch.profiler",  # writes traces
    "torch.utils.tensorboard",
)
OS_ALLOWED_ATTRS: frozenset[str] = frozenset({"environ", "getenv", "cpu_count", "sep", "linesep"})

# Builtins a train.py must not call or even name (names can be aliased: ``e = eval``).
FORBIDDEN_BUILTINS: frozenset[str] = frozenset(
    {
        "exec",
        "eval",
        "compile",
        "__import__",
        "open",
        "input",
        "breakpoint",
        "globals",
        "locals",
        "vars",
        "memoryview",
        "__builtins__",
        "__loader__",
        "__spec__",
    }
)
# Attribute names that reach interpreter internals (sandbox escapes go through these).
FORBIDDEN_ATTRS: frozenset[str] = frozenset(
    {
        "__subclasses__",
        "__globals__",
        "__code__",
        "__builtins__",
        "__import__",
        "__loader__",
        "__spec__",
        "__bases__",
        "__base__",
        "__mro__",
        "__closure__",
        "__reduce__",
        "__reduce_ex__",
        "__getattribute__",
        "__dict__",
        "__self__",  # print.__self__ is the builtins module
        "__func__",
        "__objclass__",
        "__wrapped__",
        "f_globals",
        "f_locals",
        "f_back",
        "f_builtins",
        "gi_frame",
        "cr_frame",
        "tb_frame",
        "tb_next",
    }
)
_REFLECTION_CALLS: frozenset[str] = frozenset({"getattr", "setattr", "delattr", "hasattr"})


def check_source(source: str) -> list[str]:
    """Check a ``train.py`` against the policy.

    Args:
        source: the file's text.

    Returns:
        An empty list when the source is allowed; otherwise one human-readable finding per violation,
        ``"line N: …"``, in source order. A file that does not parse gives one finding.
    """
    try:
        tree = parse_source(source)
    except SyntaxError as exc:
        return [f"line {exc.lineno}: does not parse: {exc.msg}"]
    checker = _Checker()
    checker.visit(tree)
    return [f"line {line}: {msg}" for line, msg in sorted(checker.findings, key=lambda f: f[0])]


def module_allowed(name: str, *, from_import: bool = False) -> str | None:
    """Why importing dotted module ``name`` is refused, or None when it is allowed.

    ``from_import`` is true for ``from name import …`` (the only way to use the harness module).
    """
    if name in HARNESS_MODULES and from_import:
        return None
    top = name.split(".", 1)[0]
    if top == "autoresearch":
        return f"import of {name!r}: only class names may be imported, from {', '.join(sorted(HARNESS_MODULES))}"
    if top not in ALLOWED_MODULES:
        return f"import of {name!r} is not allowed (allowed: torch, {', '.join(sorted(ALLOWED_MODULES - {'torch'}))})"
    return _forbidden_dotted(name)


def _forbidden_dotted(dotted: str) -> str | None:
    for prefix in FORBIDDEN_PREFIXES:
        if dotted == prefix or dotted.startswith(prefix + "."):
            return f"use of {prefix!r} is not allowed"
    head, _, rest = dotted.partition(".")
    if head == "os" and rest:
        attr = rest.split(".", 1)[0]
        if attr not in OS_ALLOWED_ATTRS:
            return f"use of 'os.{attr}' is not allowed (os allows only {', '.join(sorted(OS_ALLOWED_ATTRS))})"
    return None


class _Checker(ast.NodeVisitor):
    """Collects ``(line, message)`` findings; tracks import aliases to resolve dotted names."""

    def __init__(self) -> None:
        self.findings: list[tuple[int, str]] = []
        self.aliases: dict[str, str] = {}  # local name -> dotted module/attribute it was bound to

    def _add(self, node: ast.AST, message: str) -> None:
        self.findings.append((getattr(node, "lineno", 0), message))

    # imports ---------------------------------------------------------------------------------

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            reason = module_allowed(alias.name)
            if reason:
                self._add(node, reason)
            local = alias.asname or alias.name.split(".", 1)[0]
            self.aliases[local] = alias.name if alias.asname else local

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            self._add(node, "relative imports are not allowed")
            return
        module = node.module or ""
        reason = module_allowed(module, from_import=True)
        if reason:
            self._add(node, reason)
            return
        for alias in node.names:
            if alias.name == "*":
                self._add(node, f"'from {module} import *' is not allowed")
                continue
            if module in HARNESS_MODULES and not _CLASS_NAME.match(alias.name):
                self._add(node, f"from the harness only class names may be imported, not {alias.name!r}")
                continue
            dotted = f"{module}.{alias.name}"
            if module != "__future__":
                sub_reason = _forbidden_dotted(dotted)
                if sub_reason:
                    self._add(node, sub_reason)
            self.aliases[alias.asname or alias.name] = dotted

    # names, attributes, calls ----------------------------------------------------------------------

    def visit_Name(self, node: ast.Name) -> None:
        if node.id in FORBIDDEN_BUILTINS and node.id not in self.aliases:
            self._add(node, f"use of builtin {node.id!r} is not allowed")
        if node.id == "builtins" or node.id == "__builtins__":
            self._add(node, "touching builtins is not allowed")

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if node.attr in FORBIDDEN_ATTRS:
            self._add(node, f"access to attribute {node.attr!r} is not allowed")
        dotted = self._dotted(node)
        if dotted:
            reason = _forbidden_dotted(dotted)
            if reason:
                self._add(node, reason)
                return  # one finding per chain
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        if isinstance(node.func, ast.Name) and node.func.id in _REFLECTION_CALLS:
            attr = node.args[1] if len(node.args) > 1 else None
            if not (isinstance(attr, ast.Constant) and isinstance(attr.value, str)):
                self._add(node, f"{node.func.id}() with a computed attribute name is not allowed")
            elif attr.value in FORBIDDEN_ATTRS:
                self._add(node, f"{node.func.id}() of attribute {attr.value!r} is not allowed")
            elif node.args and isinstance(node.args[0], ast.Name | ast.Attribute):
                base = self._dotted(node.args[0])
                reason = _forbidden_dotted(f"{base}.{attr.value}") if base else None
                if reason:
                    self._add(node, reason)
        self.generic_visit(node)

    def _dotted(self, node: ast.expr) -> str | None:
        """``a.b.c`` with ``a`` resolved through import aliases; None when not rooted at a name."""
        parts: list[str] = []
        while isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        if not isinstance(node, ast.Name) or node.id not in self.aliases:
            return None
        parts.append(self.aliases[node.id])
        return ".".join(reversed(parts))
