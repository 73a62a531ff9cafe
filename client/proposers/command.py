"""The command proposer: hands a prompt file to an agent CLI the user already runs, which edits
``train.py`` in place.

Each proposal gets a scratch folder (``.autoresearch/agent/``) holding a copy of the current best
``train.py``, ``program.md`` and ``prompt.md``; the command runs there (cwd) with the prompt file's
path substituted for ``{prompt}`` or appended as the last argument. The agent edits ``train.py``
and may write a one-line ``description.txt``. The command gets the user's environment (it needs its
own credentials), a timeout, and its output is captured to ``agent.log`` beside the prompt. The
workspace's own ``train.py`` is never touched, so the loop's git state stays consistent while the
agent works in the background.
"""

from __future__ import annotations

import logging
import shlex
import shutil
import subprocess
import time
from pathlib import Path

from autoresearch.protocol.source import canonical_sha256_or_none, changed_lines

from ..errors import ProposerError
from ..results import atomic_write_text
from ..workspace import ProposerUsage
from . import Proposal, ProposalContext

_logger = logging.getLogger(__name__)

PROMPT = """# Task

You are the research agent of an autoresearch workspace. Edit `train.py` in this folder ({folder})
in place: make ONE change that you expect to lower val_bpb (validation bits per byte) within the
fixed training time budget. Then write a one-line description of the change (upstream style, e.g.
`MATRIX_LR 0.04 → 0.06`) to `description.txt` in this folder. Do not run the training yourself:
the loop does. Do not edit any other file.

Rules: keep the `train(h)` contract in the file's docstring; import only torch and the standard
library helpers already used; no files, network, processes, eval/exec (the policy check rejects
them); do not change only the seed; do not repeat an experiment from the table below.

# Research instructions (program.md)

{program}

# Recent results

{results}
{suggestions}{repair}"""


class CommandProposer:
    """Runs ``command`` (a shell-like string) in a scratch folder; see the module docstring.

    Args:
        command: the agent CLI, e.g. ``"my-agent --headless --prompt-file {prompt}"``.
        scratch_dir: folder the agent works in (recreated for every proposal).
        timeout: seconds before the command is killed (ProposerError).
    """

    name = "command"
    can_repair = True

    def __init__(self, command: str, *, scratch_dir: Path, timeout: float = 1800.0) -> None:
        self.argv = shlex.split(command)
        if not self.argv:
            raise ProposerError("the agent command is empty")
        self.scratch_dir = scratch_dir
        self.timeout = timeout

    def propose(self, ctx: ProposalContext) -> Proposal:
        """Run the agent once and return its edited ``train.py``.

        Raises:
            ProposerError: the command is missing, timed out or failed, or left ``train.py``
                unchanged, unparsable or identical to one already tried.
        """
        folder = self._prepare(ctx)
        prompt = folder / "prompt.md"
        argv = [a.replace("{prompt}", str(prompt)) for a in self.argv]
        if not any("{prompt}" in a for a in self.argv):
            argv.append(str(prompt))
        start = time.monotonic()
        log_path = folder / "agent.log"
        try:
            with log_path.open("wb") as log:
                proc = subprocess.run(
                    argv, cwd=folder, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                    timeout=self.timeout, check=False,
                )  # fmt: skip
        except FileNotFoundError as exc:
            raise ProposerError(f"agent command not found: {argv[0]}", hint="check --agent-command") from exc
        except subprocess.TimeoutExpired as exc:
            raise ProposerError(f"agent command timed out after {self.timeout:g} s (output in {log_path})") from exc
        seconds = time.monotonic() - start
        if proc.returncode != 0:
            tail = log_path.read_text(errors="replace")[-500:]
            raise ProposerError(f"agent command exited with status {proc.returncode}: {tail.strip()}")
        source = (folder / "train.py").read_text(encoding="utf-8")
        child = canonical_sha256_or_none(source)
        if child is None:
            raise ProposerError("the agent left a train.py that does not parse")
        if child == canonical_sha256_or_none(ctx.train_py):
            raise ProposerError("the agent did not change train.py")
        if child in ctx.tried:
            raise ProposerError("the agent produced a train.py that was already run")
        description = self._description(folder, ctx.train_py, source)
        _logger.info("agent command took %.1f s: %s", seconds, description)
        return Proposal(source=source, description=description, usage=ProposerUsage(seconds=round(seconds, 3)))

    def _prepare(self, ctx: ProposalContext) -> Path:
        folder = self.scratch_dir
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        atomic_write_text(folder / "train.py", ctx.train_py)
        atomic_write_text(folder / "program.md", ctx.program_md)
        suggestions = ""
        if ctx.suggestions:
            suggestions = "\n# Hub suggestions\n\n" + "\n".join(
                f"- {s.kind} {s.direction}: {s.rationale}" for s in ctx.suggestions[:10]
            ) + "\n"
        repair = ""
        if ctx.repair is not None:
            repair = (
                f"\n# Fix a crash\n\nThe candidate '{ctx.repair.description}' crashed; it is in train.py now. "
                f"Fix it (keep the idea if you can). Traceback tail:\n\n```\n{ctx.repair.error_tail}\n```\n"
            )
            atomic_write_text(folder / "train.py", ctx.repair.source)
        text = PROMPT.format(
            folder=folder, program=ctx.program_md, results=ctx.results_table or "(none yet)",
            suggestions=suggestions, repair=repair,
        )  # fmt: skip
        atomic_write_text(folder / "prompt.md", text)
        return folder

    @staticmethod
    def _description(folder: Path, parent: str, child: str) -> str:
        path = folder / "description.txt"
        if path.exists():
            line = " ".join(path.read_text(encoding="utf-8", errors="replace").split())
            if line:
                return line[:500]
        return f"agent edit ({changed_lines(parent, child)} lines changed)"
