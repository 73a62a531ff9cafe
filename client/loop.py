"""The agent loop: propose → check → claim → commit → train → record → publish → keep or reset.

One :class:`AgentLoop` runs on one branch ``autoresearch/<tag>`` of a workspace. The first
experiment is the unmodified baseline; each later candidate is committed, trained by the harness in a
subprocess (:func:`autoresearch.trainer.run.run_training`), and its result written under
``.autoresearch/`` **before** any ``git reset``, so no result is lost. A candidate that lowers val_bpb
below the current best (and reaches ``min_z`` standard deviations of seed noise when calibrated;
a seed-only change never counts) keeps its commit; anything else resets the branch to the best.

**Drift guard.** A would-be keep is not kept on one comparison when the comparison may be the
machine's doing: its achieved throughput differs from the parent's by more than the calibrated
spread without its FLOPs per token explaining it, its z is below the single-run trust level
(:data:`~autoresearch.client.calibration.PAIRED_BELOW_Z`), or there is no z at all (no
calibration). Then the parent is re-measured right after it (paired, same seed) and the decision is
taken against that measurement (:func:`decide`); the record carries the paired parent's val_bpb.
docs/loop.md, "Drift guard".

The GPU does not wait for the agent: while a candidate trains, a background thread prepares the next
proposal against the current best. If the running candidate is kept, the prepared proposal is rebased
onto the new best with the hub's own three-way merge (:func:`autoresearch.protocol.source.rebase`);
a conflict means re-propose.

A crash gets one repair attempt from a proposer that can repair (the Anthropic one), given the
traceback tail. A killed process leaves ``.autoresearch/pending.json``; the next ``run`` resets to
the best commit and re-runs that candidate under the same number, so no row is lost or duplicated.

The federation plugs in through :class:`LoopHooks` (docs/architecture.md, "Loop ↔ federation");
:class:`SoloHooks` is the no-op default.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field

from autoresearch.protocol import (
    CalibrationRecord,
    ClaimAnswer,
    CommunityBest,
    ExperimentRecord,
    SoftwareVersions,
    Status,
    Suggestion,
    TrackSpec,
    record_id,
    utc_now,
)
from autoresearch.protocol.source import (
    MergeConflict,
    canonical_sha256_or_none,
    diff_too_large,
    extract_directions,
    is_seed_only,
    rebase,
    source_sha256,
    unified_diff,
)
from autoresearch.trainer.policy import check_source
from autoresearch.trainer.result import RunResult, TrainProgress

from . import calibration
from .errors import ClientError, ProposerError, WorkspaceError
from .proposers import Proposal, ProposalContext, Proposer, RepairRequest
from .results import ResultRow, atomic_write_text, compact_table
from .workspace import LocalExperiment, PairedParent, PendingExperiment, ProposerUsage, Workspace

_logger = logging.getLogger(__name__)

BASELINE_DESCRIPTION = "baseline"
COMMIT_TRAILER = "autoresearch-experiment:"
REPAIRABLE_OUTCOMES = frozenset({"crash", "nan", "oom", "eval_crash"})
ERROR_TAIL_CHARS = 3000
SKIP_FACTOR = 4  # consecutive rejected/skipped candidates allowed, × max_failures
MAX_BASELINE_ATTEMPTS = 3  # consecutive failed baselines before the loop gives up

# --------------------------------------------------------------------------------------------------
# The federation contract (docs/architecture.md)


class HubContext(BaseModel):
    """What the hub tells the loop before it proposes: suggestions and the community best."""

    model_config = ConfigDict(frozen=True)

    suggestions: list[Suggestion] = Field(default_factory=list)
    community_best: CommunityBest | None = None


class Adoption(BaseModel):
    """A ``train.py`` from elsewhere (the community best) to run next as a candidate.

    It runs like any candidate (policy check, training here, kept only if it beats the local best),
    so the local best stays measured on this machine.
    """

    model_config = ConfigDict(frozen=True)

    source: str
    description: str = Field(max_length=500)
    experiment_id: str | None = None


class LoopHooks(Protocol):
    """How the loop talks to a hub; every method must return quickly and never raise for a down hub."""

    def context(self) -> HubContext:
        """Suggestions and community best, fetched before proposing."""
        ...

    def claim(self, parent_source: str, child_source: str, description: str) -> ClaimAnswer | None:
        """Claim (parent, child): ``granted``/None → run; ``done`` → skip (use the hub's result);
        ``held`` → propose something else."""
        ...

    def publish(self, record: ExperimentRecord) -> None:
        """Hand over a finished experiment (any outcome); must not block research."""
        ...

    def adopt(self, best_val_bpb: float | None) -> Adoption | None:
        """Called every ``adopt_every`` runs: a better ``train.py`` to try, or None."""
        ...


class SoloHooks:
    """No hub: empty context, no claims, nothing published, nothing adopted."""

    def context(self) -> HubContext:
        return HubContext()

    def claim(self, parent_source: str, child_source: str, description: str) -> ClaimAnswer | None:
        return None

    def publish(self, record: ExperimentRecord) -> None:
        return None

    def adopt(self, best_val_bpb: float | None) -> Adoption | None:
        return None


# --------------------------------------------------------------------------------------------------
# Display events and options


class LoopEvents(Protocol):
    """What the display (client/display.py) hears from the loop."""

    def experiment_started(self, number: int, description: str, time_budget: float) -> None: ...

    def progress(self, progress: TrainProgress) -> None: ...

    def experiment_finished(self, exp: LocalExperiment, stats: LoopStats) -> None: ...

    def note(self, message: str) -> None: ...


class NullEvents:
    """Events that go only to the log."""

    def experiment_started(self, number: int, description: str, time_budget: float) -> None:
        _logger.info("experiment %d: %s", number, description)

    def progress(self, progress: TrainProgress) -> None:
        return None

    def experiment_finished(self, exp: LocalExperiment, stats: LoopStats) -> None:
        return None

    def note(self, message: str) -> None:
        _logger.info("%s", message)


@dataclass(frozen=True)
class LoopOptions:
    """Settings of one ``run``.

    ``max_experiments`` counts training runs of this invocation (the baseline included, paired
    re-measurements of a parent not; None: until stopped); ``min_z`` is the least improvement in
    units of the calibration's seed noise σ for a keep (None: ``calibration.DEFAULT_MIN_Z``, the
    hub's ``MIN_Z``; ignored without a calibration); ``adopt_every`` runs between ``hooks.adopt`` calls (0: never);
    ``max_failures`` consecutive proposer failures stop the loop; ``prefetch`` prepares the next
    proposal while training; ``allow_unsandboxed`` lets candidates run at isolation ``process`` on a
    machine without a sandbox (the user vouches for every candidate: docs/security.md).
    """

    tag: str
    max_experiments: int | None = None
    min_z: float | None = None
    adopt_every: int = 10
    seed: int = 0
    max_failures: int = 5
    prefetch: bool = True
    allow_unsandboxed: bool = False


@dataclass
class LoopStats:
    """Counters of this invocation plus the branch's best (val_bpb in bits per byte)."""

    runs: int = 0
    keeps: int = 0
    discards: int = 0
    crashes: int = 0
    rejected: int = 0
    skipped: int = 0
    paired: int = 0  # parent re-measurements of the drift guard (not counted in runs)
    best_val_bpb: float | None = None
    best_number: int | None = None
    training_seconds: float = 0.0
    proposer_seconds: float = 0.0
    started: float = field(default_factory=time.monotonic)

    @property
    def wall_seconds(self) -> float:
        return time.monotonic() - self.started


Runner = Callable[..., RunResult]
"""``run_training``'s signature: ``(train_py, track, run_dir, *, seed, on_progress) -> RunResult``."""


@dataclass(frozen=True)
class _Best:
    """The branch's best and its latest measurement on this machine (val_bpb in bits per byte,
    tokens/s and FLOPs per token as the harness reported them; None when unknown)."""

    number: int | None
    commit: str
    source: str
    val_bpb: float | None
    tokens_per_second: float | None = None
    flops_per_token: float | None = None


@dataclass(frozen=True)
class _Candidate:
    source: str
    description: str
    proposer: str
    usage: ProposerUsage | None = None
    repair_of: int | None = None
    number: int | None = None  # preassigned when resuming a killed run
    baseline: bool = False


class _Interrupted(Exception):
    """A stop was requested while a run was cut short; the candidate stays pending."""


class _Prefetch:
    """A proposal prepared in a daemon thread against ``base_source``."""

    def __init__(self, proposer: Proposer, ctx: ProposalContext) -> None:
        self.base_source = ctx.train_py
        self._proposer = proposer
        self._ctx = ctx
        self._result: Proposal | None = None
        self._error: ProposerError | None = None
        self._seconds = 0.0
        self._thread = threading.Thread(target=self._work, name="autoresearch-prefetch", daemon=True)
        self._thread.start()

    def _work(self) -> None:
        start = time.monotonic()
        try:
            self._result = self._proposer.propose(self._ctx)
        except ProposerError as exc:
            self._error = exc
        except Exception as exc:  # a bug in a proposer must not kill the loop from a thread
            _logger.exception("proposer failed in the background")
            self._error = ProposerError(f"proposer failed: {exc}")
        self._seconds = time.monotonic() - start

    def result(self) -> tuple[Proposal, float]:
        """Wait for the proposal; returns it and the seconds spent waiting here.

        Raises:
            ProposerError: the proposer failed.
        """
        start = time.monotonic()
        self._thread.join()
        waited = time.monotonic() - start
        if self._error is not None:
            raise self._error
        assert self._result is not None
        return self._result, waited


# --------------------------------------------------------------------------------------------------
# The loop


class AgentLoop:
    """Runs experiments on ``autoresearch/<tag>`` until ``max_experiments`` or :meth:`request_stop`.

    Args:
        workspace: the workspace (its ``train.py`` must be committed).
        track: the track every run uses.
        proposer: writes candidates.
        options: see :class:`LoopOptions`.
        hooks: the federation (default :class:`SoloHooks`).
        events: the display (default: log lines).
        runner: ``run_training`` (tests and benches may wrap it).
    """

    def __init__(
        self,
        workspace: Workspace,
        track: TrackSpec,
        proposer: Proposer,
        options: LoopOptions,
        *,
        hooks: LoopHooks | None = None,
        events: LoopEvents | None = None,
        runner: Runner | None = None,
    ) -> None:
        self.ws = workspace
        self.track = track
        self.proposer = proposer
        self.options = options
        self.hooks: LoopHooks = hooks or SoloHooks()
        self.events: LoopEvents = events or NullEvents()
        self.runner = runner or _default_runner()
        self.stats = LoopStats()
        self._stop = threading.Event()
        self._tried: set[str] = set()
        self._queue: list[_Candidate] = []
        self._prefetch: _Prefetch | None = None
        self._hub = HubContext()
        self._calibration_loaded = False
        self._calibration: CalibrationRecord | None = None
        self._runs_since_adopt = 0
        self._baseline_failures = 0

    def request_stop(self) -> None:
        """Stop after the current experiment is recorded (safe from a signal handler)."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    # setup ---------------------------------------------------------------------------------------

    def _tag_experiments(self) -> list[LocalExperiment]:
        """This tag's experiments under this track id (a changed track or harness starts afresh)."""
        return [e for e in self.ws.experiments() if e.tag == self.options.tag and e.track == self.track.id]

    def _restore(self) -> _Best | None:
        """Check out the branch, recover from a killed run, and find the best so far."""
        pending = self.ws.pending()
        if self.ws.train_py_dirty() and pending is None:
            raise WorkspaceError(
                "train.py has uncommitted changes",
                hint="commit them (they become the next baseline) or discard them with `git checkout train.py`",
            )
        if pending is not None and pending.tag != self.options.tag:
            raise WorkspaceError(
                f"experiment {pending.number} of tag {pending.tag!r} was interrupted",
                hint=f"resume it first with `autoresearch run --tag {pending.tag}`",
            )
        if pending is not None:
            self.ws.git("reset", "-q", "--hard")  # drop a half-written train.py before switching
        self.ws.checkout_run_branch(self.options.tag)
        every = self.ws.experiments()
        for exp in every:
            if exp.child_canonical_sha256 and exp.track == self.track.id:
                self._tried.add(exp.child_canonical_sha256)
        best = self._best_recorded()
        self.ws.write_results_tsv()  # a kill between recording and rewriting left it one row short
        if pending is not None:
            if any(e.number == pending.number for e in every):  # killed after recording
                _logger.info("experiment %d was recorded before the interruption", pending.number)
            else:
                self._queue_resumed(pending, best)
            self.ws.clear_pending()
        if best is not None:
            head = self.ws.head()
            if head != best.commit and COMMIT_TRAILER in self.ws.git("log", "-1", "--format=%B"):
                _logger.info("resetting an unrecorded candidate commit %s", head[:7])
                self.ws.reset_hard(best.commit)
            if self.ws.source_at("HEAD") != best.source:
                _logger.info("train.py changed by hand since the last best: running a new baseline")
                best = None
        if best is None and any(e.tag == self.options.tag and e.track != self.track.id for e in every):
            _logger.info("track %s differs from this tag's earlier experiments: running a new baseline", self.track.id)
        if best is None and not any(c.baseline for c in self._queue):
            self._queue.insert(0, self._baseline())
        return best

    def _best_recorded(self) -> _Best | None:
        """The last keep of this tag, with its latest measurement: a paired re-measurement made
        after it (docs/loop.md, "Drift guard") replaces its own run's figures."""
        experiments = self._tag_experiments()
        for i in range(len(experiments) - 1, -1, -1):
            exp = experiments[i]
            if exp.kind == "run" and exp.record is not None and exp.record.status == "keep" and exp.commit:
                m = exp.record.metrics
                best = _Best(exp.number, exp.commit, self.ws.source_at(exp.commit), m.val_bpb, m.tokens_per_second,
                             exp.flops_per_token)  # fmt: skip
                for later in experiments[i + 1 :]:
                    paired = later.paired_parent
                    if later.parent_commit == exp.commit and paired is not None and paired.outcome == "ok":
                        best = replace(best, val_bpb=paired.val_bpb, tokens_per_second=paired.tokens_per_second,
                                       flops_per_token=paired.flops_per_token)  # fmt: skip
                return best
        return None

    def _queue_resumed(self, pending: PendingExperiment, best: _Best | None) -> None:
        source = self.ws.source_at(pending.commit)
        baseline = pending.commit == pending.parent_commit
        self.ws.reset_hard(pending.parent_commit if baseline or best is None else best.commit)
        _logger.info("resuming interrupted experiment %d: %s", pending.number, pending.description)
        self._queue.insert(
            0,
            _Candidate(
                source=source,
                description=pending.description,
                proposer=pending.proposer,
                usage=pending.usage,
                repair_of=pending.repair_of,
                number=pending.number,
                baseline=baseline,
            ),
        )

    def _baseline(self) -> _Candidate:
        return _Candidate(source=self.ws.source_at("HEAD"), description=BASELINE_DESCRIPTION, proposer="baseline", baseline=True)

    # main loop -----------------------------------------------------------------------------------

    def run(self) -> LoopStats:
        """Run until ``max_experiments`` runs, :meth:`request_stop`, or too many proposer failures.

        Raises:
            WorkspaceError: the workspace's git state is unusable.
            ProposerError: ``max_failures`` consecutive proposals failed.
        """
        self._check_isolation()
        best = self._restore()
        self._publish_imported()
        if best is not None:
            self.stats.best_val_bpb, self.stats.best_number = best.val_bpb, best.number
        failures = skips = 0
        while not self.stopping and (self.options.max_experiments is None or self.stats.runs < self.options.max_experiments):
            try:
                cand = self._next_candidate(best)
            except ProposerError as exc:
                failures += 1
                self.events.note(f"proposal failed ({failures}/{self.options.max_failures}): {exc}")
                if failures >= self.options.max_failures:
                    raise ProposerError(
                        f"{failures} proposals in a row failed; last: {exc}",
                        hint="check the proposer's settings, or edit program.md / train.py",
                    ) from exc
                continue
            failures = 0
            if cand is None:  # rejected by the policy, or held/done on the hub
                skips += 1
                if skips >= SKIP_FACTOR * self.options.max_failures:
                    raise ProposerError(
                        f"{skips} candidates in a row were rejected or already taken on the hub",
                        hint="see the rejected reasons in .autoresearch/experiments/",
                    )
                continue
            skips = 0
            try:
                best = self._experiment(cand, best)
            except _Interrupted:  # left pending for the next `run`
                break
        return self.stats

    def _publish_imported(self) -> None:
        """Hand an adopted checkout's imported records to the hub, once (client/upstream.py); solo,
        they wait for the first ``run`` with a hub."""
        if isinstance(self.hooks, SoloHooks):
            return
        for exp in self.ws.experiments():
            if exp.kind != "imported" or exp.record is None or exp.published_at is not None or exp.track != self.track.id:
                continue
            try:
                self.hooks.publish(exp.record)
            except ClientError as exc:  # as for any record: publishing never stops research
                _logger.warning("could not publish imported experiment %d: %s", exp.number, exc)
                continue
            self.ws.save_experiment(exp.model_copy(update={"published_at": utc_now()}))

    def _check_isolation(self) -> None:
        """Refuse to start where candidates could not be sandboxed, unless the user allowed it.

        Raises:
            ClientError: no sandbox here and ``allow_unsandboxed`` is off (the hint has the fix).
        """
        if self.runner is not _default_runner():
            return  # a test or bench runner decides for itself
        from autoresearch.trainer import sandbox

        support = sandbox.detect()
        if support.isolation == "sandbox":
            return
        if not self.options.allow_unsandboxed:
            raise ClientError(
                f"no sandbox on this machine ({support.reason}): candidates written by an agent or taken from a hub "
                "would run with your account's rights",
                hint=(support.hint or "install bubblewrap") + "; or pass --allow-unsandboxed to vouch for every candidate yourself",
            )
        self.events.note(f"running without a sandbox ({support.reason}); records say isolation=process")

    def _context(self, best: _Best | None, *, repair: RepairRequest | None = None) -> ProposalContext:
        program = self.ws.program_md.read_text(encoding="utf-8") if self.ws.program_md.exists() else ""
        recorded: list[tuple[int, ExperimentRecord | ResultRow]] = [
            (e.number, shown) for e in self.ws.experiments()
            if e.kind == "imported" and e.track == self.track.id and (shown := e.record or e.imported_row) is not None
        ]  # an adopted checkout's history comes first (client/upstream.py)
        recorded += [(e.number, e.record) for e in self._tag_experiments() if e.kind == "run" and e.record is not None]
        return ProposalContext(
            program_md=program,
            train_py=best.source if best else self.ws.source_at("HEAD"),
            results_table=compact_table(recorded),
            suggestions=list(self._hub.suggestions),
            tried=frozenset(self._tried),
            repair=repair,
            track=self.track.name,
            experiment_number=self.ws.next_number(),
        )

    def _propose(self, best: _Best | None) -> _Candidate:
        self._hub = self.hooks.context()
        start = time.monotonic()
        proposal = self.proposer.propose(self._context(best))
        self.stats.proposer_seconds += time.monotonic() - start
        return _Candidate(proposal.source, proposal.description, self.proposer.name, proposal.usage)

    def _next_candidate(self, best: _Best | None) -> _Candidate | None:
        """The next candidate to run, or None when the one found was rejected or skipped."""
        if self._queue:
            cand = self._queue.pop(0)
            if cand.baseline:
                return self._check_baseline(cand)
        elif (adoption := self._adoption(best)) is not None:
            cand = _Candidate(adoption.source, adoption.description, "hub")
        elif self._prefetch is not None:
            cand = self._take_prefetched(best)
        else:
            cand = self._propose(best)
        return self._admit(cand, best)

    def _check_baseline(self, cand: _Candidate) -> _Candidate:
        """The baseline passes the policy like any candidate; a refused one stops the loop.

        Raises:
            WorkspaceError: the committed ``train.py`` fails the policy check.
        """
        reasons = check_source(cand.source)
        if reasons:
            raise WorkspaceError(
                "the committed train.py fails the policy check: " + "; ".join(reasons),
                hint="fix train.py and commit it (an adopted upstream train.py must follow the train(h) contract, docs/trainer.md)",
            )
        return cand

    def _adoption(self, best: _Best | None) -> Adoption | None:
        if not self.options.adopt_every or self._runs_since_adopt < self.options.adopt_every or best is None:
            return None
        self._runs_since_adopt = 0
        return self.hooks.adopt(best.val_bpb)

    def _take_prefetched(self, best: _Best | None) -> _Candidate:
        prefetch, self._prefetch = self._prefetch, None
        assert prefetch is not None
        proposal, waited = prefetch.result()
        self.stats.proposer_seconds += waited
        source = proposal.source
        current = best.source if best else self.ws.source_at("HEAD")
        if prefetch.base_source != current:
            try:
                source = rebase(prefetch.base_source, current, proposal.source)
            except MergeConflict as exc:
                self.events.note(f"prepared proposal {proposal.description!r} conflicts with the new best ({exc}); re-proposing")
                return self._propose(best)
        return _Candidate(source, proposal.description, self.proposer.name, proposal.usage)

    def _admit(self, cand: _Candidate, best: _Best | None) -> _Candidate | None:
        """Policy, novelty and claim checks. Returns the candidate to run or None.

        Raises:
            ProposerError: the candidate is unchanged or was already tried (counts as a failure).
        """
        parent = best.source if best else cand.source
        reasons = check_source(cand.source)
        if not reasons and diff_too_large(parent, cand.source):
            reasons = ["the diff against the parent exceeds the protocol's 256 KiB limit"]
        child_hash = canonical_sha256_or_none(cand.source)
        if reasons:
            self._record_rejected(cand, best, reasons, child_hash)
            return None
        if cand.number is not None:  # resuming: it was admitted before
            return cand
        if child_hash == canonical_sha256_or_none(parent):
            raise ProposerError(f"candidate {cand.description!r} does not change train.py")
        if child_hash in self._tried:
            raise ProposerError(f"candidate {cand.description!r} was already tried")
        answer = self.hooks.claim(parent, cand.source, cand.description)
        if answer is not None and answer.status == "held":
            self._tried.add(child_hash or "")
            self.events.note(f"{cand.description!r} is being run by another volunteer; proposing something else")
            self.stats.skipped += 1
            return None
        if answer is not None and answer.status == "done" and answer.experiment is not None:
            self._record_hub_done(cand, best, answer, child_hash)
            return None
        return cand

    def _record_rejected(self, cand: _Candidate, best: _Best | None, reasons: list[str], child_hash: str | None) -> None:
        self._record_unrun(cand, best, child_hash, kind="rejected", rejected_reasons=reasons)
        self.stats.rejected += 1
        self.events.note(f"rejected {cand.description!r} by the policy check: {'; '.join(reasons)}")

    def _record_hub_done(self, cand: _Candidate, best: _Best | None, answer: ClaimAnswer, child_hash: str | None) -> None:
        assert answer.experiment is not None
        self._record_unrun(
            cand, best, child_hash, kind="hub_done", record=answer.experiment.record, hub_experiment_id=answer.experiment.id
        )
        self.stats.skipped += 1
        self.events.note(f"{cand.description!r} was already run on the hub ({answer.experiment.id[:12]}); skipped")

    def _record_unrun(self, cand: _Candidate, best: _Best | None, child_hash: str | None, **fields: Any) -> None:
        """Record a candidate that will not run here (``rejected`` or ``hub_done``) and mark it tried."""
        now = utc_now()
        exp = LocalExperiment(
            number=cand.number or self.ws.next_number(),
            tag=self.options.tag,
            track=self.track.id,
            parent_commit=best.commit if best else self.ws.head(),
            description=cand.description,
            proposer=cand.proposer,
            child_sha256=source_sha256(cand.source),
            child_canonical_sha256=child_hash,
            usage=cand.usage,
            started_at=now,
            finished_at=now,
            **fields,
        )
        self.ws.save_experiment(exp)
        if child_hash:
            self._tried.add(child_hash)

    # one experiment ------------------------------------------------------------------------------

    def _experiment(self, cand: _Candidate, best: _Best | None) -> _Best | None:
        """Commit, run, record, publish, keep or reset. Returns the best after this experiment.

        Raises:
            _Interrupted: a stop was requested and the run did not finish.
            WorkspaceError: the baseline failed ``MAX_BASELINE_ATTEMPTS`` times in a row.
        """
        number = cand.number or self.ws.next_number()
        parent_commit = best.commit if best else self.ws.head()
        parent_source = best.source if best else cand.source
        if cand.baseline:
            commit = parent_commit
        else:
            commit = self.ws.commit_train_py(cand.source, f"{cand.description}\n\n{COMMIT_TRAILER} {number}")
        started = utc_now()
        self.ws.set_pending(
            PendingExperiment(
                number=number,
                tag=self.options.tag,
                commit=commit,
                parent_commit=parent_commit,
                description=cand.description,
                proposer=cand.proposer,
                repair_of=cand.repair_of,
                usage=cand.usage,
                started_at=started,
            )
        )
        child_hash = canonical_sha256_or_none(cand.source)
        if child_hash:
            self._tried.add(child_hash)
        run_dir = self.ws.new_run_dir(number)
        train_py = run_dir / "train.py"
        atomic_write_text(train_py, cand.source)
        last = self.options.max_experiments is not None and self.stats.runs + 1 >= self.options.max_experiments
        if self.options.prefetch and self._prefetch is None and not last:  # the last run needs no successor
            self._hub = self.hooks.context()
            self._prefetch = _Prefetch(self.proposer, self._context(best))
        self.events.experiment_started(number, cand.description, self.track.time_budget)
        result = self._train(number, train_py, run_dir, cand.source)
        baseline = cand.baseline or best is None
        record = self._record(cand, parent_source, None if baseline or best is None else best.val_bpb, result, baseline=baseline)
        paired: PairedParent | None = None
        if record.status == "keep" and not baseline and best is not None:
            reason = self._pairing_reason(record, result, best)
            if reason is not None:
                paired, best = self._remeasure(number, best, reason)
                if paired.outcome == "ok":
                    record = self._record(cand, parent_source, paired.val_bpb, result, baseline=False,
                                          first_parent_val_bpb=paired.first_val_bpb)  # fmt: skip
                else:  # nothing to compare with next to it: not a keep
                    record = record.model_copy(update={"status": "discard"})
                    self.events.note(f"the parent's re-measurement ended {paired.outcome}: experiment {number} is not kept")
        exp = LocalExperiment(
            number=number,
            tag=self.options.tag,
            track=self.track.id,
            kind="run",
            commit=commit,
            parent_commit=parent_commit,
            description=cand.description,
            proposer=cand.proposer,
            child_sha256=record.child_sha256,
            child_canonical_sha256=record.child_canonical_sha256,
            record=record,
            repair_of=cand.repair_of,
            usage=cand.usage,
            run_dir=str(run_dir.relative_to(self.ws.root)),
            flops_per_token=result.flops_per_token,
            paired_parent=paired,
            started_at=started,
            finished_at=utc_now(),
        )
        self.ws.save_experiment(exp)
        self.ws.clear_pending()
        self.ws.write_results_tsv()
        self._count(record, result)
        try:
            self.hooks.publish(record)
        except ClientError as exc:  # publishing must never stop research; the federation logs details
            _logger.warning("could not publish experiment %d: %s", number, exc)
        new_best = best
        if record.status == "keep" and (self.ws.train_py_dirty() or self.ws.source_at(commit) != cand.source):
            raise WorkspaceError(
                f"train.py of experiment {number} changed in the workspace while it ran; not keeping it",
                hint="leave train.py alone while `autoresearch run` works (edit program.md instead)",
            )
        if record.status == "keep":
            new_best = _Best(number, commit, cand.source, record.metrics.val_bpb, record.metrics.tokens_per_second,
                             result.flops_per_token)  # fmt: skip
            self.stats.best_val_bpb, self.stats.best_number = new_best.val_bpb, number
        elif best is not None:
            self.stats.best_val_bpb = best.val_bpb  # the latest measurement (a paired one replaces it)
            self.ws.reset_hard(best.commit)
        self.events.experiment_finished(exp, self.stats)
        if record.status == "crash" and cand.baseline:
            self._retry_baseline(result)
        elif record.status == "crash" and self._wants_repair(cand, result):
            self._queue_repair(cand, result, number, new_best)
        return new_best

    def _train(self, number: int, train_py: Path, run_dir: Path, source: str) -> RunResult:
        """One training run through the harness (sandboxed worker; the harness measures), checked to
        have run ``source``; a run cut short by a stop raises :class:`_Interrupted`."""
        result = self.runner(train_py, self.track, run_dir, seed=self.options.seed, on_progress=self.events.progress,
                             allow_unsandboxed=self.options.allow_unsandboxed)  # fmt: skip
        result = self._check_ran(result, source)
        if self.stopping and result.outcome != "ok":
            self.events.note(f"experiment {number} interrupted; `autoresearch run` resumes it")
            raise _Interrupted
        return result

    def _check_ran(self, result: RunResult, source: str) -> RunResult:
        """The harness hashed the file it ran: anything else than the candidate is a crash."""
        if result.train_py_sha256 is None or result.train_py_sha256 == source_sha256(source):
            return result
        return result.model_copy(update={
            "outcome": "crash", "metrics": result.metrics.model_copy(update={"val_bpb": None}),
            "error": "the train.py the harness ran is not the candidate (changed on disk during the run)",
        })  # fmt: skip

    def _retry_baseline(self, result: RunResult) -> None:
        """Queue the baseline again; a baseline that keeps failing stops the loop (nothing to compare to)."""
        self._baseline_failures += 1
        if self._baseline_failures >= MAX_BASELINE_ATTEMPTS:
            tail = (result.error or "").strip().splitlines()[-1:] or [""]
            raise WorkspaceError(
                f"the baseline train.py failed {self._baseline_failures} times ({result.outcome}): {tail[0]}",
                hint=f"see the run logs under {self.ws.runs_dir}; fix train.py and commit it",
            )
        self.events.note(f"the baseline failed ({result.outcome}); running it again")
        self._queue.insert(0, self._baseline())

    def _count(self, record: ExperimentRecord, result: RunResult) -> None:
        self.stats.runs += 1
        self._runs_since_adopt += 1
        self.stats.training_seconds += result.metrics.training_seconds or 0.0
        if record.status == "keep":
            self.stats.keeps += 1
        elif record.status == "discard":
            self.stats.discards += 1
        else:
            self.stats.crashes += 1

    def _wants_repair(self, cand: _Candidate, result: RunResult) -> bool:
        return (
            self.proposer.can_repair
            and cand.repair_of is None
            and not cand.baseline
            and result.outcome in REPAIRABLE_OUTCOMES
            and not self.stopping
        )

    def _queue_repair(self, cand: _Candidate, result: RunResult, number: int, best: _Best | None) -> None:
        repair = RepairRequest(source=cand.source, description=cand.description, error_tail=(result.error or "")[-ERROR_TAIL_CHARS:])
        try:
            proposal = self.proposer.propose(self._context(best, repair=repair))
        except ProposerError as exc:
            self.events.note(f"repair of experiment {number} failed: {exc}")
            return
        self._queue.insert(0, _Candidate(proposal.source, proposal.description, self.proposer.name, proposal.usage, repair_of=number))

    # records -------------------------------------------------------------------------------------

    def _record(
        self,
        cand: _Candidate,
        parent_source: str,
        parent_val: float | None,
        result: RunResult,
        *,
        baseline: bool,
        first_parent_val_bpb: float | None = None,
    ) -> ExperimentRecord:
        """The unsigned ExperimentRecord of a run, with the normalised figures and the decision.

        ``parent_val`` (bits per byte) is the parent's measurement the child is compared with;
        ``first_parent_val_bpb`` the parent's earlier one when ``parent_val`` is a paired
        re-measurement (see :func:`decide`).
        """
        metrics = result.metrics
        hardware_class, software = self._machine(result)
        cal = self._load_calibration(hardware_class)
        normalised = calibration.normalise(cal, metrics.val_bpb if result.outcome == "ok" else None, parent_val)
        status = decide(
            outcome=result.outcome,
            val_bpb=metrics.val_bpb,
            best_val_bpb=parent_val,
            baseline=baseline,
            z=normalised.z,
            min_z=self._min_z(),
            seed_only=is_seed_only(extract_directions(parent_source, cand.source)),
            first_parent_val_bpb=first_parent_val_bpb,
        )
        child_canonical = canonical_sha256_or_none(cand.source)
        parent_canonical = canonical_sha256_or_none(parent_source)
        assert child_canonical and parent_canonical  # the policy check parsed both
        return ExperimentRecord(
            track=self.track.id,
            parent_sha256=source_sha256(parent_source),
            child_sha256=source_sha256(cand.source),
            parent_canonical_sha256=parent_canonical,
            child_canonical_sha256=child_canonical,
            diff=unified_diff(parent_source, cand.source),
            description=" ".join(cand.description.split())[:500],
            outcome=result.outcome,
            status=status,
            metrics=metrics,
            parent_val_bpb=parent_val,
            normalised=normalised,
            hardware_class=hardware_class[:200],
            software=software,
            harness_version=result.harness_version,
            calibration_id=record_id(cal) if cal is not None else None,
            isolation=result.isolation,
            loss_curve=result.loss_curve,
            seed=self.options.seed,
            error=(result.error or "")[-4096:] or None,
            created_at=utc_now(),
        )

    def _min_z(self) -> float:
        return self.options.min_z if self.options.min_z is not None else calibration.DEFAULT_MIN_Z

    # drift guard ---------------------------------------------------------------------------------

    def _pairing_reason(self, record: ExperimentRecord, result: RunResult, best: _Best) -> str | None:
        """Why a would-be keep needs its parent re-measured next to it, or None (docs/loop.md)."""
        cal = self._calibration if self._calibration_loaded else None
        drift = throughput_drift(best.tokens_per_second, best.flops_per_token,
                                 result.metrics.tokens_per_second, result.flops_per_token)  # fmt: skip
        return pairing_reason(record.normalised.z, drift, calibration.throughput_spread(cal))

    def _remeasure(self, number: int, best: _Best, reason: str) -> tuple[PairedParent, _Best]:
        """Run the best's ``train.py`` again, now, with the same seed; returns the measurement and the
        best with it (unchanged when the re-run failed).

        Raises:
            _Interrupted: a stop was requested and the re-run did not finish (the candidate stays
                pending and runs again on resume).
        """
        run_dir = self.ws.new_run_dir(number, suffix="-parent")
        train_py = run_dir / "train.py"
        atomic_write_text(train_py, best.source)
        self.events.note(f"[{number:04d}] re-measuring the parent next to it before keeping: {reason}")
        result = self._train(number, train_py, run_dir, best.source)
        self.stats.paired += 1
        self.stats.training_seconds += result.metrics.training_seconds or 0.0
        m = result.metrics
        assert best.val_bpb is not None  # a keep was compared with it
        paired = PairedParent(
            reason=reason, first_val_bpb=best.val_bpb, outcome=result.outcome,
            val_bpb=m.val_bpb if result.outcome == "ok" else None, tokens_per_second=m.tokens_per_second,
            num_steps=m.num_steps, flops_per_token=result.flops_per_token, run_dir=str(run_dir.relative_to(self.ws.root)),
        )  # fmt: skip
        if result.outcome != "ok" or m.val_bpb is None:
            return paired, best
        return paired, replace(best, val_bpb=m.val_bpb, tokens_per_second=m.tokens_per_second,
                               flops_per_token=result.flops_per_token)  # fmt: skip

    def _machine(self, result: RunResult) -> tuple[str, SoftwareVersions]:
        if result.hardware_class and result.software:
            return result.hardware_class, result.software
        from autoresearch.trainer import hardware

        return result.hardware_class or hardware.hardware_class(), result.software or hardware.software_versions()

    def _load_calibration(self, hardware_class: str) -> CalibrationRecord | None:
        if not self._calibration_loaded:
            self._calibration = calibration.load_cached(self.track, hardware_class)
            self._calibration_loaded = True
            if self._calibration is None:
                _logger.info("no calibration for %s on %s: results carry Δ val_bpb only", self.track.id, hardware_class)
        return self._calibration


def _default_runner() -> Runner:
    from autoresearch.trainer.run import run_training

    runner: Runner = run_training
    return runner


def decide(
    *,
    outcome: str,
    val_bpb: float | None,
    best_val_bpb: float | None,
    baseline: bool,
    z: float | None,
    min_z: float | None,
    seed_only: bool,
    first_parent_val_bpb: float | None = None,
) -> Status:
    """Keep, discard or crash (upstream's rule plus the noise guard).

    ``crash`` for any outcome but ``ok``; the baseline is kept; otherwise keep when val_bpb is
    strictly lower than ``best_val_bpb`` (the parent's measurement compared with, bits per byte),
    the change is not seed-only, and — when a calibration gives ``z`` (improvement in seed-noise σ)
    and ``min_z`` is set — ``z ≥ min_z``.

    ``first_parent_val_bpb``: set when ``best_val_bpb`` is a paired re-measurement of the parent and
    this its earlier measurement. Without a ``z`` the two measurements of one ``train.py`` are the
    only noise figure there is, so the child must then beat both by more than they differ:
    ``val_bpb < min(first, paired) − |first − paired|``. For a change that does nothing, with the
    three runs' noise i.i.d., that passes 16.7 % of the time (Monte Carlo, 2·10⁶ draws) instead of
    50 % for "lower than the paired parent"; such keeps carry no calibration and are shown
    provisional.
    """
    if outcome != "ok" or val_bpb is None:
        return "crash"
    if baseline:
        return "keep"
    if seed_only or best_val_bpb is None or val_bpb >= best_val_bpb:
        return "discard"
    if min_z is not None and z is not None and z < min_z:
        return "discard"
    if z is None and first_parent_val_bpb is not None:
        if val_bpb >= min(first_parent_val_bpb, best_val_bpb) - abs(first_parent_val_bpb - best_val_bpb):
            return "discard"
    return "keep"


def throughput_drift(
    parent_tokens_per_second: float | None,
    parent_flops_per_token: float | None,
    child_tokens_per_second: float | None,
    child_flops_per_token: float | None,
) -> float | None:
    """Relative change of achieved model FLOP/s from parent to child: ``(t_c·F_c)/(t_p·F_p) − 1``
    (t: tokens/s on the harness's budget clock; F: FLOPs per token). A change the diff explains
    (a model with twice the FLOPs per token at half the tokens/s) gives 0; a machine that got faster
    or slower under the same model gives the tokens/s change. Without both F, F is taken as
    unchanged (the tokens/s ratio alone). None when a tokens/s figure is missing.

    Trust: t is the harness's count; F is the model's own report from the sandboxed worker. A false F
    can only hide drift (skip a re-measure the z rule may still ask for), never make a keep.
    """
    if not parent_tokens_per_second or not child_tokens_per_second:
        return None
    ratio = child_tokens_per_second / parent_tokens_per_second
    if parent_flops_per_token and child_flops_per_token:
        ratio *= child_flops_per_token / parent_flops_per_token
    return ratio - 1.0


def pairing_reason(z: float | None, drift: float | None, spread: float) -> str | None:
    """Why a would-be keep must be compared with its parent re-measured next to it, or None.

    ``z``: the improvement in seed-noise σ (None: no calibration); ``drift``:
    :func:`throughput_drift`; ``spread``: ``calibration.throughput_spread`` (relative). Reasons, in
    order: no z; z below ``calibration.PAIRED_BELOW_Z`` (one run is not conclusive); drift beyond
    the spread.
    """
    if z is None:
        return "no calibration here, so no z to tell the gain from noise"
    if z < calibration.PAIRED_BELOW_Z:
        return f"z {z:+.2f} is below {calibration.PAIRED_BELOW_Z:.2f}, not conclusive from one run"
    if drift is not None and abs(drift) > spread:
        return (f"its throughput differs from the parent's by {drift:+.0%} (allowed ±{spread:.0%}) and its FLOPs per "
                "token do not explain it")  # fmt: skip
    return None
