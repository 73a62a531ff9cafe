"""Record models: round trips, and every validation rule (val_bpb, NaN/inf, ±2**53, UTC, sizes, strictness)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from protocol_factories import (
    FIXED_TIME,
    TRACK,
    all_records,
    calibration,
    claim,
    crashed_experiment,
    experiment,
    vector_keys,
)
from pydantic import BaseModel, ValidationError

from autoresearch.protocol import (
    MAX_DIFF_BYTES,
    MAX_TOKENS,
    OUTCOMES,
    RECORD_TYPES,
    Accepted,
    CalibrationRecord,
    CalibrationView,
    ClaimAnswer,
    ClaimRecord,
    ClientView,
    CommunityBest,
    CurveFit,
    DirectionStats,
    ErrorBody,
    ErrorDetail,
    ExperimentDetail,
    ExperimentRecord,
    ExperimentView,
    Leaderboard,
    LeaderboardEntry,
    Normalised,
    Page,
    Progress,
    ProgressPoint,
    Replications,
    RunMetrics,
    SchemaError,
    Suggestion,
    SuggestionList,
    TrackSpec,
    TrackView,
    canonical_bytes,
    parse_record,
    sha256_hex,
    utc_now,
)

RECORDS = all_records(vector_keys())


@pytest.mark.parametrize("name", sorted(RECORDS))
def test_record_round_trips_through_canonical_bytes(name: str) -> None:
    record = RECORDS[name]
    body = canonical_bytes(record)  # type: ignore[arg-type]
    again = parse_record(body)
    assert again == record
    assert type(again) is type(record)
    assert canonical_bytes(again) == body


def test_every_schema_has_a_record_type() -> None:
    schemas = {r.model_dump(by_alias=True)["schema"] for r in RECORDS.values()}  # type: ignore[attr-defined]
    assert schemas == set(RECORD_TYPES)


# ---------------------------------------------------------------------------------------------- val_bpb


def test_crash_has_null_val_bpb() -> None:
    record = crashed_experiment()
    assert record.metrics.val_bpb is None
    assert b'"val_bpb":null' in canonical_bytes(record)


@pytest.mark.parametrize("outcome", [o for o in OUTCOMES if o not in ("ok", "over_budget")])
def test_failed_outcomes_refuse_a_val_bpb(outcome: str) -> None:
    with pytest.raises(ValidationError, match="must have metrics.val_bpb null"):
        experiment(outcome=outcome, status="crash")


@pytest.mark.parametrize("value", [0.0, -0.0, -1.5, 5e-324, 1e-4])
def test_val_bpb_must_be_positive(value: float) -> None:
    """Never the 0.0 upstream's results.tsv writes for a crash, nor a subnormal or a leak-sized one."""
    with pytest.raises(ValidationError, match="greater than or equal to 0.001"):
        RunMetrics(val_bpb=value)
    with pytest.raises(ValidationError, match="greater than or equal to 0.001"):
        experiment(parent_val_bpb=value)


def test_ok_needs_val_bpb() -> None:
    with pytest.raises(ValidationError, match="needs metrics.val_bpb"):
        experiment(metrics=RunMetrics(training_seconds=1.0))


def test_status_follows_outcome() -> None:
    with pytest.raises(ValidationError, match="must have status 'crash'"):
        experiment(outcome="oom", status="discard", metrics=RunMetrics())
    with pytest.raises(ValidationError, match="cannot have status 'crash'"):
        experiment(status="crash")
    assert experiment(status="discard").status == "discard"
    assert experiment(outcome="over_budget", status="crash").metrics.val_bpb == 1.8765


# ----------------------------------------------------------------------------------------- NaN / inf


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize(
    "build",
    [
        lambda v: RunMetrics(val_bpb=v),
        lambda v: RunMetrics(training_seconds=v),
        lambda v: Normalised(z=v),
        lambda v: CurveFit(a=1.0, b=0.5, c=v, rmse=0.0),
        lambda v: CalibrationRecord.model_validate({**calibration().model_dump(by_alias=True), "sigma": v}),
        lambda v: Suggestion(kind="explore", direction="DEPTH ↑", rationale="r", score=v),
    ],
    ids=["val_bpb", "training_seconds", "normalised.z", "fit.c", "calibration.sigma", "suggestion.score"],
)
def test_nan_and_infinities_are_rejected(build: object, bad: float) -> None:
    with pytest.raises(ValidationError, match="finite number"):
        build(bad)  # type: ignore[operator]


def test_nan_in_record_json_is_rejected() -> None:
    body = canonical_bytes(experiment()).replace(b'"val_bpb":1.8765', b'"val_bpb":NaN')
    with pytest.raises(SchemaError, match="metrics.val_bpb"):
        parse_record(body)


# --------------------------------------------------------------------------------------------- ints


