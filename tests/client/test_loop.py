"""The agent loop's orchestration: keep/discard, git state, records, policy, hooks, prefetch, repair, resume.

Training here is a deterministic stand-in for the harness (``FormulaRunner``: val_bpb is a fixed
function of the candidate's constants) so each rule is checked exactly and fast; the same loop on the
real harness is exercised in tests/client/test_loop_training.py.
"""

from __future__ import annotations

import ast
import subprocess
import threading
import time
from pathlib import Path

import pytest

from autoresearch.client.errors import ProposerError, WorkspaceError
from autoresearch.client.loop import Adoption, AgentLoop, HubContext, LoopOptions, SoloHooks, decide
from autoresearch.client.proposers import Proposal, ProposalContext
from autoresearch.client.results import read_results
from autoresearch.client.workspace import Workspace
from autoresearch.protocol import (
    ClaimAnswer,
    ExperimentRecord,
    ExperimentView,
    Replications,
    RunMetrics,
    SoftwareVersions,
    Suggestion,
    canonical_source_sha256,
    record_id,
)
from autoresearch.trainer import tracks
from autoresearch.trainer.result import RunResult

BASE = '''import torch

LR = 0.10  # learning rate
WIDTH = 64  # channels
SEED = 1
A = 1
B = 2
C = 3
D = 4
E = 5


def train(h):
    return torch.nn.Linear(WIDTH, WIDTH)
'''


def consts(source: str) -> dict[str, float]:
    out = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name) and isinstance(node.value, ast.Constant):
            out[node.targets[0].id] = node.value.value
    return out


class FormulaRunner:
    """Stand-in for run_training: val_bpb = 2 + (LR − 0.05)² · 10 − SEED/1000; ``CRASH = 1`` crashes."""

    def __init__(self, on_run=None) -> None:  # type: ignore[no-untyped-def]
        self.sources: list[str] = []
        self.on_run = on_run

    def __call__(self, train_py: Path, track, run_dir: Path, *, seed: int = 0, on_progress=None, allow_unsandboxed: bool = False) -> RunResult:  # type: ignore[no-untyped-def]
        source = train_py.read_text()
        self.sources.append(source)
        if self.on_run:
            self.on_run(len(self.sources), source)
        c = consts(source)
        log = run_dir / "run.log"
        common = dict(log_path=log, seed=seed, track=track.id, harness_version=tracks.HARNESS_VERSION,
                      hardware_class="cpu:test:2", software=SoftwareVersions(python="3.11"))  # fmt: skip
        if c.get("CRASH"):
            log.write_text("Traceback\nNameError: boom\n")
            return RunResult(outcome="crash", error="NameError: boom", **common)  # type: ignore[arg-type]
        val = 2.0 + (c["LR"] - 0.05) ** 2 * 10 - c["SEED"] / 1000
        log.write_text(f"val_bpb: {val}\n")
        return RunResult(outcome="ok", metrics=RunMetrics(val_bpb=val, training_seconds=0.01), **common)  # type: ignore[arg-type]


class Scripted:
    """Applies scripted (old, new, description) edits to the context's train.py; records contexts."""

    name = "scripted"

    def __init__(self, edits: list[tuple[str, str, str]], *, can_repair: bool = False, delay: float = 0.0) -> None:
        self.edits = list(edits)
        self.can_repair = can_repair
        self.delay = delay
        self.contexts: list[ProposalContext] = []

    def propose(self, ctx: ProposalContext) -> Proposal:
        self.contexts.append(ctx)
        time.sleep(self.delay)
        if not self.edits:
            raise ProposerError("script exhausted")
        old, new, description = self.edits.pop(0)
        base = ctx.repair.source if ctx.repair else ctx.train_py
        assert old in base, (old, base)
        return Proposal(source=base.replace(old, new), description=description)


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    return Workspace.init(tmp_path / "ws", track="tiny", reference_source=BASE, program_md="Lower val_bpb.\n")


def make_loop(ws: Workspace, proposer, runner=None, hooks=None, **opts) -> AgentLoop:  # type: ignore[no-untyped-def]
    options = LoopOptions(tag=opts.pop("tag", "t"), **opts)
    return AgentLoop(ws, tracks.get_track("tiny"), proposer, options, runner=runner or FormulaRunner(), hooks=hooks)


