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
    json_logs: bool = Field(default=True, description="one JSON object per log line on stderr")
