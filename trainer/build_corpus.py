"""Build the offline corpus of the ``cpu`` and ``tiny`` tracks (run once by a maintainer).

The corpus is English technical prose that ships with CPython: every topic of ``pydoc_data.topics``
(the language reference pages behind ``help()``) plus the docstrings of the pure-Python standard
library, read with :mod:`ast` (nothing is imported, so no module runs). One document per pydoc topic
and one per stdlib module (its docstring, then each class/function signature with its docstring, in
source order).

Text taken from the running Python differs between Python versions, so tracks never read it at run
time: this script writes ``trainer/corpus/pycorpus-v1.jsonl.xz`` once, that file ships with the package,
and its SHA-256 is pinned in the track spec (``tracks.py``). Rebuilding with another Python gives a
different file and therefore needs a new corpus version and new track ids.

Usage::

    python -m autoresearch.trainer.build_corpus [--out trainer/corpus/pycorpus-v1.jsonl.xz]

The split is deterministic: a document is in ``val`` when the first 8 hex digits of SHA-256 of its
name, read as an integer, are divisible by :data:`VAL_EVERY` (≈5 % of documents), else ``train``.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import logging
import lzma
import os
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path

_logger = logging.getLogger(__name__)

VAL_EVERY = 20  # one document in VAL_EVERY (by name hash) goes to the val split
MAX_DOC_CHARS = 60_000  # longer module documents are cut (a few huge modules would dominate)
SKIP_PARTS = {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__",
              "ensurepip", "turtledemo", "lib2to3", "pydoc_data"}


def _pydoc_documents() -> Iterator[tuple[str, str]]:
    from pydoc_data.topics import topics

    for name in sorted(topics):
        yield f"pydoc:{name}", f"{name}\n\n{topics[name].strip()}\n"


def _signature(node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) -> str:
    if isinstance(node, ast.ClassDef):
        bases = ", ".join(ast.unparse(b) for b in node.bases)
        return f"class {node.name}({bases}):" if bases else f"class {node.name}:"
    prefix = "async def" if isinstance(node, ast.AsyncFunctionDef) else "def"
    return f"{prefix} {node.name}({ast.unparse(node.args)}):"


def _module_text(module: str, tree: ast.Module) -> str | None:
    parts: list[str] = []
    doc = ast.get_docstring(tree)
    if doc:
        parts.append(f"{module}\n\n{doc.strip()}\n")

    def visit(body: list[ast.stmt], indent: str) -> None:
        for node in body:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                if node.name.startswith("_") and not node.name.startswith("__"):
                    continue
                node_doc = ast.get_docstring(node)
                if node_doc:
                    inner = "\n".join(indent + "    " + line if line else "" for line in node_doc.strip().splitlines())
                    parts.append(f"{indent}{_signature(node)}\n{inner}\n")
                if isinstance(node, ast.ClassDef):
                    visit(node.body, indent + "    ")

    visit(tree.body, "")
    if not parts:
        return None
    text = "\n".join(parts)
    if not doc:
        text = f"{module}\n\n{text}"
    return text[:MAX_DOC_CHARS]


def _stdlib_documents() -> Iterator[tuple[str, str]]:
    root = Path(sysconfig.get_paths()["stdlib"])
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if SKIP_PARTS.intersection(rel.parts) or rel.name.startswith("test_"):
            continue
        module = ".".join(rel.with_suffix("").parts).removesuffix(".__init__")
        try:
            tree = ast.parse(path.read_bytes(), filename=str(rel))
        except (SyntaxError, ValueError) as exc:  # a few files are deliberately invalid
            _logger.debug("skipping %s: %s", rel, exc)
            continue
        text = _module_text(module, tree)
        if text:
            yield f"stdlib:{module}", text


def split_of(name: str) -> str:
    """``val`` or ``train`` for a document name (deterministic, see the module docstring)."""
    return "val" if int(hashlib.sha256(name.encode()).hexdigest()[:8], 16) % VAL_EVERY == 0 else "train"


def build(out: Path) -> str:
    """Write the compressed corpus to ``out`` atomically; returns its hex SHA-256."""
    lines = []
    for name, text in [*_pydoc_documents(), *_stdlib_documents()]:
        lines.append(json.dumps({"name": name, "split": split_of(name), "text": text}, ensure_ascii=False, sort_keys=True))
    payload = ("\n".join(lines) + "\n").encode("utf-8")
    data = lzma.compress(payload, preset=9 | lzma.PRESET_EXTREME)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, out)
    digest = hashlib.sha256(data).hexdigest()
    _logger.info("%d documents, %d bytes raw, %d bytes compressed, sha256 %s", len(lines), len(payload), len(data), digest)
    return digest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "corpus" / "pycorpus-v1.jsonl.xz")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
    build(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
