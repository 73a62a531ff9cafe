"""Federation: what a workspace joined to a hub remembers, and the hub-connected loop hooks.

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

import json
import logging
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

from autoresearch.protocol import (
    ClaimAnswer,
    ClaimRecord,
    ClientRegistration,
    CommunityBest,
    Envelope,
    ExperimentRecord,
    KeyPair,
    Suggestion,
    SuggestionList,
    TrackSpec,
    canonical_source_sha256,
    sha256_hex,
    sign,
    utc_now,
)
from autoresearch.protocol.best import assess

from . import config
from .errors import BadHubResponse, HubError, HubUnavailable, RecordRejected, UsageError
from .hubclient import HubClient, format_duration
from .hubtrust import derive_combined, screen_suggestions, source_problem, verify_served_code
from .outbox import Outbox, OutboxSender, SendReport
from .results import atomic_write_text
from .safetext import safe_text
from .workspace import read_state

if TYPE_CHECKING:  # client/loop.py imports the trainer (torch); keep it out of import time
    from .loop import Adoption, HubContext, LoopStats
    from .workspace import Workspace

    RunLoop = Callable[[Workspace, TrackSpec, "HubHooks"], LoopStats]

_logger = logging.getLogger(__name__)

FEDERATION_FILE = "federation.json"
LEASE_MARGIN_SECONDS = 120  # lease = 2 × budget (the harness's kill deadline) + start-up, eval, margin (s)
DEFAULT_ADOPT_EVERY = 5  # experiments between adoption checks
DOWN_RETRY_SECONDS = 30.0  # while the hub is down, the hooks ask it again after this long, doubling…
DOWN_RETRY_MAX_SECONDS = 600.0  # …up to this (s)
HOOKS_DEADLINE_SECONDS = 10.0  # total deadline of a request the loop waits for (context, claim), s


class FederationConfig(BaseModel):
    """What ``autoresearch join`` stores in ``.autoresearch/federation.json`` (no secrets: the token
    comes from ``--token`` / ``AUTORESEARCH_HUB_TOKEN`` each time)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    hub_url: str
    track: str = Field(description="full track id")
    key_id: str
    display_name: str
    joined_at: datetime


def federation_path(root: Path) -> Path:
    return root / ".autoresearch" / FEDERATION_FILE


def load_federation(root: Path) -> FederationConfig | None:
    """The workspace's federation settings, or None when it never joined a hub.

    Raises:
        StateFileError: the file exists but is not valid.
    """
    path = federation_path(root)
    if not path.exists():
        return None
    return read_state(path, FederationConfig, hint=f"remove it (rm {path}) and run `autoresearch join HUB_URL` again")


def save_federation(root: Path, fed: FederationConfig) -> None:
    """Write ``.autoresearch/federation.json`` atomically."""
    atomic_write_text(federation_path(root), fed.model_dump_json(indent=2) + "\n")


def is_trusted(key_id: str) -> bool:
    """Whether ``key_id`` is listed in ``$AUTORESEARCH_HOME/trusted_keys.txt``."""
    return key_id.lower() in config.trusted_key_ids()


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


def dump_json(model: BaseModel) -> object:
    """A model as plain JSON data (for ``--json`` output)."""
    return json.loads(model.model_dump_json(by_alias=True))


# --------------------------------------------------------------------------------------------------
# pull: fetch someone else's train.py and check it against its signed record


class Pulled(BaseModel):
    """A ``train.py`` fetched from the hub, checked against the signed record that names it."""

    model_config = ConfigDict(frozen=True)

    record_id: str
    key_id: str
    source: str
    description: str
    val_bpb: float | None
    hardware_class: str


def local_hardware_class(track: TrackSpec) -> str:
    """This machine's hardware class for ``track`` (the CPU class on CPU tracks, even with a GPU)."""
    from autoresearch.trainer.hardware import hardware_class_for

    hardware_class: str = hardware_class_for(track.device)
    return hardware_class


