"""Run the real ``autoresearch`` entry point (``cli.main``) in-process and capture what it printed.

In-process keeps the CLI tests fast (no interpreter start per call) while still going through
``main``'s error handling, so exit codes and the one-line ``error:`` / ``hint:`` output are real.
"""

from __future__ import annotations

import io
import sys
from dataclasses import dataclass

import pytest

from autoresearch.client import cli


@dataclass(frozen=True)
class CliResult:
    """Exit code and captured stdout/stderr text of one CLI invocation."""

    code: int
    out: str
    err: str


def run_cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, *args: str, stdin: bytes | None = None) -> CliResult:
    """``autoresearch ARGS…`` through ``cli.main``; ``stdin`` feeds ``-`` arguments."""
    capsys.readouterr()  # drop anything printed before
    monkeypatch.setattr(sys, "argv", ["autoresearch", *args])
    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8"))
    code = 0
    try:
        cli.main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    captured = capsys.readouterr()
    return CliResult(code, captured.out, captured.err)
