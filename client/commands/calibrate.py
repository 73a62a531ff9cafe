"""``autoresearch calibrate``: the reference benchmark of this hardware class."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    @app.command("calibrate")
    def calibrate() -> None:
        """Calibrate this machine against the track's reference train.py."""
        raise typer.Exit(2)
