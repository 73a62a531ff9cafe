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
AgentCommandOpt = Annotated[
    str | None,
    typer.Option(
        "--agent-command",
        envvar="AUTORESEARCH_AGENT_COMMAND",
        help="Agent CLI run once per experiment (the command proposer), e.g. 'claude -p \"...\"'. It runs in "
        ".autoresearch/agent/ with AUTORESEARCH_PROMPT_FILE and AUTORESEARCH_TRAIN_PY set ({prompt} in the "
        "command is the prompt file) and edits train.py there (default: the workspace config's agent entry).",
    ),
]
AgentTimeoutOpt = Annotated[
    float | None,
    typer.Option(
        "--agent-timeout",
        envvar="AUTORESEARCH_AGENT_TIMEOUT",
        min=1.0,
        help="Seconds one agent call may take before its whole process group is killed (default: 900).",
    ),
]
AgentRetriesOpt = Annotated[
    int | None,
    typer.Option(
        "--agent-retries",
        envvar="AUTORESEARCH_AGENT_RETRIES",
        min=0,
        help="Restarts of a stuck or crashed agent per experiment before giving up (default: 2).",
    ),
]
