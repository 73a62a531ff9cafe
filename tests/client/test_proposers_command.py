"""The command proposer: a small agent script edits train.py in its scratch folder."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from autoresearch.client.errors import ProposerError
from autoresearch.client.proposers import ProposalContext, RepairRequest
from autoresearch.client.proposers.command import CommandProposer

PARENT = "import torch\n\nMATRIX_LR = 0.04\n"

AGENT = """
import pathlib, sys
prompt = pathlib.Path(sys.argv[-1]).read_text()
assert "Lower it." in prompt and "1  keep" in prompt, prompt
src = pathlib.Path("train.py").read_text()
pathlib.Path("train.py").write_text(src.replace("0.04", "0.05"))
pathlib.Path("description.txt").write_text("MATRIX_LR 0.04 → 0.05\\n")
print("edited")
"""


def write_agent(tmp_path: Path, body: str) -> str:
    path = tmp_path / "agent.py"
    path.write_text(body)
    return f"{sys.executable} {path}"


def ctx(**kw: object) -> ProposalContext:
    return ProposalContext(program_md="Lower it.", train_py=PARENT, results_table="#  status\n1  keep", **kw)  # type: ignore[arg-type]


def test_agent_edits_train_py_in_place(tmp_path: Path) -> None:
    proposer = CommandProposer(write_agent(tmp_path, AGENT), scratch_dir=tmp_path / "scratch")
    proposal = proposer.propose(ctx())
    assert proposal.source == PARENT.replace("0.04", "0.05")
    assert proposal.description == "MATRIX_LR 0.04 → 0.05"
    assert (tmp_path / "scratch" / "agent.log").read_text().strip() == "edited"
    assert proposal.usage is not None and proposal.usage.seconds >= 0


def test_prompt_placeholder_and_default_description(tmp_path: Path) -> None:
    agent = "import pathlib, sys\nassert sys.argv[1] == '--prompt'\np = pathlib.Path('train.py')\np.write_text(p.read_text() + 'EXTRA = 1\\n')\n"
    proposer = CommandProposer(write_agent(tmp_path, agent) + " --prompt {prompt}", scratch_dir=tmp_path / "s")
    proposal = proposer.propose(ctx())
    assert proposal.description == "agent edit (1 lines changed)"


def test_repair_hands_over_the_crashed_file(tmp_path: Path) -> None:
    agent = (
        "import pathlib\np = pathlib.Path('train.py')\nassert 'Linaer' in p.read_text()\n"
        "assert 'NameError' in pathlib.Path('prompt.md').read_text()\np.write_text(p.read_text().replace('Linaer', 'Linear'))\n"
    )
    crashed = PARENT + "M = Linaer\n"
    proposer = CommandProposer(write_agent(tmp_path, agent), scratch_dir=tmp_path / "s")
    proposal = proposer.propose(ctx(repair=RepairRequest(source=crashed, description="x", error_tail="NameError: Linaer")))
    assert proposal.source == PARENT + "M = Linear\n"


@pytest.mark.parametrize(
    ("body", "match"),
    [
        ("pass\n", "did not change"),
        ("import sys\nsys.exit(3)\n", "status 3"),
        ("import pathlib\npathlib.Path('train.py').write_text('def f(:')\n", "does not parse"),
        ("import time\ntime.sleep(30)\n", "timed out"),
    ],
)
def test_agent_failures_are_proposer_errors(tmp_path: Path, body: str, match: str) -> None:
    proposer = CommandProposer(write_agent(tmp_path, body), scratch_dir=tmp_path / "s", timeout=3, retries=0)
    with pytest.raises(ProposerError, match=match):
        proposer.propose(ctx())


def test_missing_agent_command(tmp_path: Path) -> None:
    with pytest.raises(ProposerError, match="not found"):
        CommandProposer("no-such-agent-xyz", scratch_dir=tmp_path / "s").propose(ctx())


def test_make_proposer_checks_its_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from autoresearch.client.errors import UsageError
    from autoresearch.client.proposers import default_proposer_name, make_proposer

    assert default_proposer_name() == "offline"
    with pytest.raises(UsageError, match="ANTHROPIC_API_KEY"):
        make_proposer("anthropic")
    with pytest.raises(UsageError, match="--agent-command"):
        make_proposer("command", scratch_dir=tmp_path)
    with pytest.raises(UsageError, match="unknown proposer"):
        make_proposer("gpt")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-test")
    assert default_proposer_name() == "anthropic"
    assert make_proposer("anthropic", model="claude-haiku-4-5").model == "claude-haiku-4-5"  # type: ignore[attr-defined]
