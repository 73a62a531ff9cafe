"""CLI command groups; each module exposes ``register(app)``. Options shared by groups live here."""

from __future__ import annotations

from typing import Annotated

import typer

AllowUnsandboxedOpt = Annotated[
    bool,
    typer.Option(
        "--allow-unsandboxed",
        envvar="AUTORESEARCH_ALLOW_UNSANDBOXED",
        help="On a machine without a sandbox (no bubblewrap / user namespaces), run candidates anyway, as a "
        "plain process: you vouch for every train.py the agent writes or the hub sends (docs/security.md).",
    ),
]
