"""The hub-connected loop hooks: what the loop asks a hub, and what it publishes to it.

:class:`HubHooks` implements the loop's ``LoopHooks`` (docs/architecture.md, "Loop ↔ federation"):

- ``context()`` — the hub's suggestions and the community best for this hardware class; a hub that
  is down gives an empty context (logged once per outage) and the loop carries on solo;
- ``claim()`` — signs a ``ClaimRecord`` with lease = 2 × time budget + 120 s and returns the hub's
  ``ClaimAnswer`` (``None`` when the hub is down: proceed solo);
- ``publish()`` — signs the ``ExperimentRecord`` and puts the envelope (plus the parent ``train.py``
  the hub may not have) into the durable outbox; the background sender delivers it;
- ``adopt()`` — called by the loop every ``adopt_every`` runs: offers the community best of this
  hardware class as the next candidate when it beats the local best, after the policy check.

A hub failure of any kind (down, slow past the request deadline, an answer too large, too deep or of
the wrong schema, code that does not match its signed record) makes the hooks carry on solo, logged
once per outage with why; while it lasts the hub is asked again after 30 s, then 60 s, … at most
every 10 minutes, so a hub that hangs costs the loop at most one deadline per interval. What the
hub sends is screened by client/hubtrust.py before the loop or a proposer sees it.

Trust rule for adoption (code written by others runs on this machine): the user trusted the hub's
community best by joining with ``--yes`` (unattended) or by listing the signer's key id in
``$AUTORESEARCH_HOME/trusted_keys.txt``; otherwise adoption is skipped and logged (``autoresearch
pull`` shows the diff and asks). The policy check always applies, and so does the one
community-best rule: the client re-applies :func:`autoresearch.protocol.best.assess` to the evidence
the hub serves with the best (``CommunityBest.candidate``) and adopts only a ``qualified`` run whose
evidence is the served experiment itself (:func:`qualifies`). It does not re-verify the signatures
of the confirming runs: a hub that lies about those can still mislead it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from autoresearch.protocol import (
    ClaimAnswer,
    ClaimRecord,
    CommunityBest,
    ExperimentRecord,
    KeyPair,
    Suggestion,
    SuggestionList,
    canonical_source_sha256,
    sha256_hex,
    sign,
    utc_now,
)
from autoresearch.protocol.best import assess

from .errors import BadHubResponse, HubError, RecordRejected
from .federation import is_trusted
from .hubclient import HubClient
from .hubtrust import derive_combined, screen_suggestions, source_problem, verify_served_code
from .outbox import Outbox, OutboxSender
from .safetext import safe_text

if TYPE_CHECKING:  # client/loop.py imports the trainer (torch); keep it out of import time
    from .loop import Adoption, HubContext

_logger = logging.getLogger(__name__)

LEASE_MARGIN_SECONDS = 120  # lease = 2 × budget (the harness's kill deadline) + start-up, eval, margin (s)
DOWN_RETRY_SECONDS = 30.0  # while the hub is down, the hooks ask it again after this long, doubling…
DOWN_RETRY_MAX_SECONDS = 600.0  # …up to this (s)
HOOKS_DEADLINE_SECONDS = 10.0  # total deadline of a request the loop waits for (context, claim), s


def policy_findings(source: str) -> list[str]:
    """The static policy check of a ``train.py`` from someone else (empty: allowed)."""
    from autoresearch.trainer.policy import check_source

    findings: list[str] = check_source(source)
    return findings


class HubHooks:
    """The loop's hooks when joined to a hub (see the module docstring).

    Args:
        hub: client of the joined hub.
        outbox: the workspace's outbox; ``sender`` delivers it in the background.
        keys: this client's signing key.
        track: full track id; ``time_budget`` its budget in seconds (for the claim lease).
        hardware_class: this machine's hardware class (community best and suggestions are per class).
        trust_community_best: adopt without a trusted key id (the user joined with ``--yes``).
    """

    def __init__(
        self,
        *,
        hub: HubClient,
        outbox: Outbox,
        sender: OutboxSender | None,
        keys: KeyPair,
        track: str,
        time_budget: float,
        hardware_class: str,
        trust_community_best: bool = False,
        source_lookup: Callable[[str], str | None] | None = None,
    ) -> None:
        self.hub = hub
        self.outbox = outbox
        self.sender = sender
        self.keys = keys
        self.track = track
        self.time_budget = time_budget
        self.hardware_class = hardware_class
        self.trust_community_best = trust_community_best
        self._source_lookup = source_lookup
        self._sources: dict[str, str] = {}
        self._hub_down = False
        self._retry_at = 0.0
        self._retry_delay = DOWN_RETRY_SECONDS
        self._offered: set[str] = set()  # experiment ids already offered for adoption
        self._replicating: set[str] = set()  # child canonical hashes the hub asked us to re-run
        self._adopting: set[str] = set()  # community bests adopted: measured here even if run elsewhere
        self._code_checks: dict[tuple[str, str, str], str | None] = {}  # (kind, experiment ids, sha256) → problem

    # -- hub availability ---------------------------------------------------------------------------

    def mark_down(self, exc: HubError, *, logged: bool = False) -> None:
        """Carry on solo: log why (once per outage; ``logged``: the caller did) and ask the hub again
        only after a back-off (``DOWN_RETRY_SECONDS``, doubling up to ``DOWN_RETRY_MAX_SECONDS``
        while it keeps failing)."""
        if not self._hub_down:
            if not logged:
                _logger.warning("hub unavailable, carrying on solo (records wait in the outbox): %s", exc)
            self._retry_delay = DOWN_RETRY_SECONDS
        else:
            self._retry_delay = min(DOWN_RETRY_MAX_SECONDS, self._retry_delay * 2)
        self._hub_down = True
        self._retry_at = time.monotonic() + self._retry_delay

    def _up(self) -> None:
        if self._hub_down:
            _logger.info("hub reachable again")
        self._hub_down = False

    def _skip(self) -> bool:
        """While the hub is down, ask it again only every ``DOWN_RETRY_SECONDS``."""
        return self._hub_down and time.monotonic() < self._retry_at

    def remember_source(self, source: str) -> str:
        """Keep a ``train.py`` text by sha256 so a later publish can upload it; returns the sha256."""
        sha: str = sha256_hex(source)
        self._sources[sha] = source
        return sha

    def _lookup(self, sha: str) -> str | None:
        if sha in self._sources:
            return self._sources[sha]
        return self._source_lookup(sha) if self._source_lookup else None

    # -- LoopHooks ----------------------------------------------------------------------------------

    def suggestions(self) -> SuggestionList | None:
        """The hub's suggestions for this hardware class, or None when the hub is down."""
        if self._skip():
            return None
        try:
            answer = self.hub.suggestions(self.track, hardware_class=self.hardware_class, client=self.keys.key_id)
        except HubError as exc:
            self.mark_down(exc)
            return None
        self._up()
        answer = answer.model_copy(update={"items": screen_suggestions(answer.items, verify_code=self._check_code)})
        self.expect_replications(answer.items)
        return answer

    def _check_code(self, s: Suggestion) -> str | None:
        """Why the code of suggestion ``s`` must not run here (None: it may).

        ``replicate``: the named experiment's envelope must verify and sign this code. ``combine``:
        the merge must be re-derived here, byte for byte, from the signed experiments it names
        (:func:`~autoresearch.client.hubtrust.derive_combined`). Either way every signer must be
        trusted (``--yes`` or ``trusted_keys.txt``); other kinds carry no code this client runs.
        Verdicts are cached per (suggestion, code). The code then runs only in the sandboxed worker.
        """
        assert s.train_py is not None
        if s.kind not in ("replicate", "combine"):
            return f"a {s.kind} suggestion carries no code this client runs"
        if s.kind == "replicate" and s.experiment_id is None:
            return "no experiment named to verify the code against"
        key = (s.kind, s.experiment_id or ",".join(s.evidence), sha256_hex(s.train_py))
        if key not in self._code_checks:
            try:
                if s.kind == "replicate":
                    assert s.experiment_id is not None
                    signers = [verify_served_code(self.hub, s.experiment_id, s.train_py).keyid]
                else:
                    signers = derive_combined(self.hub, s)[1]
            except BadHubResponse as exc:
                self._code_checks[key] = str(exc)
            except HubError as exc:  # not cached: the next context() asks again
                return f"its signed record could not be fetched ({exc})"
            else:
                untrusted = [k for k in signers if not (self.trust_community_best or is_trusted(k))]
                self._code_checks[key] = f"its signer {untrusted[0][:16]}… is not trusted" if untrusted else None
        return self._code_checks[key]

    def expect_replications(self, suggestions: Sequence[Suggestion]) -> None:
        """Remember the ``replicate`` suggestions' children: the hub asked for another run of those,
        so a claim answered ``done`` by another client's result must not skip them."""
        self._replicating = {
            canonical_source_sha256(s.train_py) for s in suggestions if s.kind == "replicate" and s.train_py
        }

    def community_best(self) -> CommunityBest | None:
        """The community best of this hardware class, or None when the hub is down."""
        if self._skip():
            return None
        try:
            best = self.hub.best(self.track, hardware_class=self.hardware_class)
            if sha256_hex(best.train_py) != best.sha256:
                raise BadHubResponse(f"the hub's community best does not hash to its sha256 {best.sha256[:12]}")
            problem = source_problem(best.train_py)
            if problem is not None:
                raise BadHubResponse(f"the hub's community best is refused: {problem}")
        except HubError as exc:
            self.mark_down(exc)
            return None
        self._up()
        self.remember_source(best.train_py)
        return best

    def claim(self, parent_source: str, child_source: str, description: str) -> ClaimAnswer | None:
        """Claim (parent, child) for ``2 × time_budget + LEASE_MARGIN_SECONDS``; None: proceed solo."""
        self.remember_source(parent_source)
        self.remember_source(child_source)
        record = ClaimRecord(
            track=self.track,
            parent_canonical_sha256=canonical_source_sha256(parent_source),
            child_canonical_sha256=canonical_source_sha256(child_source),
            lease_seconds=int(self.time_budget * 2 + LEASE_MARGIN_SECONDS),
            description=description[:500],
            created_at=utc_now(),
        )
        if self._skip():
            return None
        try:
            try:
                answer = self.hub.claim(sign(record, self.keys))
            except RecordRejected as exc:
                skew = self.hub.clock_skew_seconds
                if exc.reason != "future_timestamp" or skew is None:
                    raise
                # A claim is made, signed and sent on the spot and nothing keeps its id, so it can be
                # re-stamped in the hub's time (unlike experiment records: their id is already local).
                answer = self.hub.claim(sign(record.model_copy(update={"created_at": _hub_now(skew)}), self.keys))
            _check_claim_answer(answer, record)
        except HubError as exc:
            self.mark_down(exc)
            return None
        self._up()
        if (
            answer.status == "done"
            and record.child_canonical_sha256 in self._replicating | self._adopting
            and (answer.experiment is None or answer.experiment.key_id != self.keys.key_id)
        ):
            _logger.info("claim %s: done by another client; running it here all the same (replication or adoption)", safe_text(description, one_line=True))
            return answer.model_copy(update={"status": "granted"})
        _logger.info("claim %s: %s", safe_text(description, one_line=True), answer.status)
        return answer

    def publish(self, record: ExperimentRecord) -> None:
        """Sign ``record`` and queue it (with its parent source when known) for the sender."""
        sources = {}
        parent = self._lookup(record.parent_sha256)
        if parent is not None:
            sources[record.parent_sha256] = parent
        self.outbox.enqueue("experiment", sign(record, self.keys), sources=sources)
        if self.sender is not None:
            self.sender.wake()

    def context(self) -> HubContext:
        """Suggestions and community best for this hardware class; empty when the hub is down."""
        from .loop import HubContext

        suggestions = self.suggestions()
        best = self.community_best() if suggestions is not None else None
        return HubContext(suggestions=list(suggestions.items) if suggestions else [], community_best=best)

    def adopt(self, best_val_bpb: float | None) -> Adoption | None:
        """The community best of this hardware class as the next candidate, when it beats
        ``best_val_bpb`` (bits per byte), comes from another key, qualifies under the community-best
        rule (:func:`qualifies`), is trusted and passes the policy.

        The loop calls this every ``adopt_every`` runs; the candidate is trained here and kept only
        if it beats the local best, so the local best stays measured on this machine. Each community
        best is offered once.
        """
        from .loop import Adoption

        best = self.community_best()
        if best is None or best.experiment is None or best.val_bpb is None:
            return None
        signer = best.experiment.key_id
        if signer == self.keys.key_id or best.experiment.id in self._offered:
            return None
        if best_val_bpb is not None and best.val_bpb >= best_val_bpb:
            return None
        if not qualifies(best):
            _logger.warning("the hub's community best %s… does not qualify under the community-best rule; not adopted",
                            best.experiment.id[:12])
            return None
        if not (self.trust_community_best or is_trusted(signer)):
            _logger.info(
                "community best %.6f from %s… beats ours but its signer is not trusted; "
                "see it with `autoresearch pull --best`",
                best.val_bpb,
                signer[:12],
            )
            return None
        try:  # the code runs here: its signed record must name it, signed by the key the hub says
            verify_served_code(self.hub, best.experiment.id, best.train_py, claimed_key_id=signer)
        except BadHubResponse as exc:
            self._offered.add(best.experiment.id)
            _logger.warning("not adopting the community best %s…: %s", best.experiment.id[:12], exc)
            return None
        except HubError as exc:
            self.mark_down(exc)
            return None
        findings = policy_findings(best.train_py)
        if findings:
            _logger.warning("community best from %s… fails the policy check: %s", signer[:12], "; ".join(findings))
            return None
        self._offered.add(best.experiment.id)
        self._adopting.add(canonical_source_sha256(best.train_py))  # its claim is "done" by its author
        return Adoption(source=best.train_py, description=adopt_message(best), experiment_id=best.experiment.id)


