"""Builders of valid signed records for hub tests (reusable by other test modules).

Everything is real: Ed25519 keys (:class:`autoresearch.protocol.KeyPair`), RFC 8785 canonical
payloads, DSSE envelopes, and unified diffs made with :mod:`difflib` exactly as a client makes them.
"""

from __future__ import annotations

import difflib
import re
from datetime import datetime, timedelta

from autoresearch.protocol import (
    CalibrationPoint,
    CalibrationRecord,
    ClaimRecord,
    ClientRegistration,
    CurveFit,
    ExperimentRecord,
    KeyPair,
    Normalised,
    RunMetrics,
    SoftwareVersions,
    TrackSpec,
    canonical_source_sha256,
    sha256_hex,
    sign,
    utc_now,
)
from autoresearch.protocol.records import LossPoint, WireModel

REFERENCE = '''"""A tiny stand-in for the reference train.py."""

import math

DEPTH = 2  # transformer layers
MATRIX_LR = 0.04  # learning rate of the matrix parameters
EMBED_LR = 0.6
WARMUP_STEPS = 10
SEED = 42


def lr_at(step):
    """Learning rate schedule."""
    return MATRIX_LR * min(1.0, (step + 1) / WARMUP_STEPS)


class MLP:
    def forward(self, x):
        return max(x, 0.0) ** 2


def main():
    return math.sqrt(DEPTH)
'''

HARDWARE = "cpu:test-cpu:2"
SOFTWARE = SoftwareVersions(python="3.11.0", torch="2.13.0")


def make_track(reference: str = REFERENCE, name: str = "tiny") -> TrackSpec:
    """A track spec whose reference is ``reference``."""
    return TrackSpec.build(
        name=name,
        description="hub test track",
        dataset="test",
        split="val",
        data_sha256=None,
        tokenizer="bytes",
        vocab_size=256,
        max_seq_len=64,
        eval_tokens=1024,
        time_budget=5.0,
        harness_version="test-1",
        reference_sha256=sha256_hex(reference),
        device="cpu",
    )


def unified_diff(parent: str, child: str) -> str:
    """The unified diff a client sends (``a/train.py`` → ``b/train.py``)."""
    return "".join(
        difflib.unified_diff(parent.splitlines(keepends=True), child.splitlines(keepends=True), "a/train.py", "b/train.py")
    )


def with_constant(source: str, name: str, value: object) -> str:
    """``source`` with the value of the module-level constant ``NAME = …`` replaced (comment kept)."""
    out, n = re.subn(rf"^({re.escape(name)} = )[^\s#]+", lambda m: m.group(1) + repr(value), source, flags=re.M)
    assert n == 1, f"{name} not found once in source"
    return out


def experiment(
    track: TrackSpec,
    parent: str,
    child: str,
    *,
    val_bpb: float | None = 1.5,
    parent_val_bpb: float | None = 1.6,
    outcome: str = "ok",
    status: str | None = None,
    hardware_class: str = HARDWARE,
    z: float | None = 3.0,
    ecm: float | None = None,
    gain: float | None = None,
    sigma: float | None = 0.01,
    description: str = "test change",
    created_at: datetime | None = None,
    seed: int = 0,
    diff: str | None = None,
    calibration_id: str | None = None,
    loss_curve: list[LossPoint] | None = None,
) -> ExperimentRecord:
    """A valid experiment record parent → child (status: keep if it improved, else discard/crash)."""
    if status is None:
        if outcome != "ok":
            status = "crash"
        else:
            status = "keep" if parent_val_bpb is None or (val_bpb or 0) < parent_val_bpb else "discard"
    delta = val_bpb - parent_val_bpb if val_bpb is not None and parent_val_bpb is not None else None
    return ExperimentRecord(
        track=track.id,
        parent_sha256=sha256_hex(parent),
        child_sha256=sha256_hex(child),
        parent_canonical_sha256=canonical_source_sha256(parent),
        child_canonical_sha256=canonical_source_sha256(child),
        diff=unified_diff(parent, child) if diff is None else diff,
        description=description,
        outcome=outcome,  # type: ignore[arg-type]
        status=status,  # type: ignore[arg-type]
        metrics=RunMetrics(val_bpb=val_bpb, training_seconds=5.0, num_steps=10),
        parent_val_bpb=parent_val_bpb,
        normalised=Normalised(delta_val_bpb=delta, sigma=sigma, z=z, ecm=ecm, gain=gain),
        hardware_class=hardware_class,
        software=SOFTWARE,
        harness_version=track.harness_version,
        seed=seed,
        calibration_id=calibration_id,
        loss_curve=loss_curve or [],
        created_at=created_at or utc_now(),
    )


