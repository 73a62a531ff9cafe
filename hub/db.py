"""Engine and session factory for SQLite (embedded default) and PostgreSQL (production, via psycopg 3).

SQLite runs in WAL mode with foreign keys on and a busy timeout, and write transactions start with
``BEGIN IMMEDIATE`` so two writers queue on the lock instead of failing when one upgrades a read
transaction (https://www.sqlite.org/lang_transaction.html); within one process, write transactions
also take turns on a lock first (see ``_configure_sqlite``). A session asks for a write transaction
with :func:`begin_write` before its first statement.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

_logger = logging.getLogger(__name__)

SQLITE_BUSY_TIMEOUT_MS = 30_000
_WRITE_OPTION = "autoresearch_write"
_WRITE_LOCK_HELD = "autoresearch_write_lock_held"


def normalise_url(url: str) -> str:
    """Map ``postgres://`` and ``postgresql://`` onto the psycopg 3 driver; leave others alone."""
    parsed = make_url(url)
    if parsed.drivername in ("postgres", "postgresql"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def make_engine(url: str, *, pool_size: int = 10) -> Engine:
    """An engine for ``url``. SQLite files get their folder created, WAL, foreign keys, busy timeout.

    Raises:
        sqlalchemy.exc.ArgumentError: the URL is not a database URL SQLAlchemy understands.
    """
    url = normalise_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})
        _configure_sqlite(engine)
        return engine
    return create_engine(url, pool_size=pool_size, max_overflow=2 * pool_size, pool_pre_ping=True)


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we emit BEGIN ourselves (below)
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    writers = threading.Lock()  # this process's writers queue here, in turn, rather than polling SQLite's lock

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        write = connection.get_execution_options().get(_WRITE_OPTION, False)
        if not write:
            connection.exec_driver_sql("BEGIN")
            return
        # SQLite has one writer at a time; its busy handler retries by sleeping, not in arrival order,
        # so under load (many threads, CPU-bound checks) an unlucky writer can starve past the busy
        # timeout ("database is locked"). Queueing on a lock first makes this process's writers take
        # turns; writers of other processes still meet the busy timeout.
        held = writers.acquire(timeout=SQLITE_BUSY_TIMEOUT_MS / 1000)
        connection.info[_WRITE_LOCK_HELD] = held
        try:
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        except BaseException:
            _release(connection)
            raise

    def _release(connection: Any) -> None:
        if connection.info.pop(_WRITE_LOCK_HELD, False):
            writers.release()

    @event.listens_for(engine, "commit")
    def _on_commit(connection: Any) -> None:
        _release(connection)

    @event.listens_for(engine, "rollback")
    def _on_rollback(connection: Any) -> None:
        _release(connection)


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions that do not expire objects on commit (the store returns protocol models anyway)."""
    return sessionmaker(engine, expire_on_commit=False)


def begin_write(session: Session) -> None:
    """Start ``session``'s transaction as a write transaction (``BEGIN IMMEDIATE`` on SQLite).

    Call before the session's first statement; a no-op when a transaction is already open."""
    if not session.in_transaction():
        session.connection(execution_options={_WRITE_OPTION: True})


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


class StatementCounter:
    """Counts the SQL statements an engine sends (a ``before_cursor_execute`` listener), so tests and
    ``bench/hub_bench.py`` can show how many statements a request costs. Connection set-up that the
    hub emits itself (``BEGIN``, SQLite's ``PRAGMA`` lines) is not counted.

    Use as a context manager: ``with StatementCounter(engine) as counter: ...; counter.count``.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.statements: list[str] = []

    @property
    def count(self) -> int:
        return len(self.statements)

    def reset(self) -> None:
        self.statements.clear()

    def _on_execute(self, _conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        head = statement.lstrip()[:6].upper()
        if head in ("BEGIN", "BEGIN ", "PRAGMA", "COMMIT", "ROLLBA"):
            return
        self.statements.append(statement)

    def __enter__(self) -> StatementCounter:
        event.listen(self.engine, "before_cursor_execute", self._on_execute)
        return self

    def __exit__(self, *_exc: object) -> None:
        event.remove(self.engine, "before_cursor_execute", self._on_execute)
