"""The Anthropic proposer: Claude reads ``program.md``, the current best ``train.py``, a compact table of
recent results and the hub's suggestions, and answers through a forced tool call carrying the complete
new ``train.py`` and a one-line description.

- The tool is offered with ``tool_choice`` ``auto`` (forced tool use is refused by current models
  with adaptive thinking); an answer without the tool call is re-asked.
- Prompt caching: the stable part (instructions + ``program.md``, then the current ``train.py``) carries
  ``cache_control`` breakpoints, so a run of discards re-reads them at the cache price
  (Anthropic docs, "Prompt caching").
- Retries: 429, 5xx and ``overloaded_error`` (529) are retried by the SDK with exponential backoff
  (``max_retries``), honouring ``retry-after``.
- Re-asking: an answer that does not parse, changes nothing, was tried before or fails the policy
  check is sent back as an error ``tool_result`` with the reason, at most ``max_attempts`` times; then
  :class:`ProposerError` (the loop skips).
- Tokens and cost (US dollars, from the public per-million-token prices) are logged per proposal and
  returned in :class:`ProposerUsage`.
"""

from __future__ import annotations

import ast
import logging
import time
from typing import Any

import anthropic

from autoresearch.protocol.source import canonical_sha256_or_none
from autoresearch.trainer.policy import check_source

from ..errors import ProposerError
from ..workspace import ProposerUsage
from . import DEFAULT_MODEL, Proposal, ProposalContext

_logger = logging.getLogger(__name__)

DEFAULT_MAX_TOKENS = 32_000  # a complete train.py is ~4–8k tokens, plus adaptive thinking
TOOL_NAME = "submit_train_py"
# US dollars per million tokens: input, output, cache write (5 min), cache read, by model-id prefix
# (platform.claude.com model pages, November 2026). Unknown models are logged at $0.
PRICES: dict[str, tuple[float, float, float, float]] = {
    "claude-sonnet-5": (2.0, 10.0, 2.50, 0.20),  # Sonnet 5 and 5.5
    "claude-sonnet-4": (3.0, 15.0, 3.75, 0.30),  # Sonnet 4, 4.5, 4.6
    "claude-haiku-4": (1.0, 5.0, 1.25, 0.10),
}

SUBMIT_TOOL: dict[str, Any] = {
    "name": TOOL_NAME,
    "description": "Submit the next experiment: the complete new train.py and a one-line description of the change.",
    "input_schema": {
        "type": "object",
        "properties": {
            "description": {
                "type": "string",
                "description": "One line in upstream style, e.g. 'MATRIX_LR 0.04 → 0.06' or 'SwiGLU instead of ReLU² in MLP'.",
            },
            "train_py": {"type": "string", "description": "The complete new train.py (not a diff)."},
        },
        "required": ["description", "train_py"],
    },
}

SYSTEM = """You are an autonomous ML researcher improving a small GPT's train.py.
Each experiment trains train.py for a fixed wall-clock budget; the harness then measures val_bpb
(validation bits per byte, lower is better) on the model train.py returns. A change is kept only if it
lowers val_bpb. Propose ONE focused change per experiment and submit it with the submit_train_py tool:
the complete new file and a one-line description such as 'MATRIX_LR 0.04 → 0.06'.
Rules: keep the train(h) contract described in the file's docstring; import only torch, the standard
library helpers already used, and nothing that touches files, network, processes, eval/exec;
do not change only the random seed; do not repeat experiments from the results table.
The research instructions of the human who owns this machine follow (program.md)."""


def price_for(model: str) -> tuple[float, float, float, float] | None:
    """Per-million-token prices of ``model`` (longest matching prefix), or None when unknown."""
    matches = [prefix for prefix in PRICES if model.startswith(prefix)]
    return PRICES[max(matches, key=len)] if matches else None


def cost_usd(model: str, usage: ProposerUsage) -> float:
    """US dollars for ``usage`` at ``model``'s prices (0.0 for an unknown model)."""
    price = price_for(model)
    if price is None:
        return 0.0
    p_in, p_out, p_write, p_read = price
    return (
        usage.input_tokens * p_in
        + usage.output_tokens * p_out
        + usage.cache_creation_input_tokens * p_write
        + usage.cache_read_input_tokens * p_read
    ) / 1e6


