"""Apply the hub's Alembic migrations (``autoresearch hub migrate``; ``hub serve`` runs it on start),
and check that a database is at the newest revision (``hub admin …`` never migrates implicitly:
:func:`require_current`)."""

from __future__ import annotations

import logging
from importlib import resources
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection
from sqlalchemy.engine import make_url

from .db import make_engine, normalise_url

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


class SchemaNotCurrent(RuntimeError):
    """The database is not at the revision this hub's code needs (:func:`require_current`);
    ``current`` is None for a database that was never migrated (or does not exist)."""

    def __init__(self, db_url: str, current: str | None, head: str) -> None:
        where = make_url(normalise_url(db_url)).render_as_string(hide_password=True)
        state = "has no hub schema" if current is None else f"is at revision {current}"
        super().__init__(f"the hub database {where} {state}; this hub needs revision {head}")
        self.current = current
        self.head = head


def head_revision() -> str:
    """The newest migration revision shipped with this hub (``0006`` …)."""
    head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    assert head is not None, "the hub ships migrations"
    return head


def current_revision(db_url: str) -> str | None:
    """The database's Alembic revision; None when it has none. A SQLite file that does not exist is
    not created (it has no revision)."""
    parsed = make_url(normalise_url(db_url))
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        if not Path(parsed.database).expanduser().exists():
            return None
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


def require_current(db_url: str) -> None:
    """Raise unless the database is at :func:`head_revision` (one connection, one read).

    Raises:
        SchemaNotCurrent: not migrated, behind, or at a revision this code does not know (newer).
    """
    current, head = current_revision(db_url), head_revision()
    if current != head:
        raise SchemaNotCurrent(db_url, current, head)
