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
from ..workspace import ProposerUsage

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


def make_proposer(
    name: str,
    *,
    seed: int = 0,
    model: str | None = None,
    agent_command: str | None = None,
    agent_timeout: float = 1800.0,
    scratch_dir: Path | None = None,
) -> Proposer:
    """Build a proposer by name (``offline``, ``anthropic`` or ``command``).

    Raises:
        UsageError: unknown name, or a missing setting (API key, agent command).
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
        from .command import CommandProposer

        if not agent_command:
            raise UsageError("the command proposer needs --agent-command", hint='e.g. --agent-command "my-agent --headless"')
        if scratch_dir is None:
            raise UsageError("the command proposer needs a scratch folder")
        return CommandProposer(agent_command, scratch_dir=scratch_dir, timeout=agent_timeout)
    raise UsageError(f"unknown proposer {name!r}", hint=f"choose one of: {', '.join(PROPOSER_NAMES)}")
