"""The CLI's output layer: data to stdout, logs/progress/errors to stderr; respects ``NO_COLOR``.

Library code never prints; commands call these helpers.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from rich.console import Console
from rich.markup import escape

_stdout: Console | None = None
_stderr: Console | None = None


def out() -> Console:
    """Console on stdout (data)."""
    global _stdout
    if _stdout is None:
        _stdout = Console(no_color=bool(os.environ.get("NO_COLOR")), soft_wrap=True)
    return _stdout


def err() -> Console:
    """Console on stderr (logs, progress, errors)."""
    global _stderr
    if _stderr is None:
        _stderr = Console(stderr=True, no_color=bool(os.environ.get("NO_COLOR")), soft_wrap=True)
    return _stderr


def print_json(data: Any) -> None:
    """Write JSON data to stdout (plain, no colour, one document)."""
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
    sys.stdout.flush()


def error(message: str, hint: str | None = None) -> None:
    """An error as one line, plus ``hint: …`` when there is one. Text is printed literally (paths and
    payload excerpts may hold ``[…]``, which rich would otherwise read as markup)."""
    err().print(f"[bold red]error:[/] {escape(message)}", markup=True, highlight=False)
    if hint:
        err().print(f"[dim]hint:[/] {escape(hint)}", markup=True, highlight=False)


def info(message: str) -> None:
    """A log line on stderr, printed literally (no rich markup)."""
    err().print(message, markup=False, highlight=False)
