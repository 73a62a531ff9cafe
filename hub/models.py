"""ORM tables of the hub (SQLAlchemy 2 typed mapping). Only :mod:`autoresearch.hub.store` queries them.

Constraint names follow :data:`NAMING_CONVENTION` so migrations can name what they alter. Signed
records are kept as received (``envelope_json``) beside their canonical payload (``record_json``); the
other columns are the fields the hub filters, sorts or aggregates on.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from autoresearch.protocol.api import ClientStatus
from autoresearch.protocol.best import Verdict
from autoresearch.protocol.records import Outcome, Status

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

Hash = String(64)
BigId = BigInteger().with_variant(Integer(), "sqlite")  # SQLite autoincrements INTEGER PRIMARY KEY only


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every engine (SQLite forgets the zone; this puts it back)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Client(Base):
    """A registered Ed25519 key: the identity of a volunteer's machine."""

    __tablename__ = "clients"
    __table_args__ = (
        UniqueConstraint("name_key"),
        CheckConstraint("status IN ('active', 'pending', 'revoked')", name="status"),
    )

    key_id: Mapped[str] = mapped_column(Hash, primary_key=True)
    public_key: Mapped[str] = mapped_column(String(64))
    display_name: Mapped[str] = mapped_column(String(64))
    name_key: Mapped[str] = mapped_column(String(64), comment="SHA-256 of the display name's confusable skeleton, unique")
    status: Mapped[ClientStatus] = mapped_column(String(16))
    hardware_class: Mapped[str | None] = mapped_column(String(200))
    registered_at: Mapped[datetime] = mapped_column(UtcDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    record_id: Mapped[str] = mapped_column(Hash)
    envelope_json: Mapped[str] = mapped_column(Text)
    enrolled_by: Mapped[int | None] = mapped_column(
        ForeignKey("tokens.id"), comment="the enrollment token that registered the key (its quotas count it)"
    )


class Token(Base):
    """A bearer token of a private hub (stored as its SHA-256 only): ``enroll`` or ``read``."""

    __tablename__ = "tokens"
    __table_args__ = (
        UniqueConstraint("token_sha256"),
        CheckConstraint("kind IN ('enroll', 'read')", name="kind"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(16))
    token_sha256: Mapped[str] = mapped_column(Hash)
    label: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime())


class Source(Base):
    """A ``train.py``, content-addressed by the SHA-256 of its UTF-8 text."""

    __tablename__ = "sources"

    sha256: Mapped[str] = mapped_column(Hash, primary_key=True)
    canonical_sha256: Mapped[str] = mapped_column(Hash, index=True)
    text: Mapped[str] = mapped_column(Text)
    size: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())


