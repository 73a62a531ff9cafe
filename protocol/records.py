"""Wire models: every record that is signed, stored or served.

All models are frozen, forbid unknown fields and validate strictly (no silent coercion from strings).
Numbers obey RFC 8785: NaN and infinities are rejected and integers stay within ±(2**53 − 1). Every
timestamp is timezone-aware UTC. Units live in field names (``*_seconds``, ``*_mib``, ``*_percent``)
or in the field's description.

Signed records carry a literal ``schema`` tag (``autoresearch/experiment/v1``, …); the JSON key is
``schema`` (the Python attribute is ``schema_`` because pydantic reserves the name).
"""

from __future__ import annotations

import math
import sys
from datetime import UTC, datetime
from typing import Annotated, Final, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)
from pydantic_core import PydanticCustomError

from .canonical import canonical_json, sha256_hex

# --------------------------------------------------------------------------------------------------
# Field types

MAX_SAFE_INT = 2**53 - 1
MAX_DIFF_BYTES = 256 * 1024  # unified diff of one experiment, UTF-8 bytes
MAX_SOURCE_BYTES = 512 * 1024  # one train.py, UTF-8 bytes

SafeInt = Annotated[int, Field(ge=-MAX_SAFE_INT, le=MAX_SAFE_INT)]
Count = Annotated[int, Field(ge=0, le=MAX_SAFE_INT)]
Sha256Hex = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
ShortText = Annotated[str, StringConstraints(max_length=200)]
Description = Annotated[str, StringConstraints(max_length=500)]
TrackId = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_.@-]{0,63}$")]
NonNegFloat = Annotated[float, Field(ge=0.0, allow_inf_nan=False)]
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
PositiveFloat = Annotated[float, Field(gt=0.0, allow_inf_nan=False)]

# --------------------------------------------------------------------------------------------------
# Valid ranges of the numbers in signed records (docs/protocol.md, "Valid ranges"). Every number a
# record carries is finite, never subnormal, and within these plausible magnitudes, so sums and
# squares over any number of records stay finite. The hub adds per-track bounds on top
# (hub/limits.py: val_bpb against the vocabulary, seconds against the track's TIME_BUDGET, tokens).

MIN_VAL_BPB = 1e-3  # bits per byte; no model of real text gets near it (an eval leak would)
MAX_VAL_BPB = 1e3  # bits per byte; a uniform guess over 2**16 tokens of 1 byte is 16
MAX_RUN_SECONDS = 7 * 86_400.0  # any duration a record reports, s (a run is minutes)
MAX_VRAM_MIB = float(2**24)  # 16 TiB, far above any device
MAX_MFU_PERCENT = 1000.0  # % of an *estimated* peak: above 100 only when the peak guess is low
MAX_TOKENS = 10**15  # tokens one run trains on
MAX_TOKENS_PER_SECOND = 1e10
MAX_STEPS = 10**12
MAX_PARAMS = 10**13
MAX_DEPTH = 10**4  # transformer layers
MAX_ABS_Z = 1e6  # improvement in units of seed noise; beyond it the noise estimate is broken
MIN_ECM, MAX_ECM = 1e-6, 1e6  # effective compute multiplier t*/TIME_BUDGET
MIN_GAIN, MAX_GAIN = MIN_ECM / MAX_ECM, MAX_ECM / MIN_ECM  # gain = ecm / ecm_parent
MAX_CURVE_A, MAX_CURVE_B = 1e12, 100.0  # bpb(t) = c + a·t^(−b)
MAX_TFLOPS = 1e6  # measured dense matmul throughput, TFLOP/s
MAX_LEASE_SECONDS = 86_400


RANGE_ERRORS = frozenset({"greater_than", "greater_than_equal", "less_than", "less_than_equal", "float_subnormal"})
"""pydantic error types that mean "a number outside its valid range" (reason ``out_of_range``)."""


def _not_subnormal(value: float) -> float:
    if value != 0.0 and abs(value) < sys.float_info.min:
        raise PydanticCustomError(
            "float_subnormal", "{value} is subnormal (0 < |x| < {min}); send 0 or a normal number",
            {"value": repr(value), "min": repr(sys.float_info.min)},
        )
    return value


