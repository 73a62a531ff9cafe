"""Served (unsigned) models of the hub's JSON API, shared by the hub (which returns them) and the client
(which parses them). Paths are pinned in DESIGN.md; these are their bodies.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from .best import Assessment, Candidate, Verdict
from .records import (
    CalibrationRecord,
    ExperimentRecord,
    FiniteFloat,
    NonNegFloat,
    Normalised,
    Outcome,
    PositiveFloat,
    Sha256Hex,
    Status,
    Suggestion,
    TrackSpec,
)

T = TypeVar("T")


class ApiModel(BaseModel):
    """Base of served models: frozen, no unknown fields."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class ErrorDetail(ApiModel):
    """``code`` is a stable machine-readable reason (``bad_signature``, ``unknown_track``, …)."""

    code: str
    message: str
    status: int


class ErrorBody(ApiModel):
    """The one JSON error shape of every 4xx/5xx: ``{"error": {"code", "message", "status"}}``."""

    error: ErrorDetail


class Page(ApiModel, Generic[T]):
    """A page of a listing; pass ``next_cursor`` back as ``cursor`` for the next one (None: last page)."""

    items: list[T]
    next_cursor: str | None = None


class Replications(ApiModel):
    """All runs of the same experiment (same parent and child canonical hashes) across clients."""

    n: int
    val_bpb_mean: PositiveFloat | None = None
    val_bpb_std: NonNegFloat | None = None
    hardware_classes: list[str] = Field(default_factory=list)
    experiment_ids: list[Sha256Hex] = Field(default_factory=list)


class ExperimentView(ApiModel):
    """One stored experiment: the signed record plus what the hub derived from it.

    ``normalised`` holds the hub's own figures (z, ECM and gain from the signer's calibration the hub
    verified, ``calibration_id``), never the record's claim (``record.normalised``). ``verdict`` and
    ``assessment``: the community-best rule (:mod:`autoresearch.protocol.best`) on this run; None
    for runs that cannot rank (discards, crashes, seed-only or empty changes).
    ``needs_replication`` is ``verdict == "needs_replication"``; ``provisional``: no verified
    calibration (shown, never community best)."""

    id: Sha256Hex
    key_id: Sha256Hex
    client_name: str
    received_at: datetime
    record: ExperimentRecord
    directions: list[str] = Field(default_factory=list)
    replications: Replications
    normalised: Normalised = Field(default_factory=Normalised)
    calibration_id: Sha256Hex | None = None
    verdict: Verdict | None = None
    assessment: Assessment | None = None
    needs_replication: bool = False
    provisional: bool = False
    near_duplicate_of: Sha256Hex | None = None
    revoked: bool = False


class ExperimentDetail(ExperimentView):
    """An experiment with its sources and lineage (``GET /api/v1/experiments/{id}``)."""

    parent_source: str | None = None
    child_source: str | None = None
    lineage: list[Sha256Hex] = Field(default_factory=list, description="ancestor experiment ids, nearest first")
    children: list[Sha256Hex] = Field(default_factory=list)


class ClaimAnswer(ApiModel):
    """Answer to ``POST /api/v1/claims``: ``granted`` (run it), ``done`` (already run: ``experiment``
    holds the result, skip the run) or ``held`` (another client holds the lease until
    ``lease_expires_at``: propose something else)."""

    status: Literal["granted", "done", "held"]
    track: str
    parent_canonical_sha256: Sha256Hex
    child_canonical_sha256: Sha256Hex
    lease_expires_at: datetime | None = None
    holder_key_id: Sha256Hex | None = None
    experiment: ExperimentView | None = None
    near_duplicate_of: Sha256Hex | None = None


class LeaderboardEntry(ApiModel):
    """One row of a leaderboard: a kept experiment and its figures."""

    rank: int
    experiment_id: Sha256Hex
    key_id: Sha256Hex
    client_name: str
    hardware_class: str
    val_bpb: PositiveFloat
    ecm: PositiveFloat | None = None
    gain: PositiveFloat | None = None
    description: str
    created_at: datetime
    z: FiniteFloat | None = Field(default=None, description="the hub's z (from the signer's calibration)")
    verdict: Verdict | None = None
    needs_replication: bool = False
    provisional: bool = False
    community_best: bool = Field(default=False, description="the community best of this board")