def git(ws: Workspace, *args: str) -> str:
    return subprocess.run(["git", "-C", str(ws.root), *args], capture_output=True, text=True, check=True).stdout.strip()


def recorded(ws: Workspace) -> list[ExperimentRecord]:
    return [e.record for e in ws.experiments() if e.kind == "run" and e.record is not None]


# --------------------------------------------------------------------------------------------------


def test_keep_and_discard_follow_val_bpb(ws: Workspace) -> None:
    proposer = Scripted([("LR = 0.10", "LR = 0.06", "LR 0.10 → 0.06"), ("WIDTH = 64", "WIDTH = 128", "WIDTH 64 → 128"),
                         ("LR = 0.06", "LR = 0.20", "LR 0.06 → 0.20")])  # fmt: skip
    stats = make_loop(ws, proposer, max_experiments=4, prefetch=False).run()
    assert (stats.runs, stats.keeps, stats.discards, stats.crashes) == (4, 2, 2, 0)
    # git: the init commit (the baseline) plus the one kept candidate; discards are gone from HEAD
    assert git(ws, "rev-parse", "--abbrev-ref", "HEAD") == "autoresearch/t"
    subjects = git(ws, "log", "--format=%s").splitlines()
    assert subjects == ["LR 0.10 → 0.06", "autoresearch: reference train.py for track tiny"]
    head = ws.train_py.read_text()
    assert "LR = 0.06" in head and "WIDTH = 64" in head
    assert git(ws, "status", "--porcelain") == ""
    # records and results.tsv agree row for row
    records = recorded(ws)
    assert [r.status for r in records] == ["keep", "keep", "discard", "discard"]
    assert [r.description for r in records] == ["baseline", "LR 0.10 → 0.06", "WIDTH 64 → 128", "LR 0.06 → 0.20"]
    rows = read_results(ws.results_tsv)
    assert [(r.val_bpb, r.status, r.description) for r in rows] == [
        (f"{r.metrics.val_bpb:.6f}", r.status, r.description) for r in records
    ]
    assert [r.commit for r in rows] == [e.commit[:7] for e in ws.experiments()]  # type: ignore[index]
    # the record is a valid unsigned experiment: parent = the best at the time, Δ vs that parent
    kept = records[1]
    assert kept.parent_sha256 == records[0].child_sha256 and kept.parent_val_bpb == records[0].metrics.val_bpb
    assert kept.normalised.delta_val_bpb == pytest.approx(kept.metrics.val_bpb - records[0].metrics.val_bpb)  # type: ignore[operator]
    assert kept.diff.startswith("--- a/train.py\n+++ b/train.py\n") and "+LR = 0.06" in kept.diff
    assert records[2].parent_sha256 == kept.child_sha256  # parent of later runs is the new best
    assert all(r.track == tracks.get_track("tiny").id for r in records)
    # each run kept its log
    assert all((ws.runs_dir / f"{n:04d}" / "run.log").exists() for n in range(1, 5))
    # every source the records name can be found again (the federation uploads them)
    assert ws.source_by_sha256(records[2].child_sha256) == BASE.replace("LR = 0.10", "LR = 0.06").replace("WIDTH = 64", "WIDTH = 128")
    assert ws.source_by_sha256(records[0].parent_sha256) == BASE
    assert ws.source_by_sha256("0" * 64) is None


def test_seed_only_change_is_never_kept(ws: Workspace) -> None:
    runner = FormulaRunner()
    make_loop(ws, Scripted([("SEED = 1", "SEED = 7", "SEED 1 → 7")]), runner, max_experiments=2, prefetch=False).run()
    records = recorded(ws)
    assert records[1].metrics.val_bpb < records[0].metrics.val_bpb  # type: ignore[operator]
    assert records[1].status == "discard"
    assert "SEED = 1" in ws.train_py.read_text()


