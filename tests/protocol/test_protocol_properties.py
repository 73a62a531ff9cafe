"""Property tests (hypothesis) over generated JSON values and generated records."""

from __future__ import annotations

import json
import random
from datetime import UTC

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from protocol_factories import experiment

from autoresearch.protocol import (
    MAX_ABS_Z,
    MAX_ECM,
    MAX_RUN_SECONDS,
    MAX_TOKENS,
    MAX_TOKENS_PER_SECOND,
    MAX_VAL_BPB,
    MAX_VRAM_MIB,
    MIN_ECM,
    MIN_VAL_BPB,
    OUTCOMES,
    ClaimRecord,
    ClientRegistration,
    ExperimentRecord,
    KeyPair,
    Normalised,
    RunMetrics,
    SchemaError,
    SoftwareVersions,
    canonical_bytes,
    canonical_json,
    parse_record,
    record_id,
    sign,
    verify,
)

# Few examples, no deadline: the CI machine is shared and slow.
PROPS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
KEYS = KeyPair.generate()
SAFE = 2**53 - 1

finite = st.floats(allow_nan=False, allow_infinity=False)
count = st.integers(min_value=0, max_value=SAFE)


def within(lo: float, hi: float) -> st.SearchStrategy[float]:
    """Any float a record may carry in [lo, hi] (docs/protocol.md, "Valid ranges"): no subnormals."""
    return st.floats(min_value=lo, max_value=hi, allow_nan=False, allow_infinity=False, allow_subnormal=False)


bpb = within(MIN_VAL_BPB, MAX_VAL_BPB)
seconds = within(0.0, MAX_RUN_SECONDS)
sha = st.binary(min_size=32, max_size=32).map(bytes.hex)
text = st.text(max_size=60)  # any Unicode but lone surrogates (hypothesis' default)
utc_datetimes = st.datetimes(timezones=st.just(UTC))

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-SAFE, max_value=SAFE) | finite | st.text(max_size=20),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=25,
)


def ijson_loads(body: bytes) -> object:
    """Parse JSON the way RFC 8785 / I-JSON models numbers: every number is an IEEE 754 double.

    An integral double ≥ 2**53 is written without exponent (``12539465286458166``) and a plain
    ``json.loads`` would make it a Python int beyond the safe range, which canonicalisation refuses.
    """
    return json.loads(body, parse_int=lambda s: int(s) if abs(int(s)) <= SAFE else float(s))


@PROPS
@given(json_values)
def test_canonical_json_is_stable_under_reparse(value: object) -> None:
    body = canonical_json(value)
    assert ijson_loads(body) == value
    assert canonical_json(ijson_loads(body)) == body


def test_integral_double_beyond_2_53_reparses_as_a_double() -> None:
    """Found by the property above: 1.2539465286458166e16 is written as an integer literal."""
    body = canonical_json(1.2539465286458166e16)
    assert body == b"12539465286458166"
    assert canonical_json(ijson_loads(body)) == body
    # no record field may hold it any more: tokens_per_second is at most MAX_TOKENS_PER_SECOND (1e10)
    record = experiment(metrics=experiment().metrics.model_copy(update={"tokens_per_second": 1.2539465286458166e16}))
    with pytest.raises(SchemaError, match="tokens_per_second"):
        verify(sign(record, KEYS).to_json())


@PROPS
@given(st.dictionaries(st.text(max_size=10), json_values, max_size=8), st.randoms(use_true_random=False))
def test_canonical_json_ignores_key_order(value: dict[str, object], rnd: random.Random) -> None:
    items = list(value.items())
    rnd.shuffle(items)
    assert canonical_json(dict(items)) == canonical_json(value)


@st.composite
def metrics(draw: st.DrawFn, ok: bool) -> RunMetrics:
    opt = lambda s: draw(st.none() | s)  # noqa: E731
    return RunMetrics(
        val_bpb=draw(bpb) if ok else None,
        training_seconds=opt(seconds),
        total_seconds=opt(seconds),
        peak_vram_mib=opt(within(0.0, MAX_VRAM_MIB)),
        mfu_percent=opt(within(0.0, 100.0)),
        total_tokens=opt(st.integers(min_value=0, max_value=MAX_TOKENS)),
        tokens_per_second=opt(within(0.0, MAX_TOKENS_PER_SECOND)),
        num_steps=opt(st.integers(min_value=0, max_value=10**9)),
        num_params=opt(st.integers(min_value=0, max_value=10**12)),
    )


@st.composite
def experiments(draw: st.DrawFn) -> ExperimentRecord:
    outcome = draw(st.sampled_from(OUTCOMES))
    ok = outcome == "ok"
    return ExperimentRecord(
        track=draw(st.from_regex(r"[a-z0-9][a-z0-9_.@-]{0,20}", fullmatch=True)),
        parent_sha256=draw(sha),
        child_sha256=draw(sha),
        parent_canonical_sha256=draw(sha),
        child_canonical_sha256=draw(sha),
        diff=draw(st.text(max_size=400)),
        description=draw(text),
        outcome=outcome,
        status=draw(st.sampled_from(["keep", "discard"])) if ok else "crash",
        metrics=draw(metrics(ok)),
        parent_val_bpb=draw(st.none() | bpb),
        normalised=Normalised(
            delta_val_bpb=draw(st.none() | within(-MAX_VAL_BPB, MAX_VAL_BPB)),
            z=draw(st.none() | within(-MAX_ABS_Z, MAX_ABS_Z)),
            ecm=draw(st.none() | within(MIN_ECM, MAX_ECM)),
        ),
        hardware_class=draw(text),
        software=SoftwareVersions(python=draw(text), torch=draw(st.none() | text)),
        harness_version=draw(text),
        calibration_id=draw(st.none() | sha),
        seed=draw(st.integers(min_value=-SAFE, max_value=SAFE)),
        error=None if ok else draw(st.none() | text),
        created_at=draw(utc_datetimes),
    )


claims = st.builds(
    ClaimRecord,
    track=st.just("cpu-0123456789ab"),
    parent_canonical_sha256=sha,
    child_canonical_sha256=sha,
    lease_seconds=st.integers(min_value=1, max_value=86_400),
    description=text,
    created_at=utc_datetimes,
)


registrations = st.builds(
    ClientRegistration,
    public_key=st.just(KEYS.public_key_hex),
    display_name=st.text(min_size=1, max_size=64),
    hardware_class=st.none() | text,
    created_at=utc_datetimes,
)


@PROPS
@given(experiments() | claims | registrations)
def test_sign_verify_round_trip(record: ExperimentRecord | ClaimRecord | ClientRegistration) -> None:
    result = verify(sign(record, KEYS).to_json(), KEYS.public_key)
    assert result.record == record
    assert result.record_id == record_id(record)


@PROPS
@given(experiments())
def test_record_bytes_are_stable_under_reparse(record: ExperimentRecord) -> None:
    body = canonical_bytes(record)
    assert canonical_json(ijson_loads(body)) == body
    again = parse_record(body)
    assert again == record
    assert canonical_bytes(again) == body