def fetch_pull(
    client: HubClient, track: str, *, experiment_id: str | None = None, hardware_class: str | None = None
) -> Pulled:
    """Fetch an experiment's child ``train.py`` (or the community best's) and verify it.

    ``hardware_class``: for the community best, this class (default: this machine's; ``any``: the
    hub's best by ECM across classes).

    Raises:
        UsageError: the hub has no kept experiment to pull yet.
        BadHubResponse: the served source, envelope and record do not agree (tampering, a lying
            signer field or a broken hub), or the source cannot be handled safely.
        HubUnavailable, RecordRejected: the hub failed or refused a request.
    """
    if experiment_id is None:
        klass = None if hardware_class == "any" else (hardware_class or local_hardware_class(_track_spec(client, track)))
        best = client.best(track, hardware_class=klass)
        if best.experiment is None:
            raise UsageError(
                f"the hub has no kept experiment on {track} for {klass or 'any hardware class'} yet",
                hint="its community best is still the track's reference train.py",
            )
        experiment_id = best.experiment.id
    detail = client.experiment(experiment_id)  # a unique prefix is fine: the hub resolves it
    if not detail.id.startswith(experiment_id.lower()):
        raise BadHubResponse(f"the hub answered experiment {detail.id[:12]} when asked for {experiment_id[:12]}")
    source = detail.child_source if detail.child_source is not None else client.source(detail.record.child_sha256)
    verified = verify_served_code(client, detail.id, source, claimed_key_id=detail.key_id)
    record = verified.record
    assert isinstance(record, ExperimentRecord)
    return Pulled(
        record_id=detail.id,
        key_id=detail.key_id,
        source=source,
        description=record.description,
        val_bpb=record.metrics.val_bpb,
        hardware_class=record.hardware_class,
    )


def _track_spec(client: HubClient, track: str) -> TrackSpec:
    """The local spec of ``track`` (name or id), else the hub's."""
    from autoresearch.trainer import tracks

    try:
        return tracks.get_track(track)
    except tracks.UnknownTrack:
        return client.track(track).spec


def pull_message(pulled: Pulled) -> str:
    """Commit message of a pull: names the source record and its signer."""
    val = "—" if pulled.val_bpb is None else f"{pulled.val_bpb:.6f}"
    return (
        f"pull {pulled.record_id[:12]}: {safe_text(pulled.description, one_line=True)} (val_bpb={val} from {pulled.key_id[:16]})\n\n"
        f"source record: {pulled.record_id}\nsigner key id: {pulled.key_id}\n"
    )


# --------------------------------------------------------------------------------------------------
# join: key, registration, track check, calibration, then the loop with HubHooks


class JoinOptions(BaseModel):
    """What ``autoresearch join`` was asked to do."""

    model_config = ConfigDict(frozen=True)

    hub_url: str
    init: Path | None = None
    track: str | None = None
    token: str | None = None
    display_name: str
    proposer: str = "auto"
    agent_command: str | None = None
    agent_timeout: float | None = None
    agent_retries: int | None = None
    max_experiments: int | None = None
    tag: str | None = None
    yes: bool = False
    adopt_every: int = DEFAULT_ADOPT_EVERY
    calibrate: bool = True
    directory: Path = Path(".")


def register_key(
    hub: HubClient, outbox: Outbox, keys: KeyPair, display_name: str, hardware_class: str, *, offline: bool = False
) -> bool:
    """Register ``keys`` with the hub; True when the hub answered, False when it is down (the
    registration then waits at the head of the outbox). ``offline``: the hub is known to be down
    (the caller logged why): queue the registration without asking it.

    The key is the identity: a key registered before under another display name keeps that name
    (``key_already_registered`` is fine); a display name another key holds gets ``-<6 hex of the key
    id>`` appended.

    Raises:
        RecordRejected: the hub refused the key (revoked, private hub without a valid token, …).
    """

    def registration(name: str) -> Envelope:
        record = ClientRegistration(
            public_key=keys.public_key_hex, display_name=name[:64], hardware_class=hardware_class[:200], created_at=utc_now()
        )
        return sign(record, keys)

    env = registration(display_name)
    if offline:
        outbox.enqueue("client", env)
        return False
    try:
        try:
            hub.register(env)
        except RecordRejected as exc:
            if exc.reason == "display_name_taken":
                hub.register(registration(f"{display_name[:57]}-{keys.key_id[:6]}"))
            elif exc.reason != "key_already_registered":
                raise
        view = hub.client(keys.key_id)
    except (HubUnavailable, BadHubResponse) as exc:
        _logger.warning("hub unavailable, carrying on solo (registration and records wait in the outbox): %s", exc)
        outbox.enqueue("client", env)
        return False
    if view.status == "revoked":
        raise RecordRejected(
            f"the hub revoked key {keys.key_id[:16]}…; it accepts no new records from it",
            status=403,
            reason="key_revoked",
            hint="your experiments stay in this workspace (.autoresearch/) and its outbox",
        )
    if view.status == "pending":
        _logger.warning("key %s… awaits the hub admin's approval; records wait in the outbox", keys.key_id[:16])
    return True


