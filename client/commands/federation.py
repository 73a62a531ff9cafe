"""``autoresearch join|pull|findings|show|outbox``: working with a hub."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    @app.command("join")
    def join() -> None:
        """Join a hub and run the loop connected to it."""
        raise typer.Exit(2)