class Experiment(Base):
    """One signed experiment record, with the fields the hub filters and ranks on."""

    __tablename__ = "experiments"
    __table_args__ = (
        UniqueConstraint("id"),
        Index(None, "track", "seq"),
        Index(None, "track", "parent_canonical_sha256", "child_canonical_sha256", "seq"),
        Index(None, "track", "hardware_class", "status", "val_bpb"),
        Index(None, "track", "status", "ecm"),
        Index(None, "key_id", "seq"),
        Index(None, "hardware_class", "seq"),
        Index(None, "parent_sha256"),
        Index(None, "child_sha256"),
        Index(None, "received_at"),  # home page: activity in the last 24 h
        Index(None, "track", "key_id"),  # track page: distinct clients per track
        Index(None, "track", "verdict", "z"),  # the track's largest qualified z (protocol.best.STEP_BEYOND_Z)
        CheckConstraint(
            "verdict IN ('qualified', 'needs_replication', 'provisional', 'not_significant', 'refuted')",
            name="verdict",
        ),
    )

    seq: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(Hash)
    key_id: Mapped[str] = mapped_column(ForeignKey("clients.key_id"))
    track: Mapped[str] = mapped_column(String(64))
    parent_sha256: Mapped[str] = mapped_column(ForeignKey("sources.sha256"))
    child_sha256: Mapped[str] = mapped_column(ForeignKey("sources.sha256"))
    parent_canonical_sha256: Mapped[str] = mapped_column(Hash)
    child_canonical_sha256: Mapped[str] = mapped_column(Hash)
    outcome: Mapped[Outcome] = mapped_column(String(16))
    status: Mapped[Status] = mapped_column(String(16))
    val_bpb: Mapped[float | None] = mapped_column(Float)
    parent_val_bpb: Mapped[float | None] = mapped_column(Float)
    calibration_id: Mapped[str | None] = mapped_column(
        ForeignKey("calibrations.id"), comment="the signer's calibration the hub verified for this run"
    )
    normalised: Mapped[str | None] = mapped_column(Text, comment="JSON of the hub's own Normalised figures")
    z: Mapped[float | None] = mapped_column(Float, comment="hub z: (parent - child) / sigma of the calibration")
    ecm: Mapped[float | None] = mapped_column(Float, comment="hub ECM of the child on the calibration")
    gain: Mapped[float | None] = mapped_column(Float, comment="hub ECM ratio child / parent")
    bpb_ratio: Mapped[float | None] = mapped_column(Float, comment="parent / child val_bpb, same machine")
    hardware_class: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(String(500))
    seed_only: Mapped[bool] = mapped_column(Boolean)
    verdict: Mapped[Verdict | None] = mapped_column(String(24), comment="protocol.best verdict; null: cannot rank")
    assessment: Mapped[str | None] = mapped_column(Text, comment="JSON of the protocol.best Assessment")
    z_ceiling: Mapped[float | None] = mapped_column(Float, comment="largest qualified z of the track on arrival")
    near_duplicate_of: Mapped[str | None] = mapped_column(ForeignKey("experiments.id"))
    directions: Mapped[str] = mapped_column(Text, comment="JSON list of direction keys")
    const_changes: Mapped[str | None] = mapped_column(Text, comment="JSON {name: [old, new]}")
    minhash: Mapped[bytes | None] = mapped_column(LargeBinary, comment="MinHash of the diff's tokens")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    received_at: Mapped[datetime] = mapped_column(UtcDateTime())
    record_json: Mapped[str] = mapped_column(Text)
    envelope_json: Mapped[str] = mapped_column(Text)


class ExperimentDirection(Base):
    """Which direction keys an experiment has (one row per key)."""

    __tablename__ = "experiment_directions"
    __table_args__ = (Index(None, "direction", "experiment_seq"),)

    experiment_seq: Mapped[int] = mapped_column(ForeignKey("experiments.seq"), primary_key=True)
    direction: Mapped[str] = mapped_column(String(200), primary_key=True)


class Calibration(Base):
    """One signed calibration record of a (client, hardware class, track)."""

    __tablename__ = "calibrations"
    __table_args__ = (Index(None, "key_id", "track", "hardware_class"),)

    id: Mapped[str] = mapped_column(Hash, primary_key=True)
    key_id: Mapped[str] = mapped_column(ForeignKey("clients.key_id"))
    track: Mapped[str] = mapped_column(String(64))
    hardware_class: Mapped[str] = mapped_column(String(200))
    sigma: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    received_at: Mapped[datetime] = mapped_column(UtcDateTime())
    record_json: Mapped[str] = mapped_column(Text)
    envelope_json: Mapped[str] = mapped_column(Text)


class Claim(Base):
    """The lease on running one (track, parent canonical, child canonical); one row per triple."""

    __tablename__ = "claims"
    __table_args__ = (UniqueConstraint("track", "parent_canonical_sha256", "child_canonical_sha256"),)

    seq: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    track: Mapped[str] = mapped_column(String(64))
    parent_canonical_sha256: Mapped[str] = mapped_column(Hash)
    child_canonical_sha256: Mapped[str] = mapped_column(Hash)
    key_id: Mapped[str] = mapped_column(ForeignKey("clients.key_id"))
    record_id: Mapped[str] = mapped_column(Hash)
    lease_expires_at: Mapped[datetime] = mapped_column(UtcDateTime())
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())