_NORMAL = AfterValidator(_not_subnormal)

Bpb = Annotated[float, Field(ge=MIN_VAL_BPB, le=MAX_VAL_BPB, allow_inf_nan=False), _NORMAL]
"""val_bpb, bits per byte."""
DeltaBpb = Annotated[float, Field(ge=-MAX_VAL_BPB, le=MAX_VAL_BPB, allow_inf_nan=False), _NORMAL]
NoiseBpb = Annotated[float, Field(ge=0.0, le=MAX_VAL_BPB, allow_inf_nan=False), _NORMAL]
"""A spread of val_bpb (σ, rmse), bits per byte."""
Seconds = Annotated[float, Field(ge=0.0, le=MAX_RUN_SECONDS, allow_inf_nan=False), _NORMAL]
Budget = Annotated[float, Field(gt=0.0, le=MAX_RUN_SECONDS, allow_inf_nan=False), _NORMAL]
Mib = Annotated[float, Field(ge=0.0, le=MAX_VRAM_MIB, allow_inf_nan=False), _NORMAL]
Percent = Annotated[float, Field(ge=0.0, le=MAX_MFU_PERCENT, allow_inf_nan=False), _NORMAL]
TokenRate = Annotated[float, Field(ge=0.0, le=MAX_TOKENS_PER_SECOND, allow_inf_nan=False), _NORMAL]
ZScore = Annotated[float, Field(ge=-MAX_ABS_Z, le=MAX_ABS_Z, allow_inf_nan=False), _NORMAL]
Ecm = Annotated[float, Field(ge=MIN_ECM, le=MAX_ECM, allow_inf_nan=False), _NORMAL]
Gain = Annotated[float, Field(ge=MIN_GAIN, le=MAX_GAIN, allow_inf_nan=False), _NORMAL]
CurveA = Annotated[float, Field(gt=0.0, le=MAX_CURVE_A, allow_inf_nan=False), _NORMAL]
CurveB = Annotated[float, Field(gt=0.0, le=MAX_CURVE_B, allow_inf_nan=False), _NORMAL]
Tflops = Annotated[float, Field(ge=0.0, le=MAX_TFLOPS, allow_inf_nan=False), _NORMAL]
Tokens = Annotated[int, Field(ge=0, le=MAX_TOKENS)]
Steps = Annotated[int, Field(ge=0, le=MAX_STEPS)]
Params = Annotated[int, Field(ge=0, le=MAX_PARAMS)]
Layers = Annotated[int, Field(ge=0, le=MAX_DEPTH)]


def _check_diff_size(diff: str) -> str:
    if len(diff.encode("utf-8")) > MAX_DIFF_BYTES:
        raise ValueError(f"diff is larger than {MAX_DIFF_BYTES} bytes")
    return diff


def _check_utc(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("timestamp must be timezone-aware UTC")
    if value.utcoffset().total_seconds() != 0:  # type: ignore[union-attr]
        raise ValueError("timestamp must be in UTC (offset +00:00 / Z)")
    return value.astimezone(UTC)


UnifiedDiff = Annotated[str, AfterValidator(_check_diff_size)]
UtcDatetime = Annotated[datetime, AfterValidator(_check_utc)]

Outcome = Literal["ok", "crash", "nan", "oom", "timeout", "over_budget", "eval_crash", "rejected"]
"""Harness outcome of one run (DESIGN.md, "The harness contract"); ``rejected``: a failed evaluation probe."""
OUTCOMES: tuple[str, ...] = ("ok", "crash", "nan", "oom", "timeout", "over_budget", "eval_crash", "rejected")
Isolation = Literal["sandbox", "process", "none"]
"""How ``train.py`` was confined: an OS ``sandbox``, a separate ``process`` only (code the user wrote
or approved, on a machine without a sandbox), or ``none`` (imported history, e.g. upstream's
``results.tsv``)."""
Status = Literal["keep", "discard", "crash"]
"""The loop's decision, as in upstream's ``results.tsv``; ``crash`` for any outcome but ``ok``."""
SuggestionKind = Literal["exploit", "explore", "combine", "replicate", "avoid"]

EXPERIMENT_SCHEMA: Final = "autoresearch/experiment/v1"
CALIBRATION_SCHEMA: Final = "autoresearch/calibration/v1"
CLAIM_SCHEMA: Final = "autoresearch/claim/v1"
CLIENT_SCHEMA: Final = "autoresearch/client/v1"


def utc_now() -> datetime:
    """Current time, UTC, truncated to whole milliseconds (stable through JSON round trips)."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


class WireModel(BaseModel):
    """Base of every wire model: frozen, strict, no unknown fields, no NaN/inf."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, strict=True, allow_inf_nan=False, populate_by_name=True
    )


