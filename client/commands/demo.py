"""``autoresearch demo``: a local hub plus two volunteers on the CPU track."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    @app.command("demo")
    def demo() -> None:
        """Run a local hub and two volunteer clients on the cpu track."""
        raise typer.Exit(2)