class AnthropicProposer:
    """Claude through the ``anthropic`` SDK (see the module docstring).

    Args:
        model: model id (default :data:`DEFAULT_MODEL`; ``--model`` / ``AUTORESEARCH_MODEL``).
        client: an ``anthropic.Anthropic`` (tests inject one on a mock transport); default reads
            ``ANTHROPIC_API_KEY``.
        max_attempts: answers tried per proposal before giving up.
        max_retries: SDK retries of 429/5xx/overloaded per request.
    """

    name = "anthropic"
    can_repair = True

    def __init__(
        self,
        *,
        model: str | None = None,
        client: anthropic.Anthropic | None = None,
        max_attempts: int = 3,
        max_retries: int = 6,
        max_tokens: int = DEFAULT_MAX_TOKENS,
        timeout: float = 600.0,
    ) -> None:
        self.model = model or DEFAULT_MODEL
        self.client = client or anthropic.Anthropic(max_retries=max_retries, timeout=timeout)
        self.max_attempts = max_attempts
        self.max_tokens = max_tokens
        self.timeout = timeout  # per request, seconds (explicit: a long answer needs more than the SDK's 10 min guess)
        if price_for(self.model) is None:
            _logger.warning("no price known for model %s: cost is logged as $0", self.model)

    def propose(self, ctx: ProposalContext) -> Proposal:
        """Ask Claude for a candidate; re-ask with the reason when the answer is unusable.

        Raises:
            ProposerError: the API failed after the SDK's retries, or ``max_attempts`` answers were
                unusable.
        """
        start = time.monotonic()
        messages: list[dict[str, Any]] = [{"role": "user", "content": self._user_content(ctx)}]
        totals = {"input_tokens": 0, "output_tokens": 0, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
        last_reason = ""
        for attempt in range(1, self.max_attempts + 1):
            response = self._create(ctx, messages)
            for key in totals:
                totals[key] += int(getattr(response.usage, key, 0) or 0)
            tool_use = next((b for b in response.content if getattr(b, "type", None) == "tool_use"), None)
            source, description, last_reason = self._check(ctx, tool_use, response.stop_reason)
            if not last_reason:
                usage = self._usage(totals, attempt, time.monotonic() - start)
                return Proposal(source=source, description=description, usage=usage)
            _logger.info("anthropic answer %d/%d unusable: %s", attempt, self.max_attempts, last_reason)
            messages.append({"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in response.content]})
            if tool_use is not None:
                feedback: dict[str, Any] = {
                    "type": "tool_result",
                    "tool_use_id": tool_use.id,
                    "is_error": True,
                    "content": f"Rejected: {last_reason}. Submit a corrected complete train.py.",
                }
            else:
                feedback = {"type": "text", "text": f"Rejected: {last_reason}. Use the {TOOL_NAME} tool."}
            messages.append({"role": "user", "content": [feedback]})
        self._usage(totals, self.max_attempts, time.monotonic() - start)
        raise ProposerError(f"Claude gave {self.max_attempts} unusable answers; last: {last_reason}")

    # request -------------------------------------------------------------------------------------

    def _create(self, ctx: ProposalContext, messages: list[dict[str, Any]]) -> Any:
        system = [
            {"type": "text", "text": SYSTEM},
            {"type": "text", "text": ctx.program_md or "(no program.md)", "cache_control": {"type": "ephemeral"}},
        ]
        try:
            return self.client.messages.create(  # type: ignore[call-overload]
                model=self.model,
                max_tokens=self.max_tokens,
                system=system,
                messages=messages,
                tools=[SUBMIT_TOOL],
                tool_choice={"type": "auto"},
                timeout=self.timeout,
            )
        except anthropic.APIError as exc:
            raise ProposerError(f"Anthropic API error: {exc}", hint="check ANTHROPIC_API_KEY and the model name") from exc

    @staticmethod
    def _user_content(ctx: ProposalContext) -> list[dict[str, Any]]:
        stable = {
            "type": "text",
            "text": f"Current best train.py (track {ctx.track or '?'}):\n```python\n{ctx.train_py}\n```",
            "cache_control": {"type": "ephemeral"},
        }
        parts = [f"Recent results (compact):\n{ctx.results_table or '(none yet)'}"]
        if ctx.suggestions:
            lines = [f"- {s.kind} {s.direction}: {s.rationale}" for s in ctx.suggestions[:10]]
            parts.append("Suggestions from the hub (other volunteers' findings):\n" + "\n".join(lines))
        if ctx.repair is not None:
            parts.append(
                f"The candidate '{ctx.repair.description}' crashed. Its train.py:\n```python\n{ctx.repair.source}\n```\n"
                f"Traceback tail:\n```\n{ctx.repair.error_tail}\n```\n"
                "Fix the bug while keeping the idea, and submit the complete fixed train.py "
                "(description: 'fix: …'). If the idea cannot work, submit a different change."
            )
        else:
            parts.append("Propose the next experiment and submit it with the submit_train_py tool.")
        return [stable, {"type": "text", "text": "\n\n".join(parts)}]

    # answer --------------------------------------------------------------------------------------

    @staticmethod
    def _check(ctx: ProposalContext, tool_use: Any, stop_reason: str | None) -> tuple[str, str, str]:
        """``(source, description, reason)``; ``reason`` is '' when the answer is usable."""
        if tool_use is None:
            return "", "", f"no {TOOL_NAME} tool call in the answer (stop_reason {stop_reason})"
        data = tool_use.input if isinstance(tool_use.input, dict) else {}
        source, description = data.get("train_py"), data.get("description")
        if not isinstance(source, str) or not isinstance(description, str) or not description.strip():
            return "", "", "the tool input needs string fields train_py and a non-empty description"
        if stop_reason == "max_tokens":
            return "", "", "the answer was cut off at max_tokens"
        try:
            ast.parse(source)
        except SyntaxError as exc:
            return "", "", f"train.py does not parse: line {exc.lineno}: {exc.msg}"
        child = canonical_sha256_or_none(source)
        if child == canonical_sha256_or_none(ctx.train_py):
            return "", "", "train.py is unchanged"
        if child in ctx.tried:
            return "", "", "this exact train.py was already run"
        findings = check_source(source)
        if findings:
            return "", "", "the policy check refused it: " + "; ".join(findings)
        return source, " ".join(description.split())[:500], ""

    def _usage(self, totals: dict[str, int], attempts: int, seconds: float) -> ProposerUsage:
        usage = ProposerUsage(**totals, attempts=attempts, seconds=round(seconds, 3))
        usage = usage.model_copy(update={"cost_usd": round(cost_usd(self.model, usage), 6)})
        _logger.info(
            "anthropic %s: %d input (+%d cache write, %d cache read) / %d output tokens, $%.4f, %d attempt(s)",
            self.model,
            usage.input_tokens,
            usage.cache_creation_input_tokens,
            usage.cache_read_input_tokens,
            usage.output_tokens,
            usage.cost_usd,
            attempts,
        )
        return usage