# --------------------------------------------------------------------------------------------------
# Pieces shared by several records


class SoftwareVersions(WireModel):
    """Versions that can change a result: Python, torch, CUDA runtime and NVIDIA driver (None on CPU)."""

    python: ShortText
    torch: ShortText | None = None
    cuda: ShortText | None = None
    driver: ShortText | None = None


class RunMetrics(WireModel):
    """Metrics the harness measured for one run. All None-able: a crash has few of them.

    ``val_bpb`` is validation bits per byte (lower is better), computed by the harness, never parsed
    from what ``train.py`` printed.
    """

    val_bpb: Bpb | None = Field(default=None, description="bits per byte on the val split")
    training_seconds: Seconds | None = Field(
        default=None, description="training time on the track's budget clock (CPU s on cpu/tiny, wall s on GPU), s"
    )
    training_wall_seconds: Seconds | None = Field(default=None, description="wall time of the training phase, s")
    total_seconds: Seconds | None = Field(default=None, description="wall time of the whole run, s")
    startup_seconds: Seconds | None = Field(default=None, description="import, data and compile time, s")
    eval_seconds: Seconds | None = Field(default=None, description="evaluation time, s")
    peak_vram_mib: Mib | None = Field(default=None, description="peak CUDA memory, MiB (0 on CPU)")
    mfu_percent: Percent | None = Field(default=None, description="model FLOPs utilisation, % of peak bf16")
    total_tokens: Tokens | None = Field(default=None, description="training tokens processed")
    tokens_per_second: TokenRate | None = Field(default=None, description="training tokens per second")
    num_steps: Steps | None = None
    num_params: Params | None = None
    depth: Layers | None = None


MAX_LOSS_POINTS = 128
MAX_TRAIN_LOSS = 1e3  # nats per token; an untrained model over 2**16 tokens is about 11


class LossPoint(WireModel):
    """One point of a run's training-loss curve: optimizer ``step``, ``seconds`` on the budget clock
    and the ``loss`` train.py reported (nats per token; the model's own figure, for display only —
    the metric is val_bpb, which the harness measures)."""

    step: Steps
    seconds: Seconds
    loss: Annotated[float, Field(ge=0.0, le=MAX_TRAIN_LOSS, allow_inf_nan=False), _NORMAL]


class Normalised(WireModel):
    """An experiment's result made comparable (DESIGN.md, "Calibration").

    ``delta_val_bpb`` = child − parent val_bpb on the same machine (negative is better);
    ``z`` = (parent − child) / σ, the improvement in units of the calibration's seed noise (positive is
    better); ``ecm`` = t*/TIME_BUDGET where the fitted reference curve reaches the child's val_bpb;
    ``gain`` = ecm / ecm_parent. ``ecm_extrapolated`` is true when t* lies outside the fitted budgets.
    """

    delta_val_bpb: DeltaBpb | None = None
    sigma: NoiseBpb | None = None
    z: ZScore | None = None
    ecm: Ecm | None = None
    ecm_parent: Ecm | None = None
    gain: Gain | None = None
    ecm_extrapolated: bool = False


# --------------------------------------------------------------------------------------------------
# Signed records


