"""Hub settings (pydantic-settings): from arguments, else ``AUTORESEARCH_HUB_*`` environment variables.

Nothing reads the environment at import time: build a :class:`HubSettings` and hand it to
:func:`autoresearch.hub.app.create_app`.
"""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from autoresearch.protocol import MAX_SOURCE_BYTES


def default_db_url() -> str:
    """SQLite file ``hub.db`` under ``$AUTORESEARCH_HOME`` (else the platform's user data dir)."""
    env = os.environ.get("AUTORESEARCH_HOME")
    base = Path(env).expanduser() if env else Path(platformdirs.user_data_dir("autoresearch", appauthor=False))
    return f"sqlite:///{base / 'hub.db'}"


class HubSettings(BaseSettings):
    """Everything a hub process needs to know. Environment variables: ``AUTORESEARCH_HUB_<FIELD>``
    (``AUTORESEARCH_HUB_DB_URL``, ``AUTORESEARCH_HUB_PRIVATE``, ``AUTORESEARCH_HUB_ADMIN_TOKEN`` …)."""

    model_config = SettingsConfigDict(env_prefix="AUTORESEARCH_HUB_", extra="ignore")

    db_url: str = Field(default_factory=default_db_url, description="SQLAlchemy URL (sqlite:/// or postgresql://)")
    private: bool = Field(default=False, description="every read needs a token; keys register with an enroll token")
    require_approval: bool = Field(
        default=False, description="keys registering without an enroll token wait (pending) for an admin"
    )
    admin_token: SecretStr | None = Field(default=None, description="bearer token with every right")
    max_body_bytes: int = Field(default=1024 * 1024, gt=0, description="largest request body, bytes")
    max_diff_bytes: int = Field(default=128 * 1024, gt=0, description="largest experiment diff, UTF-8 bytes")
    max_source_bytes: int = Field(default=MAX_SOURCE_BYTES, gt=0, description="largest train.py, UTF-8 bytes")
    max_future_seconds: float = Field(default=300.0, ge=0, description="how far created_at may be ahead, s")
    near_duplicate_rel_tol: float = Field(default=0.05, gt=0, description="relative tolerance of constants")
    near_duplicate_jaccard: float = Field(default=0.9, gt=0, le=1, description="MinHash similarity threshold")
    page_limit_max: int = Field(default=500, gt=0, description="largest ?limit= of a listing")
    # cost bounds of one record (docs/hub.md, "Bounds at the edge")
    max_source_ast_nodes: int = Field(default=20_000, gt=0, description="most syntax-tree nodes of a train.py")
    max_changed_symbols: int = Field(
        default=64, gt=0, description="most top-level statements one experiment may change"
    )
    lease_margin_seconds: float = Field(
        default=600.0, ge=0, description="a claim's lease may be at most 2 × the track's budget + this, s"
    )
    # quotas (docs/private-hub.md, "Quotas"): per key, and per enrollment token over all the keys it
    # enrolled; anonymous uploads and registrations count per client address. 429 + Retry-After.
    quota_records_per_minute: int = Field(default=120, gt=0, description="signed records per key per minute")
    quota_token_records_per_minute: int = Field(
        default=1200, gt=0, description="signed records per enrollment token (all its keys) per minute"
    )
    quota_source_bytes_per_day: int = Field(
        default=64 * 1024 * 1024, gt=0, description="train.py bytes per key (or anonymous address) per UTC day"
    )
    quota_token_source_bytes_per_day: int = Field(
        default=512 * 1024 * 1024, gt=0, description="train.py bytes per enrollment token per UTC day"
    )
    quota_live_claims: int = Field(default=16, gt=0, description="unexpired claims one key holds at once")
    quota_token_live_claims: int = Field(
        default=128, gt=0, description="unexpired claims the keys of one enrollment token hold at once"
    )
    quota_registrations_per_hour: int = Field(
        default=30, gt=0, description="key registrations per enrollment token (or client address) per hour"
    )
    json_logs: bool = Field(default=True, description="one JSON object per log line on stderr")