def test_policy_rejects_without_running(ws: Workspace) -> None:
    runner = FormulaRunner()
    proposer = Scripted([("import torch", "import torch\nimport socket", "sneaky"), ("LR = 0.10", "LR = 0.07", "LR 0.10 → 0.07")])
    stats = make_loop(ws, proposer, runner, max_experiments=2, prefetch=False).run()
    assert stats.rejected == 1 and stats.runs == 2
    assert not any("socket" in s for s in runner.sources)
    rejected = [e for e in ws.experiments() if e.kind == "rejected"]
    assert len(rejected) == 1 and "socket" in rejected[0].rejected_reasons[0]
    assert [r.description for r in read_results(ws.results_tsv)] == ["baseline", "LR 0.10 → 0.07"]


def test_proposer_failures_stop_the_loop_after_max_failures(ws: Workspace) -> None:
    with pytest.raises(ProposerError, match="3 proposals in a row failed"):
        make_loop(ws, Scripted([]), max_experiments=5, max_failures=3, prefetch=False).run()
    assert [r.description for r in recorded(ws)] == ["baseline"]


def test_dirty_train_py_is_refused(ws: Workspace) -> None:
    ws.train_py.write_text(BASE + "# edit\n")
    with pytest.raises(WorkspaceError, match="uncommitted"):
        make_loop(ws, Scripted([]), max_experiments=1).run()


class RecordingHooks(SoloHooks):
    def __init__(self, answers: list[str], done_record: ExperimentRecord | None = None, adoption: Adoption | None = None) -> None:
        self.answers = answers
        self.done_record = done_record
        self.adoption = adoption
        self.published: list[ExperimentRecord] = []
        self.claims: list[str] = []
        self.adopt_calls: list[float | None] = []

    def context(self) -> HubContext:
        return HubContext(suggestions=[Suggestion(kind="exploit", direction="LR ↓", rationale="hub says")])

    def claim(self, parent_source: str, child_source: str, description: str) -> ClaimAnswer | None:
        self.claims.append(description)
        status = self.answers.pop(0) if self.answers else "granted"
        h = canonical_source_sha256(child_source)
        view = None
        if status == "done":
            assert self.done_record is not None
            view = ExperimentView(id=record_id(self.done_record), key_id="a" * 64, client_name="other", received_at=self.done_record.created_at,
                                  record=self.done_record, replications=Replications(n=1))  # fmt: skip
        return ClaimAnswer(status=status, track="tiny", parent_canonical_sha256=h, child_canonical_sha256=h, experiment=view)  # type: ignore[arg-type]

    def publish(self, record: ExperimentRecord) -> None:
        self.published.append(record)

    def adopt(self, best_val_bpb: float | None) -> Adoption | None:
        self.adopt_calls.append(best_val_bpb)
        adoption, self.adoption = self.adoption, None
        return adoption


def test_hooks_claim_done_held_publish_and_adopt(ws: Workspace) -> None:
    # a first loop gives us a real record to serve as the hub's "done" answer
    make_loop(ws, Scripted([]), max_experiments=1, prefetch=False, tag="seed").run()
    done_record = recorded(ws)[0]
    adopted_source = BASE.replace("LR = 0.10", "LR = 0.05")
    hooks = RecordingHooks(["done", "held"], done_record, Adoption(source=adopted_source, description="adopt community best"))
    runner = FormulaRunner()
    proposer = Scripted([("LR = 0.10", "LR = 0.09", "done elsewhere"), ("LR = 0.10", "LR = 0.08", "held elsewhere"),
                         ("LR = 0.10", "LR = 0.07", "LR 0.10 → 0.07")])  # fmt: skip
    stats = make_loop(ws, proposer, runner, hooks=hooks, max_experiments=3, adopt_every=2, prefetch=False, tag="fed").run()
    assert hooks.claims == ["done elsewhere", "held elsewhere", "LR 0.10 → 0.07", "adopt community best"]
    assert stats.skipped == 2 and stats.runs == 3
    assert not any("LR = 0.09" in s or "LR = 0.08" in s for s in runner.sources)  # neither was run
    hub_done = [e for e in ws.experiments() if e.kind == "hub_done"]
    assert len(hub_done) == 1 and hub_done[0].record == done_record and hub_done[0].hub_experiment_id == record_id(done_record)
    assert [r.description for r in hooks.published] == ["baseline", "LR 0.10 → 0.07", "adopt community best"]
    assert hooks.adopt_calls and hooks.adopt_calls[0] == pytest.approx(hooks.published[1].metrics.val_bpb)
    assert "LR = 0.05" in ws.train_py.read_text()  # the adopted train.py beat ours and was kept
    assert all(c.suggestions and c.suggestions[0].direction == "LR ↓" for c in proposer.contexts)