class ExperimentRecord(WireModel):
    """One experiment: parent ``train.py`` → child ``train.py``, run once under a track.

    The child source is not inside the record: it is the diff applied to the parent and is stored
    content-addressed by ``child_sha256``. Hashes are hex SHA-256 of the UTF-8 source
    (``*_sha256``) and of its canonical form (``*_canonical_sha256``, see
    :func:`autoresearch.protocol.canonical_source`).
    """

    schema_: Literal["autoresearch/experiment/v1"] = Field(default=EXPERIMENT_SCHEMA, alias="schema")
    track: TrackId
    parent_sha256: Sha256Hex
    child_sha256: Sha256Hex
    parent_canonical_sha256: Sha256Hex
    child_canonical_sha256: Sha256Hex
    diff: UnifiedDiff = Field(description="unified diff parent → child, a/train.py b/train.py")
    description: Description
    outcome: Outcome
    status: Status
    metrics: RunMetrics
    parent_val_bpb: Bpb | None = Field(default=None, description="parent measured on this machine")
    normalised: Normalised = Field(default_factory=Normalised)
    hardware_class: ShortText
    software: SoftwareVersions
    harness_version: ShortText
    calibration_id: Sha256Hex | None = None
    isolation: Isolation = Field(default="none", description="how train.py was confined when it ran")
    loss_curve: Annotated[list[LossPoint], Field(max_length=MAX_LOSS_POINTS)] = Field(
        default_factory=list, description="training loss, at most 128 points spread over the run"
    )
    seed: SafeInt = 0
    error: Annotated[str, StringConstraints(max_length=4096)] | None = Field(
        default=None, description="traceback tail or reason for a non-ok outcome"
    )
    created_at: UtcDatetime

    @model_validator(mode="after")
    def _outcome_consistency(self) -> ExperimentRecord:
        if self.outcome == "ok" and self.metrics.val_bpb is None:
            raise ValueError("outcome 'ok' needs metrics.val_bpb")
        if self.outcome != "ok" and self.metrics.val_bpb is not None and self.outcome != "over_budget":
            raise ValueError(f"outcome {self.outcome!r} must have metrics.val_bpb null (never 0.0)")
        if self.outcome != "ok" and self.status != "crash":
            raise ValueError(f"outcome {self.outcome!r} must have status 'crash'")
        if self.outcome == "ok" and self.status == "crash":
            raise ValueError("outcome 'ok' cannot have status 'crash'")
        return self


class CalibrationPoint(WireModel):
    """One reference run of a calibration: budget (s), seed and what it reached."""

    budget_seconds: Budget
    seed: SafeInt
    val_bpb: Bpb
    training_seconds: Seconds
    num_steps: Steps
    tokens_per_second: TokenRate


class CurveFit(WireModel):
    """Fitted reference curve ``bpb(t) = c + a·t^(−b)``, t in seconds, bpb in bits per byte."""

    a: CurveA
    b: CurveB
    c: DeltaBpb
    rmse: NoiseBpb = Field(description="root mean square residual of the fit, bits per byte")


class CalibrationRecord(WireModel):
    """The reference benchmark of one (hardware class, track, harness version).

    ``reference_sha256`` names the ``train.py`` that was calibrated (the track's reference, or a later
    community best); ``reference_ecm`` is that reference's own ECM against the track's reference
    (1.0 for the track reference), so multipliers chain along the lineage.
    """

    schema_: Literal["autoresearch/calibration/v1"] = Field(default=CALIBRATION_SCHEMA, alias="schema")
    track: TrackId
    hardware_class: ShortText
    harness_version: ShortText
    software: SoftwareVersions
    reference_sha256: Sha256Hex
    reference_ecm: Ecm = 1.0
    time_budget_seconds: Budget
    points: Annotated[list[CalibrationPoint], Field(min_length=3, max_length=256)]
    fit: CurveFit
    sigma: NoiseBpb = Field(description="seed noise: std of val_bpb across seeds at the full budget")
    min_budget_seconds: Budget
    max_budget_seconds: Budget
    tokens_per_second: TokenRate = Field(description="reference training throughput at full budget")
    matmul_tflops: Tflops = Field(description="measured dense matmul throughput, TFLOP/s")
    created_at: UtcDatetime


