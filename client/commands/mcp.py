"""``autoresearch mcp``: serve a hub and a joined workspace to an MCP-speaking agent over stdio."""

from __future__ import annotations

from pathlib import Path

import typer

from ..errors import UsageError
from . import AllowUnsandboxedOpt
from .federation import DirOpt, HubOpt, TokenOpt


def mcp_cmd(
    directory: DirOpt = Path("."),
    hub: HubOpt = None,
    token: TokenOpt = None,
    allow_unsandboxed: AllowUnsandboxedOpt = False,
) -> None:
    """MCP server over stdio: suggestions, findings, experiment_diff, claim and run_and_publish.

    Give it the workspace `join` set up (--dir); hub reads verify every answer, and run_and_publish
    sends the agent's train.py through the loop (policy check, sandboxed harness, signing, outbox).
    E.g. `claude mcp add autoresearch -- autoresearch mcp --dir WORKSPACE`.
    """
    try:
        import mcp  # noqa: F401
    except ImportError as exc:
        raise UsageError("the MCP SDK is not installed", hint="pip install 'autoresearch-hub[mcp]'") from exc
    from ..demo import quiet_libraries
    from ..mcp_server import build_server, resolve_settings

    quiet_libraries()
    settings = resolve_settings(directory, hub, token, allow_unsandboxed)
    build_server(settings).run("stdio")


def register(app: typer.Typer) -> None:
    app.command("mcp")(mcp_cmd)