def _check_claim_answer(answer: ClaimAnswer, claim: ClaimRecord) -> None:
    """A claim's answer must be about that claim, and a ``done`` must carry that experiment (unless the
    hub says a near-duplicate was run): a hub answering ``done`` with anything would stop all training.

    Raises:
        BadHubResponse: the answer is about another (parent, child).
    """
    ours = (claim.parent_canonical_sha256, claim.child_canonical_sha256)
    if (answer.parent_canonical_sha256, answer.child_canonical_sha256) != ours:
        raise BadHubResponse("the hub answered a claim with another experiment's (parent, child)")
    if answer.status == "done" and answer.near_duplicate_of is None and answer.experiment is not None:
        rec = answer.experiment.record
        if (rec.parent_canonical_sha256, rec.child_canonical_sha256) != ours:
            raise BadHubResponse(f"the hub answered a claim 'done' with an unrelated experiment {answer.experiment.id[:12]}")


def _hub_now(skew_seconds: float) -> datetime:
    """The hub's current time (UTC, milliseconds) from this machine's clock and the measured skew."""
    now: datetime = utc_now() - timedelta(seconds=skew_seconds)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def qualifies(best: CommunityBest) -> bool:
    """Whether a served community best passes the one rule on the evidence served with it: the
    candidate is the served experiment (same id, key, val_bpb and hardware class) and
    :func:`autoresearch.protocol.best.assess` calls it ``qualified``."""
    cand, view = best.candidate, best.experiment
    if cand is None or view is None:
        return False
    same = (cand.run.experiment_id, cand.run.key_id, cand.run.val_bpb, cand.hardware_class) == (
        view.id, view.key_id, view.record.metrics.val_bpb, view.record.hardware_class
    )
    verdict: str = assess(cand).verdict
    return same and verdict == "qualified"


def adopt_message(best: CommunityBest) -> str:
    """Commit message of an adoption: ``adopt community best (val_bpb=… from <key id>)``."""
    assert best.experiment is not None and best.val_bpb is not None
    return f"adopt community best (val_bpb={best.val_bpb:.6f} from {best.experiment.key_id[:16]})"