class ClaimRecord(WireModel):
    """A client's claim on running (parent, child) under a track, for ``lease_seconds``."""

    schema_: Literal["autoresearch/claim/v1"] = Field(default=CLAIM_SCHEMA, alias="schema")
    track: TrackId
    parent_canonical_sha256: Sha256Hex
    child_canonical_sha256: Sha256Hex
    lease_seconds: Annotated[int, Field(ge=1, le=MAX_LEASE_SECONDS)]
    description: Description = ""
    created_at: UtcDatetime


class ClientRegistration(WireModel):
    """A client announcing its Ed25519 public key (hex of the raw 32 bytes) to a hub.

    Signed with the key it announces, which proves possession.
    """

    schema_: Literal["autoresearch/client/v1"] = Field(default=CLIENT_SCHEMA, alias="schema")
    public_key: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
    display_name: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    hardware_class: ShortText | None = None
    created_at: UtcDatetime


SignedRecord = ExperimentRecord | CalibrationRecord | ClaimRecord | ClientRegistration
RECORD_TYPES: dict[str, type[WireModel]] = {
    EXPERIMENT_SCHEMA: ExperimentRecord,
    CALIBRATION_SCHEMA: CalibrationRecord,
    CLAIM_SCHEMA: ClaimRecord,
    CLIENT_SCHEMA: ClientRegistration,
}


# --------------------------------------------------------------------------------------------------
# Served (unsigned) models


class Suggestion(WireModel):
    """What the hub tells an agent to try next (DESIGN.md, "Suggestions").

    ``direction`` is a direction key such as ``MATRIX_LR ↑`` or ``MLP.forward``; ``evidence`` lists
    experiment record ids; ``train_py`` is set for ``combine`` (the merged file, ready to run) and
    ``replicate`` (the file to re-run); ``parent_sha256`` names the parent it applies to.
    """

    kind: SuggestionKind
    direction: Annotated[str, StringConstraints(max_length=200)]
    rationale: Annotated[str, StringConstraints(max_length=500)]
    score: FiniteFloat = 0.0
    evidence: Annotated[list[Sha256Hex], Field(max_length=50)] = Field(default_factory=list)
    experiment_id: Sha256Hex | None = None
    parent_sha256: Sha256Hex | None = None
    train_py: Annotated[str, StringConstraints(max_length=MAX_SOURCE_BYTES)] | None = None


class TrackSpec(WireModel):
    """A frozen evaluation setting. Results compare only within one track id.

    ``id`` is ``<name>-<first 12 hex of SHA-256 of the canonical JSON of every other field>``; build
    specs with :meth:`TrackSpec.build` so the id always matches the content.
    """

    id: TrackId
    name: Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_.@-]{0,40}$")]
    description: Description
    dataset: ShortText
    split: ShortText
    data_sha256: Sha256Hex | None = Field(description="checksum of the prepared data (val split)")
    tokenizer: ShortText
    vocab_size: Count
    max_seq_len: Count
    eval_tokens: Count
    time_budget: PositiveFloat = Field(description="training budget, seconds")
    harness_version: ShortText
    reference_sha256: Sha256Hex
    device: Literal["cuda", "cpu", "any"]

    @classmethod
    def build(cls, **fields: object) -> TrackSpec:
        """Make a spec from every field but ``id``, computing the id from the content."""
        fields.pop("id", None)
        return cls.model_validate({"id": cls.content_id(fields), **fields}, strict=False)

    @staticmethod
    def content_id(fields: dict[str, object]) -> str:
        """``<name>-<12 hex>`` over the canonical JSON of the fields other than ``id``."""
        body = {k: v for k, v in fields.items() if k != "id"}
        return f"{body['name']}-{sha256_hex(canonical_json(body))[:12]}"

    @model_validator(mode="after")
    def _id_matches_content(self) -> TrackSpec:
        expected = self.content_id(self.model_dump(mode="json"))
        if self.id != expected:
            raise ValueError(f"track id {self.id!r} does not match its content (expected {expected!r})")
        return self


def finite_or_none(value: float | None) -> float | None:
    """``value`` if it is a finite float, else None (for metrics that may come back as NaN)."""
    if value is None or not math.isfinite(value):
        return None
    return value