def loss_curve(points: int = 20, *, start: float = 5.5, end: float = 3.0, seconds: float = 5.0) -> list[LossPoint]:
    """A decaying training-loss curve of ``points`` points over ``seconds`` (nats per token)."""
    return [LossPoint(step=10 * i, seconds=seconds * i / (points - 1), loss=end + (start - end) * 0.7 ** i)
            for i in range(points)]


def registration(keys: KeyPair, name: str, hardware_class: str | None = HARDWARE) -> ClientRegistration:
    return ClientRegistration(
        public_key=keys.public_key_hex, display_name=name, hardware_class=hardware_class, created_at=utc_now()
    )


def claim(track: TrackSpec, parent: str, child: str, *, lease_seconds: int = 60, created_at: datetime | None = None) -> ClaimRecord:
    return ClaimRecord(
        track=track.id,
        parent_canonical_sha256=canonical_source_sha256(parent),
        child_canonical_sha256=canonical_source_sha256(child),
        lease_seconds=lease_seconds,
        description="claim",
        created_at=created_at or utc_now(),
    )


def calibration(
    track: TrackSpec, *, hardware_class: str = HARDWARE, sigma: float = 0.01, machine: int = 0,
    asymptote: float = 2.0,
) -> CalibrationRecord:
    """A calibration on the curve ``bpb(t) = asymptote + 1/t`` (default 2.2 at the 5 s budget,
    asymptote 2.0); ``machine`` shifts the measured points a little, so two machines' calibrations
    differ."""
    points = [
        CalibrationPoint(budget_seconds=b, seed=s, val_bpb=asymptote + 1.0 / b + machine * 1e-4, training_seconds=b,
                         num_steps=10, tokens_per_second=1000.0)
        for b, s in [(1.25, 0), (2.5, 0), (5.0, 0), (5.0, 1), (10.0, 0)]
    ]
    return CalibrationRecord(
        track=track.id,
        hardware_class=hardware_class,
        harness_version=track.harness_version,
        software=SOFTWARE,
        reference_sha256=track.reference_sha256,
        time_budget_seconds=track.time_budget,
        points=points,
        fit=CurveFit(a=1.0, b=1.0, c=asymptote, rmse=0.001),
        sigma=sigma,
        min_budget_seconds=1.25,
        max_budget_seconds=10.0,
        tokens_per_second=1000.0,
        matmul_tflops=0.1,
        created_at=utc_now(),
    )


def envelope_bytes(record: WireModel, keys: KeyPair) -> bytes:
    """The signed DSSE envelope JSON of ``record`` as a client POSTs it."""
    return sign(record, keys).to_json().encode("utf-8")


def future(seconds: float) -> datetime:
    return utc_now() + timedelta(seconds=seconds)


def raw_envelope(payload: bytes, payload_type: str, keys: KeyPair, *, keyid: str | None = None) -> bytes:
    """An envelope over arbitrary payload bytes (for records no valid model would produce)."""
    import base64
    import json

    from autoresearch.protocol import pae

    sig = keys.sign(pae(payload_type, payload))
    return json.dumps(
        {
            "payloadType": payload_type,
            "payload": base64.b64encode(payload).decode(),
            "signatures": [{"keyid": keyid or keys.key_id, "sig": base64.b64encode(sig).decode()}],
        }
    ).encode()
