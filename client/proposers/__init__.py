"""Proposers: what writes the next candidate ``train.py`` for the agent loop.

A proposer implements :class:`Proposer` — ``propose(ctx: ProposalContext) -> Proposal`` — and raises
:class:`~autoresearch.client.errors.ProposerError` when it cannot produce a usable candidate. Three
ship: ``offline`` (mutates module-level hyperparameters; no key needed), ``anthropic`` (Claude through
the ``anthropic`` SDK) and ``command`` (an agent CLI the user already has, editing ``train.py`` in a
scratch folder). :func:`make_proposer` builds one by name.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from autoresearch.protocol import Suggestion

from ..errors import UsageError
from ..workspace import ProposerUsage, Workspace

PROPOSER_NAMES = ("offline", "anthropic", "command")
DEFAULT_MODEL = "claude-sonnet-5-5"  # the current Sonnet (claude-sonnet-4-5 reaches end of life 2026-11-30)


class RepairRequest(BaseModel):
    """A crashed candidate to fix: its source, description and the traceback tail."""

    model_config = ConfigDict(frozen=True)

    source: str
    description: str
    error_tail: str = Field(description="last lines of the run's traceback/log")


class ProposalContext(BaseModel):
    """Everything a proposer sees.

    ``train_py`` is the current best (the parent of the proposal); ``results_table`` is a compact,
    bounded table of recent results (:func:`autoresearch.client.results.compact_table`);
    ``suggestions`` come from the hub (empty when solo); ``tried`` holds the canonical hashes of
    every child already run, rejected or held elsewhere (never propose one again); ``repair`` is set
    when the loop asks to fix a crash.
    """

    model_config = ConfigDict(frozen=True)

    program_md: str
    train_py: str
    results_table: str = ""
    suggestions: list[Suggestion] = Field(default_factory=list)
    tried: frozenset[str] = frozenset()
    repair: RepairRequest | None = None
    track: str = ""
    experiment_number: int = 0


class Proposal(BaseModel):
    """A candidate: the complete new ``train.py`` and a one-line description (``PARAM old → new``)."""

    model_config = ConfigDict(frozen=True)

    source: str
    description: str
    usage: ProposerUsage | None = None


@runtime_checkable
class Proposer(Protocol):
    """Writes candidates. ``name`` goes into records; ``can_repair`` says whether it fixes crashes."""

    name: str
    can_repair: bool

    def propose(self, ctx: ProposalContext) -> Proposal:
        """Return a candidate whose source differs from ``ctx.train_py``.

        Raises:
            ProposerError: no usable candidate (the loop skips and asks again later).
        """
        ...


def default_proposer_name() -> str:
    """``anthropic`` when ``ANTHROPIC_API_KEY`` is set, else ``offline``."""
    return "anthropic" if os.environ.get("ANTHROPIC_API_KEY") else "offline"


def choose_proposer(
    name: str | None,
    ws: Workspace,
    *,
    model: str | None = None,
    agent_command: str | None = None,
    agent_timeout: float | None = None,
    agent_retries: int | None = None,
) -> tuple[str, Proposer]:
    """The proposer ``run`` and ``join`` use in ``ws``: ``(name, proposer)``.

    Agent settings come from the options (``--agent-command`` / ``AUTORESEARCH_AGENT_COMMAND``,
    ``--agent-timeout``, ``--agent-retries``), else the ``agent`` entry of the workspace's
    ``.autoresearch/config.json``. ``name`` None or ``"auto"``: ``command`` when an agent command is
    set, else :func:`default_proposer_name`. The seed of the offline proposer derives from the
    workspace path; the command proposer's scratch folder is ``.autoresearch/agent/``.

    Raises:
        UsageError: as :func:`make_proposer`.
    """
    import zlib

    configured = ws.config.agent
    if configured is not None:
        agent_command = agent_command or configured.command
        agent_timeout = agent_timeout if agent_timeout is not None else configured.timeout
        agent_retries = agent_retries if agent_retries is not None else configured.retries
    if name in (None, "", "auto"):
        name = "command" if agent_command else default_proposer_name()
    proposer = make_proposer(
        name,
        seed=zlib.crc32(str(ws.root).encode()),
        model=model,
        agent_command=agent_command,
        agent_timeout=agent_timeout,
        agent_retries=agent_retries,
        scratch_dir=ws.state_dir / "agent",
    )
    return name, proposer


def make_proposer(
    name: str,
    *,
    seed: int = 0,
    model: str | None = None,
    agent_command: str | None = None,
    agent_timeout: float | None = None,
    agent_retries: int | None = None,
    scratch_dir: Path | None = None,
) -> Proposer:
    """Build a proposer by name (``offline``, ``anthropic`` or ``command``).

    ``agent_timeout`` (seconds per agent call) and ``agent_retries`` (restarts of a stuck or
    crashed agent) default to the command proposer's own defaults (900 s, 2) when None.

    Raises:
        UsageError: unknown name, or a missing or bad setting (API key, agent command, timeout).
    """
    if name == "offline":
        from .offline import OfflineProposer

        return OfflineProposer(seed=seed)
    if name == "anthropic":
        from .anthropic_api import AnthropicProposer

        if not os.environ.get("ANTHROPIC_API_KEY"):
            raise UsageError("the anthropic proposer needs ANTHROPIC_API_KEY", hint="export it, or use --proposer offline")
        return AnthropicProposer(model=model)
    if name == "command":
        from .command import DEFAULT_RETRIES, DEFAULT_TIMEOUT, CommandProposer

        if not agent_command or not agent_command.strip():
            raise UsageError(
                "the command proposer needs --agent-command",
                hint='e.g. --agent-command "my-agent --headless", or an "agent" entry in .autoresearch/config.json',
            )
        if scratch_dir is None:
            raise UsageError("the command proposer needs a scratch folder")
        timeout = DEFAULT_TIMEOUT if agent_timeout is None else agent_timeout
        retries = DEFAULT_RETRIES if agent_retries is None else agent_retries
        if not timeout > 0 or retries < 0:
            raise UsageError(f"bad agent settings: timeout {timeout!r} s (must be > 0), retries {retries!r} (must be ≥ 0)")
        return CommandProposer(agent_command, scratch_dir=scratch_dir, timeout=timeout, retries=retries)
    raise UsageError(f"unknown proposer {name!r}", hint=f"choose one of: {', '.join(PROPOSER_NAMES)}")
