"""Text from strangers, made safe for terminals, logs and prompts: :func:`safe_text`, the one place.

Every string that came from a hub or another client (descriptions, display names, directions,
rationales, error messages, diffs, hardware classes) passes through :func:`safe_text` before it is
shown, logged or put into an LLM prompt. It replaces, with a visible escape (``\\x1b``, ``\\u202e``):

- C0 controls but tab and newline (ESC starts every CSI/OSC sequence: window title ``ESC ] 0 ;``,
  screen clear ``ESC [ 2 J``, hyperlinks ``ESC ] 8 ;;``; CR and backspace overwrite what is shown),
  DEL, and the C1 controls U+0080–U+009F (U+009B is an 8-bit CSI, U+009D an 8-bit OSC);
- bidirectional controls (U+061C, U+200E/F, U+202A–U+202E, U+2066–U+2069: "Trojan Source"
  reordering) and the line/paragraph separators U+2028/U+2029;
- lone surrogates (U+D800–U+DFFF; JSON can carry them, a UTF-8 terminal cannot print them).

An escaped ESC leaves the rest of a sequence as inert text, so nothing is interpreted and nothing is
silently hidden. The function is idempotent (its output contains none of those characters). It does
not touch rich markup: render its result as text (``rich.text.Text``, ``markup=False``), which
:func:`autoresearch.client.console.text` does.

Own code rather than a library: ANSI-stripping packages match well-formed sequences only, while
escaping every control character also defuses malformed and 8-bit ones.
"""

from __future__ import annotations

import logging
import re

_UNSAFE = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029\ud800-\udfff]"
)
_UNSAFE_ONE_LINE = re.compile(
    "[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029\ud800-\udfff]"
)


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def safe_text(text: str, *, one_line: bool = False) -> str:
    """``text`` with every control, bidi-control and surrogate character shown as an escape.

    ``one_line``: also escape tab and newline (table cells, log fields, one-line summaries).
    """
    pattern = _UNSAFE_ONE_LINE if one_line else _UNSAFE
    return pattern.sub(_escape, text)


class SafeLogFilter(logging.Filter):
    """A handler filter that runs each log record's message through :func:`safe_text`.

    Attach it to every handler that writes to a terminal or a file (the CLI does, in ``cli._root``
    and in the live display), so a hub's text quoted in a log line cannot drive the terminal.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = safe_text(message)
        if cleaned != message or record.args:
            record.msg, record.args = cleaned, None
        return True