def check_track(hub: HubClient, spec: TrackSpec) -> None:
    """Refuse a track the local harness cannot reproduce exactly.

    Raises:
        UsageError: the hub's spec of this track has another harness version or id.
        RecordRejected: the hub does not know the track.
    """
    # by name: a hub on another harness version has another id for the same track
    theirs = hub.track(spec.name).spec
    if theirs.harness_version != spec.harness_version:
        raise UsageError(
            f"the hub's track {theirs.id} uses harness version {theirs.harness_version}, this client has "
            f"{spec.harness_version}: results would not compare",
            hint="install the autoresearch-hub version the hub runs",
        )
    if theirs.id != spec.id:
        raise UsageError(f"the hub's track {theirs.id} differs from the local {spec.id}")


def _spec(name: str) -> TrackSpec:
    """The local track spec; unknown → :class:`UsageError` naming the known tracks."""
    from autoresearch.trainer import tracks

    try:
        return tracks.get_track(name)
    except tracks.UnknownTrack as exc:
        raise UsageError(str(exc)) from exc


def _workspace_for(opts: JoinOptions) -> Workspace:
    """Open the workspace, or create it with ``--init DIR --track T``."""
    from autoresearch.trainer import tracks

    from .workspace import Workspace

    if opts.init is None:
        if opts.track is not None:
            raise UsageError("--track needs --init DIR (an existing workspace keeps its track)")
        return Workspace.open(opts.directory)
    if opts.track is None:
        raise UsageError("--init needs --track", hint="e.g. --init ./ws --track cpu")
    spec = _spec(opts.track)
    if (opts.init / ".autoresearch" / "config.json").exists():
        ws = Workspace.open(opts.init)
        if _spec(ws.config.track).id != spec.id:
            raise UsageError(f"{opts.init} is a workspace of track {ws.config.track}, not {opts.track}")
        return ws
    program = resources.files("autoresearch.client").joinpath("templates", "program.md").read_text(encoding="utf-8")
    return Workspace.init(opts.init, track=spec.name, reference_source=tracks.reference_source(spec), program_md=program)


def ensure_calibration(spec: TrackSpec, hardware_class: str, keys: KeyPair, outbox: Outbox, *, yes: bool) -> None:
    """Reuse or run this machine's calibration of ``spec`` and queue its signed record for the hub.

    Asks first unless ``yes``, as ``join --help`` promises (about 25 minutes on ``climbmix``, 7 on
    ``cpu``); a cached calibration is reused without asking.

    Raises:
        UsageError: the user declined, or no terminal to ask on without ``--yes``.
    """
    from . import calibration

    if calibration.load_cached(spec, hardware_class) is None:
        minutes = calibration.estimate_seconds(spec.time_budget) / 60
        if not yes:
            import sys

            import typer

            if not sys.stdin.isatty():
                raise UsageError(f"calibration of {spec.name} takes about {minutes:.0f} minutes", hint="re-run with --yes to run it")
            if not typer.confirm(f"calibrate {spec.name} on this machine now (about {minutes:.0f} minutes)?", err=True):
                raise UsageError("calibration declined", hint="join with --no-calibrate to publish Δ val_bpb only")
        _logger.info("calibrating %s on %s (about %.0f minutes)", spec.name, hardware_class, minutes)
        calibration.calibrate(spec, keys=keys, progress=calibration.log_runs)
    env = calibration.load_cached_envelope(spec, hardware_class)
    if env is not None:
        outbox.enqueue("calibration", env)


