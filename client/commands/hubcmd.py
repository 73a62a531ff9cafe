"""``autoresearch hub serve|migrate|admin``: run and administer a hub (imports the hub lazily)."""

from __future__ import annotations

import typer

hub_app = typer.Typer(help="Run and administer a hub (needs the `hub` extra).", no_args_is_help=True)


@hub_app.command("serve")
def serve() -> None:
    """Serve the hub API and pages."""
    raise typer.Exit(2)


def register(app: typer.Typer) -> None:
    app.add_typer(hub_app, name="hub")