@pytest.mark.parametrize("value", [2**53, -(2**53), 2**63])
def test_integers_beyond_2_53_are_rejected(value: int) -> None:
    with pytest.raises(ValidationError):
        experiment(seed=value)
    with pytest.raises(ValidationError):
        RunMetrics(total_tokens=value)


def test_largest_safe_integer_is_accepted() -> None:
    assert experiment(seed=2**53 - 1).seed == 2**53 - 1
    assert RunMetrics(total_tokens=MAX_TOKENS).total_tokens == MAX_TOKENS
    with pytest.raises(ValidationError, match="less than or equal to"):
        RunMetrics(total_tokens=MAX_TOKENS + 1)  # the documented range, not only RFC 8785's


def test_counts_are_non_negative() -> None:
    with pytest.raises(ValidationError):
        RunMetrics(num_steps=-1)


# ---------------------------------------------------------------------------------------- timestamps


def test_naive_timestamp_is_rejected() -> None:
    with pytest.raises(ValidationError, match="timezone-aware UTC"):
        experiment(created_at=datetime(2026, 3, 14, 15, 9, 26))


@pytest.mark.parametrize("tz", [timezone(timedelta(hours=2)), timezone(timedelta(hours=-5)), ZoneInfo("Europe/Paris")])
def test_non_utc_timestamp_is_rejected(tz: object) -> None:
    with pytest.raises(ValidationError, match="in UTC"):
        ClaimRecord.model_validate({**claim().model_dump(by_alias=True), "created_at": datetime(2026, 3, 14, 15, 9, tzinfo=tz)})


@pytest.mark.parametrize("tz", [UTC, timezone.utc, ZoneInfo("UTC"), timezone(timedelta(0))])  # noqa: UP017
def test_any_utc_spelling_is_accepted_and_serialised_as_z(tz: object) -> None:
    record = experiment(created_at=FIXED_TIME.replace(tzinfo=tz))  # type: ignore[arg-type]
    assert b'"created_at":"2026-03-14T15:09:26.535000Z"' in canonical_bytes(record)
    assert record == experiment()


def test_utc_now_is_utc_and_millisecond_precise() -> None:
    now = utc_now()
    assert now.utcoffset() == timedelta(0)
    assert now.microsecond % 1000 == 0


# ------------------------------------------------------------------------------------ size / strings


