"""The CLI's output layer: data to stdout, logs/progress/errors to stderr; respects ``NO_COLOR``.

Library code never prints; commands call these helpers. Text from a hub or another client is shown
through :func:`text` (a ``rich.text.Text``: no markup, no emoji codes, control characters escaped by
:func:`~autoresearch.client.safetext.safe_text`); :func:`error` and :func:`info` do the same.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.text import Text

from .safetext import safe_text

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


def text(value: object, style: str = "", *, one_line: bool = True) -> Text:
    """``value`` (a hub's or another client's string) as rich text that is shown exactly as text:
    no markup, no emoji codes, control characters escaped (one line unless ``one_line=False``)."""
    return Text(safe_text(str(value), one_line=one_line), style=style)


def error(message: str, hint: str | None = None) -> None:
    """An error as one line, plus ``hint: …`` when there is one. Text is printed literally (paths and
    payload excerpts may hold ``[…]``, which rich would otherwise read as markup) and safely."""
    err().print(f"[bold red]error:[/] {escape(safe_text(message, one_line=True))}", markup=True, highlight=False, emoji=False)
    if hint:
        err().print(f"[dim]hint:[/] {escape(safe_text(hint, one_line=True))}", markup=True, highlight=False, emoji=False)


def info(message: str) -> None:
    """A log line on stderr, printed literally (no rich markup) and safely."""
    err().print(text(message, one_line=False), highlight=False)
