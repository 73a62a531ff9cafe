"""Errors of the client, caught once at the CLI edge (``cli.main``)::

    ClientError                     base: one line for the user plus an optional hint
    ├── UsageError                  bad arguments or missing setup (no workspace, no key, …)
    ├── WorkspaceError              the workspace is not a valid autoresearch workspace / git state
    ├── StateFileError              a local file (key, outbox, state) is unreadable, corrupt or unwritable
    ├── PolicyViolation             a candidate train.py failed the static import/call policy
    ├── ProposerError               the proposer could not produce a candidate
    └── HubError                    anything about talking to a hub
        ├── HubUnavailable          unreachable, timed out (per read or the total deadline), 5xx, 429: retry later
        ├── RecordRejected          the hub refused a request with a 4xx and a reason (do not retry)
        └── BadHubResponse          a 2xx answer this client refuses: too large, too deep, wrong schema,
                                    or content that does not match its hash or signature

Protocol errors (``autoresearch.protocol.ProtocolError``) are reported the same way. Every message
that quotes a hub is already passed through :func:`autoresearch.client.safetext.safe_text`.
"""

from __future__ import annotations

from pathlib import Path


class ClientError(Exception):
    """Base client error: ``str(err)`` is one line for the user; ``hint`` says what to do."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


class UsageError(ClientError):
    """Bad arguments or missing setup."""


class WorkspaceError(ClientError):
    """The workspace is missing, malformed, or its git state is unexpected."""


class StateFileError(ClientError):
    """A local file cannot be read, parsed or written; ``path`` names it and the hint says how to fix it."""

    def __init__(self, path: Path, problem: str, *, hint: str) -> None:
        super().__init__(f"{path}: {problem}", hint=hint)
        self.path = path


class PolicyViolation(ClientError):
    """A candidate ``train.py`` failed the static policy check; ``reasons`` lists each finding."""

    def __init__(self, reasons: list[str]) -> None:
        super().__init__("policy check failed: " + "; ".join(reasons), hint="the candidate was not run")
        self.reasons = reasons


class ProposerError(ClientError):
    """The proposer could not produce a usable candidate."""


class HubError(ClientError):
    """Base of hub communication errors."""


class HubUnavailable(HubError):
    """The hub could not be reached, timed out, or answered 5xx/429. Safe to retry later."""


class RecordRejected(HubError):
    """The hub refused a request with a 4xx. ``status`` is the HTTP status, ``reason`` its code."""

    def __init__(self, message: str, *, status: int, reason: str, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.status = status
        self.reason = reason


class BadHubResponse(HubError):
    """The hub answered 2xx with something this client will not use: larger than the size cap, nested
    past the JSON depth limit, not the expected model, or code that does not match its signed record."""
