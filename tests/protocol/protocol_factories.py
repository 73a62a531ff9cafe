"""Deterministic sample records and keys for the protocol tests and the golden-vector generator.

Everything here is fixed (no clock, no randomness), so the vectors that ``make_vectors.py`` writes are
byte-identical on every run. The key seeds below are TEST VECTORS: they are published in this
repository and must never sign a real record.
"""

from __future__ import annotations

import difflib
import hashlib
from datetime import UTC, datetime

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

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
    sha256_hex,
)

FIXED_TIME = datetime(2026, 3, 14, 15, 9, 26, 535000, tzinfo=UTC)
TRACK = "tiny-0123456789ab"

# TEST-ONLY key seeds (32 bytes each), derived from public phrases so anyone can re-derive them.
TEST_KEY_SEED = hashlib.sha256(b"autoresearch TEST VECTOR key 1 - never use for real records").digest()
OTHER_KEY_SEED = hashlib.sha256(b"autoresearch TEST VECTOR key 2 - never use for real records").digest()


def keys_from_seed(seed: bytes) -> KeyPair:
    """An Ed25519 key pair from a 32-byte seed (RFC 8032 private key)."""
    return KeyPair(Ed25519PrivateKey.from_private_bytes(seed))


def vector_keys() -> KeyPair:
    """The golden vectors' signing key (TEST ONLY)."""
    return keys_from_seed(TEST_KEY_SEED)


def other_keys() -> KeyPair:
    """A second fixed key, for "valid signature under another key" cases (TEST ONLY)."""
    return keys_from_seed(OTHER_KEY_SEED)


PARENT_SOURCE = """\
import torch

# hyperparameters
DEPTH = 2  # transformer layers
MATRIX_LR = 0.04  # Muon learning rate
EMBEDDING_LR = 0.6  # AdamW learning rate of the embeddings
WARMDOWN_RATIO = 0.5  # fraction of the budget spent decaying the LR
TOTAL_BATCH_SIZE = 2**14  # tokens per optimizer step


def build_model(vocab_size):
    return torch.nn.Embedding(vocab_size, 64)
"""


def child_source(matrix_lr: str = "0.05") -> str:
    """The parent with ``MATRIX_LR`` changed (the canonical one-constant experiment)."""
    return PARENT_SOURCE.replace("MATRIX_LR = 0.04", f"MATRIX_LR = {matrix_lr}")


def unified_diff(parent: str, child: str) -> str:
    """Unified diff ``a/train.py`` → ``b/train.py`` (what an experiment record carries)."""
    return "".join(
        difflib.unified_diff(
            parent.splitlines(keepends=True), child.splitlines(keepends=True), "a/train.py", "b/train.py"
        )
    )


def software() -> SoftwareVersions:
    return SoftwareVersions(python="3.11.7", torch="2.13.0", cuda=None, driver=None)


def experiment(**overrides: object) -> ExperimentRecord:
    """A kept experiment on the CPU (``ok``, val_bpb 1.8765); ``overrides`` replace fields."""
    child = child_source()
    fields: dict[str, object] = dict(
        track=TRACK,
        parent_sha256=sha256_hex(PARENT_SOURCE),
        child_sha256=sha256_hex(child),
        parent_canonical_sha256=sha256_hex("canonical:" + PARENT_SOURCE),
        child_canonical_sha256=sha256_hex("canonical:" + child),
        diff=unified_diff(PARENT_SOURCE, child),
        description="MATRIX_LR 0.04 → 0.05",
        outcome="ok",
        status="keep",
        metrics=RunMetrics(
            val_bpb=1.8765,
            training_seconds=5.002,
            total_seconds=7.5,
            startup_seconds=1.25,
            eval_seconds=1.0,
            peak_vram_mib=0.0,
            mfu_percent=0.12,
            total_tokens=262_144,
            tokens_per_second=52_400.5,
            num_steps=16,
            num_params=181_504,
            depth=2,
        ),
        parent_val_bpb=1.9,
        normalised=Normalised(
            delta_val_bpb=-0.0235, sigma=0.004, z=5.875, ecm=1.31, ecm_parent=1.0, gain=1.31
        ),
        hardware_class="cpu:AMD EPYC 7B13:2",
        software=software(),
        harness_version="1",
        calibration_id=sha256_hex("calibration"),
        seed=0,
        created_at=FIXED_TIME,
    )
    fields.update(overrides)
    return ExperimentRecord(**fields)


def crashed_experiment() -> ExperimentRecord:
    """A crashed run: val_bpb null (never 0.0), status ``crash``, the traceback tail in ``error``."""
    return experiment(
        outcome="crash",
        status="crash",
        metrics=RunMetrics(training_seconds=0.3, total_seconds=1.1),
        normalised=Normalised(),
        description="MLP width 4x → 8x",
        error="Traceback (most recent call last):\n  ...\nRuntimeError: shape mismatch",
    )


def calibration() -> CalibrationRecord:
    """A calibration of the tiny track at budgets {¼, ½, 1, 2} × 8 s, two seeds at the full budget."""
    points = [
        CalibrationPoint(budget_seconds=b, seed=s, val_bpb=v, training_seconds=b, num_steps=n, tokens_per_second=5.1e4)
        for b, s, v, n in [(2.0, 0, 2.41, 4), (4.0, 0, 2.2, 8), (8.0, 0, 2.05, 16), (8.0, 1, 2.057, 16), (16.0, 0, 1.95, 32)]
    ]
    return CalibrationRecord(
        track=TRACK,
        hardware_class="cpu:AMD EPYC 7B13:2",
        harness_version="1",
        software=software(),
        reference_sha256=sha256_hex(PARENT_SOURCE),
        time_budget_seconds=8.0,
        points=points,
        fit=CurveFit(a=1.1, b=0.5, c=1.6, rmse=0.003),
        sigma=0.00495,
        min_budget_seconds=2.0,
        max_budget_seconds=16.0,
        tokens_per_second=5.1e4,
        matmul_tflops=0.21,
        created_at=FIXED_TIME,
    )


def claim() -> ClaimRecord:
    """A claim on (parent, child) for 60 s."""
    child = child_source()
    return ClaimRecord(
        track=TRACK,
        parent_canonical_sha256=sha256_hex("canonical:" + PARENT_SOURCE),
        child_canonical_sha256=sha256_hex("canonical:" + child),
        lease_seconds=60,
        description="MATRIX_LR 0.04 → 0.05",
        created_at=FIXED_TIME,
    )


def client_registration(keys: KeyPair) -> ClientRegistration:
    """``keys`` announcing itself (signed with the key it announces)."""
    return ClientRegistration(
        public_key=keys.public_key_hex, display_name="test-volunteer", hardware_class="cpu:AMD EPYC 7B13:2", created_at=FIXED_TIME
    )


def all_records(keys: KeyPair) -> dict[str, object]:
    """One record of every signed type, by short name."""
    return {
        "experiment_ok": experiment(),
        "experiment_crash": crashed_experiment(),
        "calibration": calibration(),
        "claim": claim(),
        "client": client_registration(keys),
    }