def test_prefetched_proposal_is_rebased_onto_a_new_best(ws: Workspace) -> None:
    # while "LR 0.10 → 0.06" trains (and is kept), the next proposal "E 5 → 50" is prepared against
    # the baseline; it must run merged onto the new best.
    proposer = Scripted([("LR = 0.10", "LR = 0.06", "LR 0.10 → 0.06"), ("E = 5", "E = 50", "E 5 → 50")])
    runner = FormulaRunner()
    make_loop(ws, proposer, runner, max_experiments=3).run()
    assert proposer.contexts[1].train_py == BASE  # prepared before the keep was known
    merged = runner.sources[3]  # [1] the keep, [2] its parent re-measured next to it (no calibration)
    assert runner.sources[2] == BASE
    assert "LR = 0.06" in merged and "E = 50" in merged
    assert recorded(ws)[2].parent_sha256 == recorded(ws)[1].child_sha256


def test_conflicting_prefetch_is_reproposed(ws: Workspace) -> None:
    proposer = Scripted([("LR = 0.10", "LR = 0.06", "LR 0.10 → 0.06"), ("LR = 0.10", "LR = 0.11", "LR 0.10 → 0.11"),
                         ("LR = 0.06", "LR = 0.055", "LR 0.06 → 0.055")])  # fmt: skip
    runner = FormulaRunner()
    make_loop(ws, proposer, runner, max_experiments=3).run()
    assert "LR = 0.055" in runner.sources[3]  # after the keep and its paired parent
    assert not any("LR = 0.11" in s for s in runner.sources)


def test_prefetch_overlaps_training(ws: Workspace) -> None:
    """A proposer that takes 0.5 s while training takes 1 s: the proposal is ready when training ends.

    Without prefetch the loop would wait 3 × 0.5 s; allow half of that for a loaded machine."""
    proposer = Scripted([("LR = 0.10", f"LR = 0.0{i}", f"LR → 0.0{i}") for i in range(9, 5, -1)][:1]
                        + [("A = 1", f"A = {i}", f"A → {i}") for i in range(2, 5)], delay=0.5)  # fmt: skip
    runner = FormulaRunner(on_run=lambda n, s: time.sleep(1.0))
    loop = make_loop(ws, proposer, runner, max_experiments=4)
    loop.run()
    assert len(proposer.contexts) == 3  # no proposal prepared after the last run
    assert loop.stats.proposer_seconds < 0.75


def test_crash_gets_one_repair_attempt(ws: Workspace) -> None:
    proposer = Scripted([("LR = 0.10", "LR = 0.06\nCRASH = 1", "LR 0.10 → 0.06"), ("CRASH = 1", "CRASH = 0", "fix: LR 0.10 → 0.06"),
                         ("A = 1", "A = 2\nCRASH = 1", "A 1 → 2"), ("CRASH = 1", "CRASH = 0", "fix: A")], can_repair=True)  # fmt: skip
    make_loop(ws, proposer, max_experiments=3, prefetch=False).run()
    records = recorded(ws)
    assert [r.status for r in records] == ["keep", "crash", "keep"]
    assert records[1].outcome == "crash" and records[1].error == "NameError: boom"
    repair_ctx = proposer.contexts[1]
    assert repair_ctx.repair is not None and repair_ctx.repair.error_tail == "NameError: boom"
    assert ws.experiments()[2].repair_of == 2
    assert read_results(ws.results_tsv)[1].val_bpb == "0.000000"


def test_stop_request_finishes_and_records_the_current_run(ws: Workspace) -> None:
    loop: AgentLoop
    runner = FormulaRunner(on_run=lambda n, s: loop.request_stop() if n == 2 else None)
    loop = make_loop(ws, Scripted([("LR = 0.10", "LR = 0.07", "LR 0.10 → 0.07")] * 1), runner, max_experiments=5, prefetch=False)
    stats = loop.run()
    assert stats.runs == 2 and len(recorded(ws)) == 2 and ws.pending() is None


