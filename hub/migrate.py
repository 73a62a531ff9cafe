"""Apply the hub's Alembic migrations (``autoresearch hub migrate``; ``hub serve`` runs it on start)."""

from __future__ import annotations

import logging
from importlib import resources
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection

from .db import normalise_url

_logger = logging.getLogger(__name__)


def alembic_config(db_url: str, connection: Connection | None = None) -> Config:
    """The packaged ``alembic.ini`` pointed at ``db_url`` (or at an open ``connection``)."""
    package = Path(str(resources.files("autoresearch.hub")))
    config = Config(str(package / "alembic.ini"))
    config.set_main_option("script_location", str(package / "migrations"))
    config.set_main_option("sqlalchemy.url", normalise_url(db_url).replace("%", "%%"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def upgrade(db_url: str, revision: str = "head") -> None:
    """Migrate the database at ``db_url`` to ``revision`` (default: the newest)."""
    _logger.info("migrating database to %s", revision)
    command.upgrade(alembic_config(db_url), revision)


def current(db_url: str) -> None:
    """Log the database's current revision (Alembic's ``current``)."""
    command.current(alembic_config(db_url))
