"""The shipped hub, in process, for the research simulator (``bench/search_sim.py``).

:class:`ShippedHub` is a migrated SQLite database (a temp file) driven through the very functions
the routes call, with real Ed25519 keys and DSSE envelopes:

- ``POST /clients``      → :func:`autoresearch.hub.store.register_client`
- ``POST /calibrations`` → :func:`autoresearch.hub.store.add_calibration`
- ``POST /claims``       → :func:`autoresearch.hub.store.claim`
- ``POST /experiments``  → :func:`autoresearch.hub.ingest.check_experiment` +
  :func:`autoresearch.hub.store.add_experiment` (the signature verified by
  :func:`autoresearch.hub.ingest.verify_under`, as ``signed_by_active_key`` does)
- ``GET /best``          → :func:`autoresearch.hub.store.community_best` (the one rule,
  :mod:`autoresearch.protocol.best`)
- ``GET /suggestions``   → :func:`autoresearch.hub.suggestions.for_client` (exactly what the route serves)

The HTTP layer (quotas, bounds of :mod:`autoresearch.hub.limits`, the ASGI app) is left out: the test
``tests/bench/test_search_sim.py`` checks that the route serves the same suggestions for the same
database. Everything here runs on the trusted side in the simulator's own process; the numbers it
publishes are the simulator's, signed by keys it made.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy.orm import Session

from autoresearch.client.calibration import DEFAULT_SEEDS
from autoresearch.hub import ingest, store
from autoresearch.hub.db import make_engine, session_factory
from autoresearch.hub.migrate import upgrade
from autoresearch.hub.settings import HubSettings
from autoresearch.hub.suggestions import ReplicatePolicy, for_client
from autoresearch.protocol import (
    CALIBRATION_SCHEMA,
    CLAIM_SCHEMA,
    CLIENT_SCHEMA,
    EXPERIMENT_SCHEMA,
    CalibrationPoint,
    CalibrationRecord,
    ClaimRecord,
    ClientRegistration,
    CommunityBest,
    CurveFit,
    ExperimentRecord,
    KeyPair,
    Normalised,
    RunMetrics,
    SoftwareVersions,
    Suggestion,
    TrackSpec,
    Verified,
    canonical_source_sha256,
    sha256_hex,
    sign,
)
from autoresearch.protocol.records import WireModel
from autoresearch.protocol.source import unified_diff

SOFTWARE = SoftwareVersions(python="3.11", torch="2.6.0")
HARNESS = "sim-1"
TIME_BUDGET = 300.0  # seconds: the upstream budget
CURVE_A_BPB = 0.2  # the reference curve bpb(t) = c + A·(t/TIME_BUDGET)^(−0.5): A above the asymptote at the budget
CURVE_B = 0.5


def sim_track(reference: str) -> TrackSpec:
    """The simulator's track: upstream's 300 s budget, reference = the simulated ``train.py``."""
    return TrackSpec.build(
        name="sim", description="research simulator (bench/search_sim.py)", dataset="sim", split="val",
        data_sha256=None, tokenizer="sim", vocab_size=8192, max_seq_len=2048, eval_tokens=1 << 20,
        time_budget=TIME_BUDGET, harness_version=HARNESS, reference_sha256=sha256_hex(reference), device="cuda",
    )


def sim_keys(name: str) -> KeyPair:
    """A deterministic key pair for ``name`` (seeded runs must give the same key ids: the suggestion
    engine's Thompson stream is seeded by the asking key id)."""
    seed = hashlib.sha256(f"search-sim-key:{name}".encode()).digest()
    return KeyPair(Ed25519PrivateKey.from_private_bytes(seed))


@cache
def _template() -> Path:
    """One migrated SQLite file per process (Alembic, as ``autoresearch hub migrate`` does); each
    :class:`ShippedHub` copies it."""
    folder = Path(tempfile.mkdtemp(prefix="search-sim-"))
    path = folder / "template.db"
    upgrade(f"sqlite:///{path}")
    return path


@dataclass
class Published:
    """What the hub answered to one experiment: its record id and the hub's own verdict."""

    id: str
    verdict: str | None


class ShippedHub:
    """A migrated SQLite hub for one simulated community (see the module docstring).

    Times are the simulation's (``now`` arguments, timezone-aware); records carry them as
    ``created_at``."""

    def __init__(self, reference: str) -> None:
        self.reference = reference
        self.spec = sim_track(reference)
        self._dir = Path(tempfile.mkdtemp(prefix="search-sim-hub-"))
        path = self._dir / "hub.db"
        shutil.copyfile(_template(), path)
        self.engine = make_engine(f"sqlite:///{path}", pool_size=1)
        self.session: Session = session_factory(self.engine)()
        settings = HubSettings(db_url=f"sqlite:///{path}")
        self.rules = store.DedupSettings(rel_tol=settings.near_duplicate_rel_tol, jaccard=settings.near_duplicate_jaccard)
        self.settings = settings
        self.keys: dict[str, KeyPair] = {}
        self.signed = 0
        store.put_source(self.session, reference, canonical_source_sha256(reference))
        self.session.commit()

    @property
    def db_url(self) -> str:
        return f"sqlite:///{self._dir / 'hub.db'}"

    def close(self) -> None:
        self.session.close()
        self.engine.dispose()
        shutil.rmtree(self._dir, ignore_errors=True)

    # ---- submissions (the POST routes' store calls) -----------------------------------------------

    def _verified(self, record: WireModel, keys: KeyPair, schema: str) -> tuple[Verified, str]:
        envelope = sign(record, keys).to_json()
        self.signed += 1
        return ingest.verify_under(envelope.encode("utf-8"), keys.public_key_hex, schema), envelope

    def register(self, name: str, hardware_class: str, now: datetime) -> KeyPair:
        """Register the key of ``name`` (``POST /clients`` on a public hub: active at once)."""
        keys = self.keys[name] = sim_keys(name)
        record = ClientRegistration(public_key=keys.public_key_hex, display_name=name,
                                    hardware_class=hardware_class, created_at=now)
        verified, envelope = self._verified(record, keys, CLIENT_SCHEMA)
        store.register_client(self.session, verified, status="active", envelope_json=envelope)
        self.session.commit()
        return keys

    def calibrate(self, name: str, hardware_class: str, *, asymptote: float, sigma: float, now: datetime) -> str:
        """Publish the calibration of ``name``'s machine: the reference curve
        ``bpb(t) = asymptote + CURVE_A_BPB·(t/TIME_BUDGET)^(−CURVE_B)`` measured at ¼, ½, 1 (``DEFAULT_SEEDS`` seeds, as the client), 2
        budgets, with the seed noise ``sigma`` the client estimated (bits per byte). Returns its id."""
        a = CURVE_A_BPB * TIME_BUDGET**CURVE_B
        points = [
            CalibrationPoint(budget_seconds=b, seed=s, val_bpb=asymptote + a * b**-CURVE_B, training_seconds=b,
                             num_steps=1000, tokens_per_second=5e5)
            for b, s in [(75.0, 0), (150.0, 0), *((300.0, k) for k in range(DEFAULT_SEEDS)), (600.0, 0)]
        ]
        record = CalibrationRecord(
            track=self.spec.id, hardware_class=hardware_class, harness_version=HARNESS, software=SOFTWARE,
            reference_sha256=self.spec.reference_sha256, time_budget_seconds=TIME_BUDGET, points=points,
            fit=CurveFit(a=a, b=CURVE_B, c=asymptote, rmse=sigma), sigma=sigma, min_budget_seconds=75.0,
            max_budget_seconds=600.0, tokens_per_second=5e5, matmul_tflops=400.0, created_at=now,
        )
        verified, envelope = self._verified(record, self.keys[name], CALIBRATION_SCHEMA)
        store.add_calibration(self.session, verified, envelope_json=envelope)
        self.session.commit()
        return verified.record_id

    def claim(self, name: str, parent: str, child: str, *, lease_seconds: int, now: datetime) -> str:
        """``POST /claims``: ``granted``, ``done`` or ``held``."""
        record = ClaimRecord(track=self.spec.id, parent_canonical_sha256=canonical_source_sha256(parent),
                             child_canonical_sha256=canonical_source_sha256(child), lease_seconds=lease_seconds,
                             description="sim", created_at=now)
        verified, _ = self._verified(record, self.keys[name], CLAIM_SCHEMA)
        assert isinstance(verified.record, ClaimRecord)
        answer = store.claim(self.session, verified.record, verified.keyid, verified.record_id, now=now, rules=self.rules)
        self.session.commit()
        return answer.status

    def publish(
        self, name: str, parent: str, child: str, *, val_bpb: float | None, parent_val_bpb: float | None,
        status: str, hardware_class: str, calibration_id: str, sigma: float, description: str, now: datetime,
    ) -> Published:
        """``POST /experiments`` of one run, as the client signs it (its own z from its own σ;
        the hub recomputes its figures from the calibration and ignores these)."""
        z = (parent_val_bpb - val_bpb) / sigma if val_bpb is not None and parent_val_bpb is not None else None
        record = ExperimentRecord(
            track=self.spec.id, parent_sha256=sha256_hex(parent), child_sha256=sha256_hex(child),
            parent_canonical_sha256=canonical_source_sha256(parent), child_canonical_sha256=canonical_source_sha256(child),
            diff=unified_diff(parent, child), description=description,
            outcome="ok" if val_bpb is not None else "crash", status=status,  # type: ignore[arg-type]
            metrics=RunMetrics(val_bpb=val_bpb, training_seconds=TIME_BUDGET),
            parent_val_bpb=parent_val_bpb, normalised=Normalised(sigma=sigma, z=z),
            hardware_class=hardware_class, software=SOFTWARE, harness_version=HARNESS,
            calibration_id=calibration_id, created_at=now,
        )
        verified, envelope = self._verified(record, self.keys[name], EXPERIMENT_SCHEMA)
        s = self.settings
        checked = ingest.check_experiment(verified, self.spec, parent, now=now, max_diff_bytes=s.max_diff_bytes,
                                          max_source_bytes=s.max_source_bytes, max_future_seconds=s.max_future_seconds)
        experiment_id, _ = store.add_experiment(self.session, checked, envelope_json=envelope, rules=self.rules)
        self.session.commit()
        return Published(experiment_id, store.get_experiment_view(self.session, experiment_id).verdict)

    # ---- reads (the GET routes' store calls) ------------------------------------------------------

    def best_id(self, hardware_class: str | None) -> str | None:
        """Id of the community best (None: the reference), to poll cheaply for a change."""
        out = store.best_experiment_id(self.session, self.spec.id, hardware_class)
        self.session.rollback()
        return out

    def best(self, hardware_class: str | None) -> CommunityBest:
        """``GET /best?hardware_class=`` (None: across classes by ECM)."""
        out = store.community_best(self.session, self.spec, self.reference, hardware_class)
        self.session.rollback()
        return out

    def suggestions(
        self, hardware_class: str | None, client: str | None, now: datetime, *, replicate: ReplicatePolicy = "flagged"
    ) -> list[Suggestion]:
        """``GET /suggestions?hardware_class=&client=``: the route's own function (``replicate``: the
        route's default policy, or a variant's)."""
        out = for_client(self.session, self.spec, self.reference, hardware_class=hardware_class, client=client, now=now,
                         replicate=replicate)
        self.session.rollback()
        return out
