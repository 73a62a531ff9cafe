"""The Anthropic proposer against a mock Messages API (httpx2.MockTransport through the SDK's http_client)."""

from __future__ import annotations

import json
from collections.abc import Callable

import anthropic
import httpx2
import pytest

from autoresearch.client.errors import ProposerError
from autoresearch.client.proposers import ProposalContext, RepairRequest
from autoresearch.client.proposers.anthropic_api import TOOL_NAME, AnthropicProposer, cost_usd
from autoresearch.client.workspace import ProposerUsage
from autoresearch.protocol import Suggestion, canonical_source_sha256

PARENT = "import torch\n\nMATRIX_LR = 0.04  # Muon LR\n\n\ndef train(h):\n    return torch.nn.Linear(2, 2)\n"
GOOD = PARENT.replace("0.04", "0.06")


def message(train_py: str, description: str = "MATRIX_LR 0.04 → 0.06", *, n: int = 1, stop: str = "tool_use") -> dict:
    return {
        "id": f"msg_{n}",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-5-5",
        "content": [{"type": "tool_use", "id": f"toolu_{n}", "name": TOOL_NAME, "input": {"train_py": train_py, "description": description}}],
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": {"input_tokens": 1000, "output_tokens": 200, "cache_creation_input_tokens": 3000, "cache_read_input_tokens": 0},
    }


class MockApi:
    """Serves a scripted list of (status, body) answers and records every request body."""

    def __init__(self, answers: list[tuple[int, dict]]) -> None:
        self.answers = list(answers)
        self.requests: list[dict] = []

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        assert request.url.path == "/v1/messages"
        self.requests.append(json.loads(request.content))
        status, body = self.answers.pop(0)
        headers = {"retry-after": "0"} if status == 429 else {}
        return httpx2.Response(status, json=body, headers=headers)


def proposer_for(api: Callable[[httpx2.Request], httpx2.Response], **kw: object) -> AnthropicProposer:
    client = anthropic.Anthropic(api_key="test", max_retries=2, http_client=httpx2.Client(transport=httpx2.MockTransport(api)))
    return AnthropicProposer(client=client, **kw)  # type: ignore[arg-type]


def ctx(**kw: object) -> ProposalContext:
    return ProposalContext(program_md="# program\nLower val_bpb.", train_py=PARENT, results_table="#  status\n1  keep", track="tiny", **kw)  # type: ignore[arg-type]


RATE_LIMITED = {"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}}
OVERLOADED = {"type": "error", "error": {"type": "overloaded_error", "message": "overloaded"}}


def test_good_answer() -> None:
    api = MockApi([(200, message(GOOD))])
    proposal = proposer_for(api).propose(ctx(suggestions=[Suggestion(kind="exploit", direction="MATRIX_LR ↑", rationale="3 keeps")]))
    assert proposal.source == GOOD and proposal.description == "MATRIX_LR 0.04 → 0.06"
    assert proposal.usage is not None and proposal.usage.input_tokens == 1000 and proposal.usage.attempts == 1
    assert proposal.usage.cost_usd == pytest.approx((1000 * 2 + 200 * 10 + 3000 * 2.5) / 1e6)
    body = api.requests[0]
    assert body["model"] == "claude-sonnet-5-5"
    assert [t["name"] for t in body["tools"]] == [TOOL_NAME] and body["tool_choice"] == {"type": "auto"}
    assert body["system"][-1]["cache_control"] == {"type": "ephemeral"} and "Lower val_bpb." in body["system"][-1]["text"]
    stable, dynamic = body["messages"][0]["content"]
    assert stable["cache_control"] == {"type": "ephemeral"} and PARENT in stable["text"]
    assert "MATRIX_LR ↑" in dynamic["text"] and "1  keep" in dynamic["text"]


def test_429_then_success_is_retried() -> None:
    api = MockApi([(429, RATE_LIMITED), (529, OVERLOADED), (200, message(GOOD))])
    proposal = proposer_for(api).propose(ctx())
    assert proposal.source == GOOD
    assert len(api.requests) == 3


def test_unparsable_code_then_good_answer() -> None:
    api = MockApi([(200, message("def train(h:\n", n=1)), (200, message(GOOD, n=2))])
    proposal = proposer_for(api).propose(ctx())
    assert proposal.source == GOOD and proposal.usage is not None and proposal.usage.attempts == 2
    assert proposal.usage.input_tokens == 2000  # summed over both answers
    retry = api.requests[1]["messages"]
    assert [m["role"] for m in retry] == ["user", "assistant", "user"]
    feedback = retry[2]["content"][0]
    assert feedback["type"] == "tool_result" and feedback["tool_use_id"] == "toolu_1" and feedback["is_error"] is True
    assert "does not parse" in feedback["content"]


def test_answer_importing_socket_is_rejected_by_the_policy() -> None:
    hostile = "import socket\n" + GOOD
    api = MockApi([(200, message(hostile, n=i)) for i in range(1, 4)])
    with pytest.raises(ProposerError, match="3 unusable answers.*socket"):
        proposer_for(api, max_attempts=3).propose(ctx())
    assert len(api.requests) == 3
    assert "policy check refused it" in api.requests[1]["messages"][2]["content"][0]["content"]


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (PARENT, "unchanged"),
        (GOOD, "already run"),
    ],
)
def test_unchanged_or_tried_answers_are_reasked(answer: str, reason: str) -> None:
    better = PARENT.replace("0.04", "0.03")
    api = MockApi([(200, message(answer, n=1)), (200, message(better, "MATRIX_LR 0.04 → 0.03", n=2))])
    proposal = proposer_for(api).propose(ctx(tried=frozenset({canonical_source_sha256(GOOD)})))
    assert proposal.source == better
    assert reason in api.requests[1]["messages"][2]["content"][0]["content"]


def test_repair_prompt_carries_the_traceback_tail() -> None:
    api = MockApi([(200, message(GOOD, "fix: MATRIX_LR 0.04 → 0.06 (typo)"))])
    repair = RepairRequest(source=GOOD.replace("Linear", "Linaer"), description="MATRIX_LR 0.04 → 0.06", error_tail="AttributeError: Linaer")
    proposer_for(api).propose(ctx(repair=repair))
    text = api.requests[0]["messages"][0]["content"][1]["text"]
    assert "AttributeError: Linaer" in text and "crashed" in text and "Linaer" in text


def test_api_error_becomes_a_proposer_error() -> None:
    api = MockApi([(401, {"type": "error", "error": {"type": "authentication_error", "message": "bad key"}})])
    with pytest.raises(ProposerError, match="Anthropic API error") as info:
        proposer_for(api).propose(ctx())
    assert info.value.hint and "ANTHROPIC_API_KEY" in info.value.hint


def test_cost_of_unknown_model_is_zero() -> None:
    assert cost_usd("some-new-model", ProposerUsage(input_tokens=10**6)) == 0.0
    assert cost_usd("claude-haiku-4-5", ProposerUsage(input_tokens=10**6, output_tokens=10**6)) == pytest.approx(6.0)


def test_answer_without_the_tool_call_is_reasked() -> None:
    text_only = message(GOOD)
    text_only["content"] = [{"type": "text", "text": "I think we should raise the LR."}]
    text_only["stop_reason"] = "end_turn"
    api = MockApi([(200, text_only), (200, message(GOOD, n=2))])
    proposal = proposer_for(api).propose(ctx())
    assert proposal.source == GOOD
    feedback = api.requests[1]["messages"][2]["content"][0]
    assert feedback["type"] == "text" and TOOL_NAME in feedback["text"]