def join(opts: JoinOptions, run_loop: RunLoop) -> LoopStats:
    """``autoresearch join``: key, registration, track check, calibration, then
    ``run_loop(workspace, track, hooks)`` (the CLI's loop with its display) with :class:`HubHooks`.
    Afterwards the outbox gets a last delivery attempt. Returns the loop's counters.

    Raises:
        RecordRejected: the hub refused this key (revoked; private hub without a valid token).
        UsageError, WorkspaceError: bad options or workspace.
    """
    from .commands.keys import load_or_create_keys

    keys = load_or_create_keys()
    ws = _workspace_for(opts)
    spec = _spec(ws.config.track)
    hw = local_hardware_class(spec)
    outbox = Outbox.for_workspace(ws.root)
    # the loop waits for this client's answers (context, claims): a short total deadline; the sender
    # works in the background and gets the default one
    hub = HubClient(opts.hub_url, token=opts.token, deadline_seconds=config.hub_deadline_seconds(HOOKS_DEADLINE_SECONDS))
    sender_hub = HubClient(opts.hub_url, token=opts.token)
    try:
        down: HubError | None = None
        try:
            check_track(hub, spec)
        except (HubUnavailable, BadHubResponse) as exc:
            down = exc
            _logger.warning(
                "hub unavailable, carrying on solo (records wait in the outbox; the track is checked at the next join): %s", exc
            )
        registered = register_key(hub, outbox, keys, opts.display_name, hw, offline=down is not None)
        fed = FederationConfig(
            hub_url=opts.hub_url,
            track=spec.id,
            key_id=keys.key_id,
            display_name=opts.display_name,
            joined_at=utc_now(),
        )
        save_federation(ws.root, fed)
        if opts.calibrate:
            ensure_calibration(spec, hw, keys, outbox, yes=opts.yes)
        else:
            _logger.info("calibration skipped: records carry Δ val_bpb only (no z, no ECM)")
        sender = OutboxSender(outbox, sender_hub).start()
        hooks = HubHooks(
            hub=hub,
            outbox=outbox,
            sender=sender,
            keys=keys,
            track=spec.id,
            time_budget=spec.time_budget,
            hardware_class=hw,
            trust_community_best=opts.yes,
            source_lookup=lambda sha: _workspace_source(ws, sha),
        )
        if not registered:
            hooks.mark_down(down or HubUnavailable("registration failed"), logged=True)
        _logger.info(
            "joined %s as %s (key %s…)%s", opts.hub_url, opts.display_name, keys.key_id[:16], "" if registered else " [solo until the hub is back]"
        )
        try:
            stats = run_loop(ws, spec, hooks)
        finally:
            report = sender.stop(flush=True)
            if report is not None and (report.pending or report.rejected):
                _logger.warning(
                    "%d record(s) still wait in the outbox, %d rejected; `autoresearch outbox` lists them",
                    report.pending,
                    len(report.rejected),
                )
            if report is not None and report.future:
                _warn_future(report, sender_hub.clock_skew_seconds)
        revoked = [i for i in outbox.items(("rejected",)) if i.reason == "key_revoked"]
        if revoked:
            raise RecordRejected(
                f"the hub revoked key {keys.key_id[:16]}…; {len(revoked)} record(s) were refused",
                status=403,
                reason="key_revoked",
                hint="they stay in this workspace: `autoresearch outbox` lists them",
            )
        return stats
    finally:
        hub.close()
        sender_hub.close()


def _warn_future(report: SendReport, skew: float | None) -> None:
    """Say that records wait because this machine's clock runs ahead of the hub's, and until when."""
    ahead = f" (this machine's clock is {format_duration(skew)} ahead of the hub's)" if skew and skew > 0 else ""
    when = f" after {report.future_until:%Y-%m-%d %H:%M:%S} UTC (this machine's clock)" if report.future_until else ""
    _logger.warning(
        "%d record(s) are dated in the hub's future%s and wait in the outbox; they go out with the next "
        "`autoresearch join` or `autoresearch outbox --send`%s; fix: sync the clock (e.g. `timedatectl set-ntp true`)",
        report.future,
        ahead,
        when,
    )


def _workspace_source(ws: Workspace, sha: str) -> str | None:
    """A ``train.py`` of the workspace's recent experiments (parents and children) by sha256."""
    for exp in reversed(ws.experiments()[-20:]):
        for commit in (exp.parent_commit, exp.commit):
            if commit:
                source = ws.source_at(commit)
                if sha256_hex(source) == sha:
                    return source
    return None