class Leaderboard(ApiModel):
    """Raw val_bpb leaderboards per hardware class, and the ECM leaderboard across classes: every
    kept run that may rank, with its verdict; ``community_best`` marks the one the rule picked
    (the same as ``/best``), which need not be rank 1 (a provisional or unconfirmed run can be lower)."""

    track: str
    by_hardware_class: dict[str, list[LeaderboardEntry]]
    ecm: list[LeaderboardEntry]


class CommunityBest(ApiModel):
    """The best kept ``train.py`` of a track (per hardware class when asked, else by ECM)."""

    track: str
    hardware_class: str | None = None
    experiment: ExperimentView | None = Field(default=None, description="None: the track reference")
    train_py: str
    sha256: Sha256Hex
    val_bpb: PositiveFloat | None = None
    ecm: PositiveFloat | None = None
    lineage: list[Sha256Hex] = Field(default_factory=list)
    candidate: Candidate | None = Field(
        default=None, description="the evidence the rule judged (protocol.best.assess re-checks it)"
    )


class DirectionByClass(ApiModel):
    """One hardware class's share of a direction: ``mean_gain`` (ECM ratio, calibrated runs) and
    ``mean_bpb_ratio`` (parent/child val_bpb, every run with both numbers); > 1 is better."""

    tries: int
    keeps: int
    mean_gain: FiniteFloat | None = None
    mean_bpb_ratio: FiniteFloat | None = None


class DirectionStats(ApiModel):
    """Per (track, direction): tries, keeps, crashes and the normalised-gain distribution."""

    direction: str
    tries: int
    keeps: int
    crashes: int
    mean_gain: FiniteFloat | None = Field(
        default=None, description="mean ECM ratio child/parent over calibrated single-direction runs"
    )
    std_gain: NonNegFloat | None = None
    gain_n: int = Field(default=0, description="runs behind mean_gain")
    mean_bpb_ratio: FiniteFloat | None = Field(
        default=None, description="mean parent/child val_bpb (same machine) over single-direction runs"
    )
    std_bpb_ratio: NonNegFloat | None = None
    bpb_ratio_n: int = Field(default=0, description="runs behind mean_bpb_ratio")
    mean_z: FiniteFloat | None = Field(default=None, description="mean of the hub's z (calibrated runs)")
    by_hardware_class: dict[str, DirectionByClass] = Field(default_factory=dict)
    hardware_dependent: bool = False
    evidence: list[Sha256Hex] = Field(default_factory=list)


class SuggestionList(ApiModel):
    track: str
    hardware_class: str | None = None
    items: list[Suggestion]


class TrackView(ApiModel):
    """A track as served: its spec plus counts."""

    spec: TrackSpec
    experiments: int = 0
    clients: int = 0
    best_val_bpb: PositiveFloat | None = None
    best_ecm: PositiveFloat | None = None


class ProgressPoint(ApiModel):
    """One experiment on a track's progress chart: when, how it ended and its val_bpb (bits per byte;
    None for a crash)."""

    id: Sha256Hex
    created_at: datetime
    status: Status
    outcome: Outcome
    val_bpb: PositiveFloat | None = None
    description: str


class Progress(ApiModel):
    """``GET /api/v1/tracks/{track}/progress?hardware_class=&limit=``: the newest ``limit`` experiments
    of one hardware class, oldest first (the data of the track page's progress chart). Without
    ``hardware_class``: the class of the track's newest experiment (None on an empty track).
    ``truncated``: older experiments exist beyond ``limit``."""

    track: str
    hardware_class: str | None
    points: list[ProgressPoint]
    truncated: bool = False


class Activity(ApiModel):
    """``GET /api/v1/activity?hours=``: experiments received in the last ``hours``, from how many
    distinct keys (active clients), and the mean rate in experiments per hour."""

    since: datetime
    hours: PositiveFloat
    experiments: int
    clients: int
    per_hour: NonNegFloat


ClientStatus = Literal["active", "pending", "revoked"]  # a registered key's state on the hub


class ClientView(ApiModel):
    """A registered client key."""

    key_id: Sha256Hex
    public_key: str
    display_name: str
    status: ClientStatus
    hardware_class: str | None = None
    registered_at: datetime
    experiments: int = 0


class CalibrationView(ApiModel):
    id: Sha256Hex
    key_id: Sha256Hex
    received_at: datetime
    record: CalibrationRecord


class Accepted(ApiModel):
    """Answer to a submission: the record id, and whether it was new (201) or already stored (200)."""

    id: Sha256Hex
    created: bool
    kind: Annotated[str, Field(max_length=40)]