def test_diff_size_bound_counts_utf8_bytes() -> None:
    assert len(experiment(diff="x" * MAX_DIFF_BYTES).diff) == MAX_DIFF_BYTES
    with pytest.raises(ValidationError, match="diff is larger than"):
        experiment(diff="x" * (MAX_DIFF_BYTES + 1))
    with pytest.raises(ValidationError, match="diff is larger than"):
        experiment(diff="é" * (MAX_DIFF_BYTES // 2 + 1))  # 2 bytes each in UTF-8


def test_strings_are_bounded() -> None:
    with pytest.raises(ValidationError, match="at most 500"):
        experiment(description="x" * 501)
    with pytest.raises(ValidationError, match="at most 4096"):
        ExperimentRecord.model_validate({**crashed_experiment().model_dump(by_alias=True), "error": "e" * 4097})


@pytest.mark.parametrize("bad", ["A" * 64, "a" * 63, "g" * 64])
def test_hashes_are_lowercase_hex_sha256(bad: str) -> None:
    with pytest.raises(ValidationError, match="pattern"):
        experiment(parent_sha256=bad)


def test_track_id_is_constrained() -> None:
    with pytest.raises(ValidationError):
        experiment(track="Tiny Track")


# ------------------------------------------------------------------------------------------ strictness


def test_records_are_frozen() -> None:
    record = experiment()
    with pytest.raises(ValidationError, match="frozen"):
        record.description = "changed"  # type: ignore[misc]


def test_unknown_fields_are_rejected() -> None:
    with pytest.raises(ValidationError, match="Extra inputs"):
        ClaimRecord.model_validate({**claim().model_dump(by_alias=True), "priority": 1})


def test_no_coercion_from_strings() -> None:
    body = canonical_bytes(experiment()).replace(b'"val_bpb":1.8765', b'"val_bpb":"1.8765"')
    with pytest.raises(SchemaError, match="metrics.val_bpb"):
        parse_record(body)
    with pytest.raises(ValidationError):
        RunMetrics(num_steps="16")  # type: ignore[arg-type]


def test_schema_tag_is_literal() -> None:
    data = {**claim().model_dump(by_alias=True), "schema": "autoresearch/claim/v2"}
    with pytest.raises(ValidationError, match="autoresearch/claim/v1"):
        ClaimRecord.model_validate(data)


def test_parse_record_errors_name_the_problem() -> None:
    with pytest.raises(SchemaError) as info:
        parse_record(b'{"schema": "autoresearch/unknown/v1"}')
    assert info.value.reason == "unknown_schema" and "autoresearch/experiment/v1" in str(info.value)
    with pytest.raises(SchemaError) as info:
        parse_record(b"{not json")
    assert info.value.reason == "malformed_json"
    with pytest.raises(SchemaError, match="lease_seconds"):
        parse_record(canonical_bytes(claim()).replace(b'"lease_seconds":60', b'"lease_seconds":0'))


# -------------------------------------------------------------------------------------- track specs


def _spec_fields() -> dict[str, object]:
    return dict(
        name="tiny",
        description="tests",
        dataset="pydoc",
        split="val",
        data_sha256=sha256_hex("data"),
        tokenizer="bpe-512",
        vocab_size=512,
        max_seq_len=64,
        eval_tokens=4096,
        time_budget=5.0,
        harness_version="1",
        reference_sha256=sha256_hex("ref"),
        device="cpu",
    )


def test_track_id_is_derived_from_content() -> None:
    spec = TrackSpec.build(**_spec_fields())
    assert spec.id.startswith("tiny-") and len(spec.id) == len("tiny-") + 12
    assert TrackSpec.build(**{**_spec_fields(), "time_budget": 6.0}).id != spec.id
    assert TrackSpec.model_validate_json(spec.model_dump_json()) == spec
    with pytest.raises(ValidationError, match="does not match its content"):
        TrackSpec.model_validate({**spec.model_dump(), "eval_tokens": 8192})


# ------------------------------------------------------------------------------------- served models


def _served_models() -> list[BaseModel]:
    view = ExperimentView(
        id=sha256_hex("e"),
        key_id=vector_keys().key_id,
        client_name="alice",
        received_at=FIXED_TIME,
        record=experiment(),
        directions=["MATRIX_LR ↑"],
        replications=Replications(n=1, val_bpb_mean=1.8765, hardware_classes=["cpu:x:2"], experiment_ids=[sha256_hex("e")]),
    )
    entry = LeaderboardEntry(
        rank=1, experiment_id=view.id, key_id=view.key_id, client_name="alice", hardware_class="cpu:x:2",
        val_bpb=1.8765, ecm=1.31, description="MATRIX_LR 0.04 → 0.05", created_at=FIXED_TIME,
    )
    suggestion = Suggestion(kind="combine", direction="MATRIX_LR ↑", rationale="two disjoint keeps", score=1.5,
                            evidence=[view.id], parent_sha256=sha256_hex("p"), train_py="X = 1\n")
    return [
        view,
        ExperimentDetail(**view.model_dump(), parent_source="X = 1\n", child_source="X = 2\n", lineage=[view.id]),
        Page[ExperimentView](items=[view], next_cursor="abc"),
        ClaimAnswer(status="done", track=TRACK, parent_canonical_sha256=sha256_hex("p"),
                    child_canonical_sha256=sha256_hex("c"), experiment=view),
        ClaimAnswer(status="held", track=TRACK, parent_canonical_sha256=sha256_hex("p"),
                    child_canonical_sha256=sha256_hex("c"), lease_expires_at=FIXED_TIME, holder_key_id=view.key_id),
        Leaderboard(track=TRACK, by_hardware_class={"cpu:x:2": [entry]}, ecm=[entry]),
        CommunityBest(track=TRACK, experiment=view, train_py="X = 2\n", sha256=sha256_hex("X = 2\n"), val_bpb=1.8765),
        DirectionStats(direction="MATRIX_LR ↑", tries=3, keeps=2, crashes=0, mean_gain=1.2, std_gain=0.1),
        SuggestionList(track=TRACK, items=[suggestion]),
        TrackView(spec=TrackSpec.build(**_spec_fields()), experiments=3, clients=2, best_val_bpb=1.8),
        ClientView(key_id=view.key_id, public_key=vector_keys().public_key_hex, display_name="alice",
                   status="active", registered_at=FIXED_TIME),
        CalibrationView(id=sha256_hex("c"), key_id=view.key_id, received_at=FIXED_TIME, record=calibration()),
        Progress(track=TRACK, hardware_class="cpu:x:2", truncated=True, points=[
            ProgressPoint(id=view.id, created_at=FIXED_TIME, status="keep", outcome="ok", val_bpb=1.8765, description="d"),
            ProgressPoint(id=view.id, created_at=FIXED_TIME, status="crash", outcome="oom", description="d"),
        ]),
        Accepted(id=view.id, created=True, kind="experiment"),
        ErrorBody(error=ErrorDetail(code="bad_signature", message="no valid signature", status=400)),
    ]


@pytest.mark.parametrize("model", _served_models(), ids=lambda m: type(m).__name__)
def test_served_model_round_trips_through_json(model: BaseModel) -> None:
    again = type(model).model_validate_json(model.model_dump_json(by_alias=True))
    assert again == model
