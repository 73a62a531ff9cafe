"""safe_text: terminal escape sequences, controls, bidi and surrogates from strangers are shown
escaped, never interpreted; rich markup in them is shown as text."""

from __future__ import annotations

import io
import logging

import pytest
from rich.console import Console

from autoresearch.client import console
from autoresearch.client.safetext import SafeLogFilter, safe_text

ATTACKS = {
    "window title (OSC 0)": ("\x1b]0;pwned\x07", "\\x1b]0;pwned\\x07"),
    "screen clear (CSI 2 J)": ("\x1b[2J\x1b[H", "\\x1b[2J\\x1b[H"),
    "hyperlink (OSC 8)": ("\x1b]8;;http://evil.invalid\x1b\\click\x1b]8;;\x1b\\", "\\x1b]8;;http://evil.invalid\\x1b\\click\\x1b]8;;\\x1b\\"),
    "8-bit CSI and OSC": ("\x9b2J\x9d0;t\x9c", "\\x9b2J\\x9d0;t\\x9c"),
    "carriage return overwrite": ("ok\rEVIL", "ok\\x0dEVIL"),
    "backspace, bell, DEL, NUL": ("a\x08\x07\x7f\x00", "a\\x08\\x07\\x7f\\x00"),
    "bidi override (Trojan Source)": ("abc\u202edcba\u2066", "abc\\u202edcba\\u2066"),
    "line separator": ("a\u2028b", "a\\u2028b"),
    "lone surrogate": ("a\ud800b", "a\\ud800b"),
}


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_each_sequence_is_shown_escaped(name: str) -> None:
    raw, shown = ATTACKS[name]
    assert safe_text(raw) == shown
    assert safe_text(shown) == shown  # idempotent: nothing left to escape


def test_ordinary_text_is_untouched_and_one_line_escapes_newlines_and_tabs() -> None:
    text = "MATRIX_LR 0.04 → 0.05 (ReLU², größer, 学习率) [keep] :smile:\n\tnext"
    assert safe_text(text) == text
    assert safe_text(text, one_line=True) == text.replace("\n", "\\x0a").replace("\t", "\\x09")


def _render(renderable: object) -> str:
    buf = io.StringIO()
    Console(file=buf, force_terminal=True, color_system="truecolor", width=200).print(renderable)
    return buf.getvalue()


def test_console_text_renders_markup_and_escapes_as_inert_text() -> None:
    """Attack: a description with rich markup (`[/]` made `findings` exit 1) and escape sequences."""
    hostile = "[/][bold red]x[/] \x1b]0;pwned\x07 :smile:"
    out = _render(console.text(hostile))
    assert "[/][bold red]x[/]" in out and ":smile:" in out  # shown literally: no markup, no emoji codes
    assert "\\x1b]0;pwned\\x07" in out
    assert "\x07" not in out and "]0;pwned" not in out.replace("\\x1b]0;pwned", "")  # no OSC reached the terminal


def test_error_line_with_hostile_text_is_one_line(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(console, "_stderr", None)
    console.error("hub said [/] \x1b[2J\nsecond line", "hint with \x1b]0;t\x07")
    err = capsys.readouterr().err
    assert err.splitlines() == ["error: hub said [/] \\x1b[2J\\x0asecond line", "hint: hint with \\x1b]0;t\\x07"]


def test_log_filter_escapes_what_a_log_line_quotes(caplog: pytest.LogCaptureFixture) -> None:
    handler = logging.StreamHandler(io.StringIO())
    handler.addFilter(SafeLogFilter())
    logger = logging.getLogger("test.safetext")
    logger.addHandler(handler)
    try:
        logger.warning("hub refused: %s", "\x1b]0;pwned\x07")
    finally:
        logger.removeHandler(handler)
    assert handler.stream.getvalue() == "hub refused: \\x1b]0;pwned\\x07\n"  # type: ignore[attr-defined]