def test_interrupted_run_resumes_under_the_same_number(ws: Workspace) -> None:
    def interrupt(n: int, source: str) -> None:
        if n == 2:
            raise KeyboardInterrupt

    proposer = Scripted([("LR = 0.10", "LR = 0.06", "LR 0.10 → 0.06"), ("A = 1", "A = 2", "A 1 → 2")])
    with pytest.raises(KeyboardInterrupt):
        make_loop(ws, proposer, FormulaRunner(on_run=interrupt), max_experiments=3, prefetch=False).run()
    pending = ws.pending()
    assert pending is not None and pending.number == 2 and len(recorded(ws)) == 1
    runner = FormulaRunner()
    make_loop(ws, proposer, runner, max_experiments=2, prefetch=False).run()
    assert "LR = 0.06" in runner.sources[0]  # the interrupted candidate ran again first
    assert [e.number for e in ws.experiments()] == [1, 2, 3]
    assert [r.description for r in read_results(ws.results_tsv)] == ["baseline", "LR 0.10 → 0.06", "A 1 → 2"]
    assert (ws.runs_dir / "0002-2").is_dir()  # a fresh run folder: an orphaned harness may own the first


def test_resume_on_a_new_invocation_keeps_the_best(ws: Workspace) -> None:
    make_loop(ws, Scripted([("LR = 0.10", "LR = 0.06", "LR 0.10 → 0.06")]), max_experiments=2, prefetch=False).run()
    proposer = Scripted([("A = 1", "A = 3", "A 1 → 3")])
    runner = FormulaRunner()
    stats = make_loop(ws, proposer, runner, max_experiments=1, prefetch=False).run()
    assert len(runner.sources) == 1 and "LR = 0.06" in runner.sources[0]  # no second baseline
    assert proposer.contexts[0].train_py == ws.source_at("HEAD")
    assert "LR 0.10 → 0.06" in proposer.contexts[0].results_table
    assert stats.best_val_bpb == recorded(ws)[1].metrics.val_bpb


@pytest.mark.parametrize(
    ("kw", "expected"),
    [
        (dict(outcome="crash", val_bpb=None), "crash"),
        (dict(outcome="over_budget", val_bpb=1.0), "crash"),
        (dict(baseline=True), "keep"),
        (dict(val_bpb=1.1), "discard"),
        (dict(val_bpb=1.0), "discard"),  # equal is not better
        (dict(seed_only=True), "discard"),
        (dict(z=0.5, min_z=2.0), "discard"),
        (dict(z=2.5, min_z=2.0), "keep"),
        (dict(z=None, min_z=2.0), "keep"),  # no calibration: min_z does not apply
        (dict(), "keep"),
    ],
)
def test_decide(kw: dict, expected: str) -> None:
    args = dict(outcome="ok", val_bpb=0.9, best_val_bpb=1.0, baseline=False, z=None, min_z=None, seed_only=False)
    args.update(kw)
    assert decide(**args) == expected  # type: ignore[arg-type]


def test_concurrent_runs_are_refused(ws: Workspace) -> None:
    started = threading.Event()
    release = threading.Event()

    def block(n: int, source: str) -> None:
        started.set()
        release.wait(10)

    loop = make_loop(ws, Scripted([]), FormulaRunner(on_run=block), max_experiments=1)

    def run_locked() -> None:
        with ws.lock():
            loop.run()

    thread = threading.Thread(target=run_locked)
    thread.start()
    assert started.wait(10)
    with pytest.raises(WorkspaceError, match="another"):
        Workspace.open(ws.root).lock()
    release.set()
    thread.join()


