"""``autoresearch init`` and ``autoresearch run``: the workspace and the agent loop."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    @app.command("init")
    def init() -> None:
        """Create a workspace: git repo with train.py, program.md, results.tsv."""
        raise typer.Exit(2)

    @app.command("run")
    def run() -> None:
        """Run the agent loop in a workspace."""
        raise typer.Exit(2)
