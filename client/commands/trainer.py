"""``autoresearch prepare`` and ``autoresearch train`` (filled in by the trainer)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    @app.command("prepare")
    def prepare() -> None:
        """Download or build a track's data and tokenizer."""
        raise typer.Exit(2)

    @app.command("train")
    def train() -> None:
        """One run of a train.py under a track's harness; prints the summary block."""
        raise typer.Exit(2)