def test_failed_baseline_is_retried_then_gives_up(ws: Workspace) -> None:
    flaky = FormulaRunner(on_run=lambda n, s: None)
    calls = {"n": 0}

    def crash_first(train_py, track, run_dir, **kw):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 1:
            train_py.write_text(train_py.read_text() + "CRASH = 1\n")
        return flaky(train_py, track, run_dir, **kw)

    make_loop(ws, Scripted([("LR = 0.10", "LR = 0.07", "LR 0.10 → 0.07")]), crash_first, max_experiments=3, prefetch=False).run()
    assert [(r.description, r.status) for r in recorded(ws)] == [("baseline", "crash"), ("baseline", "keep"), ("LR 0.10 → 0.07", "keep")]

    def always_crash(train_py, track, run_dir, **kw):  # type: ignore[no-untyped-def]
        train_py.write_text(train_py.read_text() + "CRASH = 1\n")
        return flaky(train_py, track, run_dir, **kw)

    with pytest.raises(WorkspaceError, match="baseline train.py failed 3 times"):
        make_loop(ws, Scripted([]), always_crash, max_experiments=5, prefetch=False, tag="broken").run()


def test_a_changed_track_starts_with_a_new_baseline(ws: Workspace) -> None:
    make_loop(ws, Scripted([("LR = 0.10", "LR = 0.06", "LR 0.10 → 0.06")]), max_experiments=2, prefetch=False).run()
    longer = tracks.get_track("tiny", time_budget=5.0)
    runner = FormulaRunner()
    loop = AgentLoop(ws, longer, Scripted([("LR = 0.06", "LR = 0.06", "same idea, new track")]), LoopOptions(tag="t", max_experiments=1), runner=runner)
    loop.run()
    latest = ws.experiments()[-1]
    assert latest.description == "baseline" and latest.track == longer.id
    assert "LR = 0.06" in runner.sources[0]  # the new baseline is the current best train.py


def test_endless_rejections_stop_the_loop(ws: Workspace) -> None:
    class Hostile(Scripted):
        def propose(self, ctx: ProposalContext) -> Proposal:
            self.contexts.append(ctx)
            return Proposal(source=ctx.train_py + f"import socket  # {len(self.contexts)}\n", description="sneaky")

    runner = FormulaRunner()
    with pytest.raises(ProposerError, match="8 candidates in a row were rejected"):
        make_loop(ws, Hostile([]), runner, max_experiments=5, max_failures=2, prefetch=False).run()
    assert len(runner.sources) == 1  # only the baseline ran
    assert len([e for e in ws.experiments() if e.kind == "rejected"]) == 8


def test_displays_render_the_loop(ws: Workspace) -> None:
    import io

    from rich.console import Console

    from autoresearch.client.display import LiveDisplay, PlainDisplay
    from autoresearch.trainer.result import TrainProgress

    plain_out = io.StringIO()
    plain = PlainDisplay(Console(file=plain_out, width=300, no_color=True))
    loop = AgentLoop(ws, tracks.get_track("tiny"), Scripted([("LR = 0.10", "LR = 0.06", "LR 0.10 → 0.06")]),
                     LoopOptions(tag="t", max_experiments=2, prefetch=False), runner=FormulaRunner(), events=plain)  # fmt: skip
    loop.run()
    lines = plain_out.getvalue().splitlines()
    assert lines[0] == "[0001] start (4 s budget): baseline"
    # no calibration: the keep is provisional, and its parent was re-measured next to it first
    assert lines[-2].startswith("[0002] re-measuring the parent next to it before keeping: no calibration")
    assert lines[-1].startswith("[0002] keep (provisional: no calibration) val_bpb 2.000") and "Δ -0.0" in lines[-1]
    assert "(parent re-measured: 2.024000, first 2.024000)" in lines[-1] and "LR 0.10 → 0.06" in lines[-1]
    assert lines[-1].endswith("| best 2.000000 | 2 keep, 0 discard, 0 crash, 0 rejected, 1 parent re-measured")

    # not silent while training: one plain line (no escape codes) per quarter of the budget passed
    ticks = io.StringIO()
    plain = PlainDisplay(Console(file=ticks, width=200))
    plain.experiment_started(3, "DEPTH 2 → 3", 60.0)
    for second in range(0, 61, 5):
        plain.progress(TrainProgress(step=second, loss=4.0 - second / 100, training_seconds=float(second), time_budget=60.0))
    assert ticks.getvalue().splitlines()[1:] == [
        "[0003] step 15 loss 3.8500 15/60 s (45 s left)",
        "[0003] step 30 loss 3.7000 30/60 s (30 s left)",
        "[0003] step 45 loss 3.5500 45/60 s (15 s left)",
    ]

    live_out = io.StringIO()
    with LiveDisplay(Console(file=live_out, width=120, force_terminal=True, no_color=True)) as live:
        live.experiment_started(7, "MATRIX_LR 0.04 → 0.06", 4.0)
        live.progress(TrainProgress(step=3, loss=2.5, training_seconds=2.0, time_budget=4.0))
        live.experiment_finished(ws.experiments()[-1], loop.stats)
    rendered = live_out.getvalue()
    assert "experiment 7: MATRIX_LR 0.04 → 0.06" in rendered and "loss 2.5000" in rendered
    assert "[0002] keep" in rendered