class Best(Base):
    """Denormalised community best per track: per hardware class (raw val_bpb) and ``*`` (by ECM)."""

    __tablename__ = "best"

    track: Mapped[str] = mapped_column(String(64), primary_key=True)
    scope: Mapped[str] = mapped_column(String(200), primary_key=True, comment="hardware class or '*'")
    experiment_id: Mapped[str] = mapped_column(ForeignKey("experiments.id"))
    val_bpb: Mapped[float] = mapped_column(Float)
    ecm: Mapped[float | None] = mapped_column(Float)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())


class DirectionAggregate(Base):
    """Running sums per (track, direction, hardware class): cheap direction statistics."""

    __tablename__ = "direction_aggregates"

    track: Mapped[str] = mapped_column(String(64), primary_key=True)
    direction: Mapped[str] = mapped_column(String(200), primary_key=True)
    hardware_class: Mapped[str] = mapped_column(String(200), primary_key=True)
    tries: Mapped[int] = mapped_column(Integer, default=0)
    keeps: Mapped[int] = mapped_column(Integer, default=0)
    crashes: Mapped[int] = mapped_column(Integer, default=0)
    gain_n: Mapped[int] = mapped_column(Integer, default=0)
    gain_sum: Mapped[float] = mapped_column(Float, default=0.0)
    gain_sumsq: Mapped[float] = mapped_column(Float, default=0.0)
    z_n: Mapped[int] = mapped_column(Integer, default=0)
    z_sum: Mapped[float] = mapped_column(Float, default=0.0)
    z_sumsq: Mapped[float] = mapped_column(Float, default=0.0)
    ratio_n: Mapped[int] = mapped_column(Integer, default=0)
    ratio_sum: Mapped[float] = mapped_column(Float, default=0.0, comment="sum of parent / child val_bpb")
    ratio_sumsq: Mapped[float] = mapped_column(Float, default=0.0)


class ReplicationGroup(Base):
    """Running sums per experiment (track, parent canonical, child canonical) over all its runs:
    what every experiment view shows as ``replications``, one row read per view."""

    __tablename__ = "replication_groups"

    track: Mapped[str] = mapped_column(String(64), primary_key=True)
    parent_canonical_sha256: Mapped[str] = mapped_column(Hash, primary_key=True)
    child_canonical_sha256: Mapped[str] = mapped_column(Hash, primary_key=True)
    runs: Mapped[int] = mapped_column(Integer)
    ok_runs: Mapped[int] = mapped_column(Integer)
    bpb_sum: Mapped[float] = mapped_column(Float, comment="sum of val_bpb over the ok runs")
    bpb_sumsq: Mapped[float] = mapped_column(Float, comment="sum of squared val_bpb over the ok runs")


class ReplicationClass(Base):
    """Runs per (experiment, hardware class): the hardware classes an experiment was run on."""

    __tablename__ = "replication_classes"

    track: Mapped[str] = mapped_column(String(64), primary_key=True)
    parent_canonical_sha256: Mapped[str] = mapped_column(Hash, primary_key=True)
    child_canonical_sha256: Mapped[str] = mapped_column(Hash, primary_key=True)
    hardware_class: Mapped[str] = mapped_column(String(200), primary_key=True)
    runs: Mapped[int] = mapped_column(Integer)


class QuotaUsage(Base):
    """What one subject (``key:…``, ``token:…``, ``addr:…``) used of one quota in one fixed window."""

    __tablename__ = "quota_usage"

    subject: Mapped[str] = mapped_column(String(100), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32), primary_key=True, comment="records, source_bytes, registrations")
    window_start: Mapped[datetime] = mapped_column(UtcDateTime(), primary_key=True)
    amount: Mapped[int] = mapped_column(BigInteger)