def test_status_file_feeds_the_demo_table_across_processes(ws: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A volunteer's loop keeps a snapshot (join --status-file); the demo's one live table reads it.
    The plain display then prints no quarter lines (the table shows progress), and a half-written
    or missing snapshot reads as "starting" instead of breaking the table."""
    import io

    from rich.console import Console

    from autoresearch.client import display
    from autoresearch.client.demo import DemoTable, Volunteer
    from autoresearch.client.display import PlainDisplay, StatusFile, VolunteerStatus
    from autoresearch.trainer.result import TrainProgress

    path = tmp_path / "alice.status.json"
    out = io.StringIO()
    status = StatusFile(path, PlainDisplay(Console(file=out, width=200), progress_lines=False), of=2)
    assert VolunteerStatus.read(path) == VolunteerStatus(of=2)
    loop = AgentLoop(ws, tracks.get_track("tiny"), Scripted([("LR = 0.10", "LR = 0.06", "LR 0.10 → 0.06")]),
                     LoopOptions(tag="t", max_experiments=2, prefetch=False), runner=FormulaRunner(), events=status)  # fmt: skip
    loop.run()
    status.experiment_started(3, "DEPTH 2 → 3", 60.0)
    status.progress(TrainProgress(step=5, loss=3.95, training_seconds=5.0, time_budget=60.0))
    assert VolunteerStatus.read(path).step is None  # type: ignore[union-attr]  # throttled: at most 2 writes/s
    monkeypatch.setattr(display, "STATUS_INTERVAL_SECONDS", 0.0)
    status.progress(TrainProgress(step=15, loss=3.85, training_seconds=15.0, time_budget=60.0))
    snap = VolunteerStatus.read(path)
    assert snap is not None and (snap.phase, snap.number, snap.of, snap.keeps, snap.best_val_bpb) == ("training", 3, 2, 2, 2.0)
    assert "step 15" not in out.getvalue()  # no quarter lines: left to the watcher

    bob = tmp_path / "bob.status.json"
    bob.write_text('{"phase": "train')  # half a file (a reader racing a non-atomic writer)
    table = DemoTable(Console(file=io.StringIO()), [
        Volunteer("alice", tmp_path / "a", tmp_path / "ah", status_file=path),
        Volunteer("bob", tmp_path / "b", tmp_path / "bh", status_file=bob),
    ])  # fmt: skip
    shown = io.StringIO()
    Console(file=shown, width=160, no_color=True).print(table.render())
    alice_row, bob_row = (line for line in shown.getvalue().splitlines() if "alice" in line or "bob" in line)
    assert "training: DEPTH 2 → 3" in alice_row and "3.8500" in alice_row and "45 s" in alice_row and "2.000000" in alice_row
    assert "starting" in bob_row and "0/0/0" in bob_row
    status.close()
    final = VolunteerStatus.read(path)
    assert final is not None and final.phase == "done"


def test_a_baseline_that_fails_the_policy_stops_before_running(tmp_path: Path) -> None:
    upstream = "from prepare import MAX_SEQ_LEN, Tokenizer\nimport torch\nDEPTH = 8\n"
    ws = Workspace.init(tmp_path / "up", track="climbmix", reference_source=upstream, program_md="")
    runner = FormulaRunner()
    with pytest.raises(WorkspaceError, match="fails the policy check.*prepare") as info:
        make_loop(ws, Scripted([]), runner, max_experiments=1).run()
    assert info.value.hint is not None and "train(h)" in info.value.hint
    assert runner.sources == [] and ws.experiments() == []
