"""The durable outbox: signed records wait here until the hub has them.

Publishing never blocks research (DESIGN.md "The agent loop"): the loop hands a signed envelope to
:meth:`Outbox.enqueue`, which commits it to SQLite and returns; :class:`OutboxSender`, a background
thread, delivers items in order.

Storage: ``<workspace>/.autoresearch/outbox.sqlite`` in WAL mode with ``synchronous=FULL``, so a
committed item survives ``kill -9`` and power loss (SQLite "Atomic Commit", https://sqlite.org/atomiccommit.html).
Each operation opens its own connection, so the loop thread, the sender thread and another process
(``autoresearch outbox --send``) can share the file.

Delivery rules:

- items go out in enqueue order (``seq``); while the head item cannot be delivered because the hub
  is unavailable, nothing behind it is sent (the hub sees records in the order they were made);
- a hub that is down, times out, answers 5xx or 429 → the head item is retried after an exponential
  backoff (1 s, 2 s, 4 s … capped at ``max_backoff`` seconds, with jitter); a :meth:`OutboxSender.wake`
  (every new record) tries again at once;
- resending is idempotent: the hub answers 200 (``created: false``) for a record id it already has,
  which counts as delivered;
- a 4xx with reason ``unknown_parent`` → PUT the item's sources (the parent ``train.py``) and retry
  once; ``key_pending`` (a private hub's admin has not approved the key yet) → backoff, like a down hub;
- ``future_timestamp`` (the record's signed ``created_at`` is ahead of the hub's clock: this
  machine's clock runs fast) → the item stays pending and is retried once the hub's clock has passed
  its ``created_at`` (from the skew the hub client measured), at most ``max_backoff`` later; the
  record cannot be re-stamped: ``created_at`` is inside the signed bytes and the record id;
- a 2xx answer the client refuses (too large, wrong schema: :class:`BadHubResponse`) → backoff: the
  delivery was not confirmed, and resending is idempotent;
- any other 4xx → the item is marked ``rejected`` with the reason and never retried automatically
  (``autoresearch outbox`` lists it; :meth:`Outbox.requeue` puts rejected items back).

A file that is not a readable SQLite outbox (corrupt, truncated, unwritable folder) raises
:class:`~autoresearch.client.errors.StateFileError` naming the file and the fix.
"""

from __future__ import annotations

import json
import logging
import random
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field

from autoresearch.protocol import Envelope, ProtocolError, parse_envelope, sha256_hex, verify

from .errors import HubError, HubUnavailable, RecordRejected, StateFileError, UsageError
from .hubclient import HubClient

_logger = logging.getLogger(__name__)

OUTBOX_FILE = "outbox.sqlite"
Kind = Literal["client", "experiment", "calibration"]
State = Literal["pending", "sent", "rejected"]
BACKOFF_REASONS = frozenset({"key_pending", "future_timestamp"})
"""4xx reasons that mean "not yet" rather than "never": retried with backoff like a down hub."""
FUTURE = "future_timestamp"
HOPELESS_FLUSH_SECONDS = 5.0
"""Seconds the final flush gives a hub the sender last found unreachable or broken (one attempt)."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    record_id TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL CHECK (kind IN ('client', 'experiment', 'calibration')),
    envelope TEXT NOT NULL,
    sources TEXT NOT NULL DEFAULT '[]',
    state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'sent', 'rejected')),
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL DEFAULT 0,
    reason TEXT,
    last_error TEXT,
    created_at TEXT NOT NULL,
    sent_at TEXT
);
CREATE INDEX IF NOT EXISTS ix_items_state_seq ON items (state, seq);
CREATE TABLE IF NOT EXISTS sources (
    sha256 TEXT PRIMARY KEY,
    text TEXT NOT NULL
);
"""


class OutboxItem(BaseModel):
    """One record in the outbox (what ``autoresearch outbox --json`` prints)."""

    model_config = ConfigDict(frozen=True)

    seq: int
    record_id: str
    kind: Kind
    state: State
    attempts: int
    next_attempt_at: float = Field(description="Unix time (s) of the next automatic attempt")
    reason: str | None = Field(default=None, description="the hub's reason code of a rejection")
    last_error: str | None = None
    created_at: datetime
    sent_at: datetime | None = None
    sources: list[str] = Field(default_factory=list, description="sha256 of train.py files to upload on unknown_parent")


class SendReport(BaseModel):
    """What one :meth:`Outbox.send_pending` pass did."""

    sent: int = 0
    already_there: int = Field(default=0, description="records the hub already had (200)")
    rejected: list[OutboxItem] = Field(default_factory=list)
    pending: int = 0
    unavailable: str | None = Field(default=None, description="why the pass stopped early (hub down)")
    reachable: bool = Field(default=True, description="False when the hub could not be connected to at all")
    retry_helps: bool = Field(
        default=True,
        description="False when retrying within seconds cannot help: the hub could not be connected to, answered "
        "what this client refuses, or refused the head record as dated in its future",
    )
    future: int = Field(default=0, description="pending items the hub refused as dated in its future")
    future_until: datetime | None = Field(
        default=None, description="when (this machine's clock) the newest of those becomes acceptable"
    )


class Outbox:
    """The outbox file of one workspace.

    Args:
        path: the SQLite file (created with its tables on first use).
        max_backoff: cap of the retry delay, seconds.
    """

    def __init__(self, path: Path, *, max_backoff: float = 300.0) -> None:
        self.path = path
        self.max_backoff = max_backoff
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StateFileError(path, f"cannot create its folder ({exc.strerror})", hint=f"make {path.parent.parent} writable") from exc
        with self._connect() as conn:
            conn.executescript(_SCHEMA)

    @classmethod
    def for_workspace(cls, root: Path, **kwargs: float) -> Outbox:
        """The outbox of the workspace at ``root`` (``root/.autoresearch/outbox.sqlite``)."""
        return cls(root / ".autoresearch" / OUTBOX_FILE, **kwargs)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """A connection; SQLite errors that mean a broken or unwritable file become :class:`StateFileError`."""
        try:
            conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        except sqlite3.Error as exc:
            raise self._file_error(exc) from exc
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.row_factory = sqlite3.Row
            yield conn
        except sqlite3.DatabaseError as exc:
            if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
                raise
            raise self._file_error(exc) from exc
        finally:
            conn.close()

    def _file_error(self, exc: sqlite3.Error) -> StateFileError:
        text = str(exc)
        if isinstance(exc, sqlite3.OperationalError) and any(w in text for w in ("unable to open", "readonly", "read-only")):
            return StateFileError(
                self.path, f"cannot write the outbox ({text})", hint=f"make {self.path.parent} writable by this user"
            )
        return StateFileError(
            self.path,
            f"is not a readable outbox ({text})",
            hint=f"move it aside (mv {self.path} {self.path}.corrupt) and run again: a new outbox is created; "
            "the experiments themselves stay in .autoresearch/experiments/",
        )

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    # -- writing ------------------------------------------------------------------------------------

    def enqueue(self, kind: Kind, envelope: Envelope, *, sources: dict[str, str] | None = None) -> str:
        """Store a signed record for delivery; returns its record id. Enqueuing it again is a no-op.

        ``sources`` maps sha256 → ``train.py`` text the hub may need (the parent of an experiment).

        Raises:
            ProtocolError: the envelope does not verify under its embedded key.
            UsageError: a source's text does not hash to its key.
        """
        record_id: str = verify(envelope).record_id
        sources = sources or {}
        for sha, text in sources.items():
            if sha256_hex(text) != sha:
                raise UsageError(f"source {sha[:12]}… does not hash to its sha256")
        with self._transaction() as conn:
            conn.executemany(
                "INSERT OR IGNORE INTO sources (sha256, text) VALUES (?, ?)", list(sources.items())
            )
            conn.execute(
                "INSERT OR IGNORE INTO items (record_id, kind, envelope, sources, created_at) VALUES (?, ?, ?, ?, ?)",
                (record_id, kind, envelope.to_json(), json.dumps(sorted(sources)), _now_iso()),
            )
        _logger.debug("outbox: queued %s %s", kind, record_id[:12])
        return record_id

    def requeue(self, reason: str | None = None) -> int:
        """Put rejected items (all, or those with ``reason``) back to pending; returns how many."""
        query = "UPDATE items SET state = 'pending', attempts = 0, next_attempt_at = 0 WHERE state = 'rejected'"
        args: tuple[str, ...] = ()
        if reason is not None:
            query += " AND reason = ?"
            args = (reason,)
        with self._transaction() as conn:
            return conn.execute(query, args).rowcount

    # -- reading ------------------------------------------------------------------------------------

    def items(self, states: tuple[State, ...] = ("pending", "rejected")) -> list[OutboxItem]:
        """Items in the given states, oldest first."""
        marks = ", ".join("?" for _ in states)
        with self._connect() as conn:
            rows = conn.execute(f"SELECT * FROM items WHERE state IN ({marks}) ORDER BY seq", states).fetchall()
        return [_item(row) for row in rows]

    def counts(self) -> dict[str, int]:
        """Number of items per state (missing states count 0)."""
        with self._connect() as conn:
            rows = conn.execute("SELECT state, COUNT(*) FROM items GROUP BY state").fetchall()
        return {"pending": 0, "sent": 0, "rejected": 0} | {row[0]: row[1] for row in rows}

    def envelope(self, record_id: str) -> Envelope:
        """The stored envelope of an item (raises ``KeyError`` for an unknown id)."""
        with self._connect() as conn:
            row = conn.execute("SELECT envelope FROM items WHERE record_id = ?", (record_id,)).fetchone()
        if row is None:
            raise KeyError(record_id)
        return parse_envelope(row[0])

    def source(self, sha256: str) -> str | None:
        """A stored source text by sha256, or None."""
        with self._connect() as conn:
            row = conn.execute("SELECT text FROM sources WHERE sha256 = ?", (sha256,)).fetchone()
        return None if row is None else str(row[0])

    # -- delivery -----------------------------------------------------------------------------------

    def send_pending(self, hub: HubClient, *, force: bool = False) -> SendReport:
        """Deliver pending items in order until the queue is empty or the hub is unavailable.

        ``force`` ignores the backoff of the head item (used on wake-up and by ``outbox --send``).
        Never raises for hub failures: they end up in the report and the items' state.
        """
        report = SendReport()
        while True:
            head = self.head()
            if head is None:
                break
            if not force and head.next_attempt_at > time.time():
                break
            force = False  # only the first attempt of a pass skips the backoff
            try:
                created = self._deliver(hub, head)
            except HubUnavailable as exc:
                if hub.interrupted:  # stopped by this process (OutboxSender.stop): no attempt, no "hub unavailable"
                    report.unavailable = str(exc)
                    report.retry_helps = True
                    break
                self._backoff(head, str(exc))
                report.unavailable = str(exc)
                report.reachable = not isinstance(exc.__cause__, httpx.TransportError)
                report.retry_helps = report.reachable
                break
            except RecordRejected as exc:
                if exc.reason == FUTURE:
                    self._backoff(head, str(exc), reason=FUTURE, at_least=self._seconds_ahead(head, hub))
                    report.unavailable = str(exc)
                    report.retry_helps = False
                    break
                if exc.reason in BACKOFF_REASONS:
                    self._backoff(head, str(exc))
                    report.unavailable = str(exc)
                    break
                report.rejected.append(self._reject(head, exc))
                continue
            except HubError as exc:  # a 2xx this client refuses: not confirmed, so not delivered
                self._backoff(head, str(exc))
                report.unavailable = str(exc)
                report.retry_helps = False
                break
            self._mark_sent(head)
            if created:
                report.sent += 1
            else:
                report.already_there += 1
        report.pending = self.counts()["pending"]
        future = [i for i in self.items(("pending",)) if i.reason == FUTURE]
        report.future = len(future)
        if future:
            report.future_until = datetime.fromtimestamp(max(i.next_attempt_at for i in future), UTC)
        return report

    def _seconds_ahead(self, item: OutboxItem, hub: HubClient) -> float:
        """Seconds until the hub's clock reaches the item's signed ``created_at`` (0 when unknown)."""
        if hub.clock_skew_seconds is None:
            return 0.0
        try:
            created: datetime = verify(self.envelope(item.record_id)).record.created_at
        except (ProtocolError, KeyError):
            return 0.0
        hub_now = time.time() - hub.clock_skew_seconds
        return max(0.0, created.timestamp() - hub_now)

    def _deliver(self, hub: HubClient, item: OutboxItem) -> bool:
        env = self.envelope(item.record_id)
        try:
            return _submit(hub, item.kind, env)
        except RecordRejected as exc:
            if exc.reason != "unknown_parent" or not item.sources:
                raise
        for sha in item.sources:
            text = self.source(sha)
            if text is not None:
                _logger.info("outbox: uploading source %s… the hub does not have", sha[:12])
                hub.put_source(sha, text)
        return _submit(hub, item.kind, env)

    def head(self) -> OutboxItem | None:
        """The oldest pending item (the next to send), or None."""
        with self._connect() as conn:
            row = conn.execute("SELECT * FROM items WHERE state = 'pending' ORDER BY seq LIMIT 1").fetchone()
        return None if row is None else _item(row)

    def _backoff(self, item: OutboxItem, error: str, *, reason: str | None = None, at_least: float = 0.0) -> None:
        """Retry ``item`` later: exponential backoff with jitter, or ``at_least`` seconds (both capped
        at ``max_backoff``); ``reason`` is kept on the pending item (``future_timestamp``)."""
        attempts = item.attempts + 1
        delay = min(self.max_backoff, max(at_least + 1.0, 2.0 ** (attempts - 1) * random.uniform(0.75, 1.0)))
        with self._transaction() as conn:
            conn.execute(
                "UPDATE items SET attempts = ?, next_attempt_at = ?, last_error = ?, reason = ? WHERE seq = ?",
                (attempts, time.time() + delay, error[:1000], reason, item.seq),
            )
        if reason == FUTURE:
            _logger.info("outbox: the hub's clock is behind this record's created_at; next try in %.0f s", delay)
        else:
            _logger.info("outbox: hub unavailable, %d pending; next try in %.0f s", self.counts()["pending"], delay)

    def _reject(self, item: OutboxItem, exc: RecordRejected) -> OutboxItem:
        with self._transaction() as conn:
            conn.execute(
                "UPDATE items SET state = 'rejected', attempts = attempts + 1, reason = ?, last_error = ? WHERE seq = ?",
                (exc.reason, str(exc)[:1000], item.seq),
            )
        _logger.warning("outbox: hub rejected %s %s… (%s): %s", item.kind, item.record_id[:12], exc.reason, exc)
        return item.model_copy(update={"state": "rejected", "reason": exc.reason, "last_error": str(exc)})

    def _mark_sent(self, item: OutboxItem) -> None:
        with self._transaction() as conn:
            conn.execute(
                "UPDATE items SET state = 'sent', attempts = attempts + 1, sent_at = ?, last_error = NULL, reason = NULL "
                "WHERE seq = ?",
                (_now_iso(), item.seq),
            )


def _submit(hub: HubClient, kind: str, env: Envelope) -> bool:
    if kind == "experiment":
        created: bool = hub.submit_experiment(env).created
    elif kind == "calibration":
        created = hub.submit_calibration(env).created
    else:
        created = hub.register(env).created
    return created


def _item(row: sqlite3.Row) -> OutboxItem:
    return OutboxItem(
        seq=row["seq"],
        record_id=row["record_id"],
        kind=row["kind"],
        state=row["state"],
        attempts=row["attempts"],
        next_attempt_at=row["next_attempt_at"],
        reason=row["reason"],
        last_error=row["last_error"],
        created_at=datetime.fromisoformat(row["created_at"]),
        sent_at=datetime.fromisoformat(row["sent_at"]) if row["sent_at"] else None,
        sources=json.loads(row["sources"]),
    )


def _now_iso() -> str:
    return datetime.now(UTC).isoformat()


class OutboxSender:
    """Background thread that delivers an outbox to one hub.

    It runs a :meth:`Outbox.send_pending` pass when woken (every :meth:`wake`), when the head item's
    backoff ends, and at least every ``idle_seconds``. :meth:`stop` ends the thread after one last
    pass bounded by ``flush_seconds`` (the HTTP timeout bounds each request).
    """

    def __init__(self, outbox: Outbox, hub: HubClient, *, idle_seconds: float = 5.0) -> None:
        self.outbox = outbox
        self.hub = hub
        self.idle_seconds = idle_seconds
        self.last_report: SendReport | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="outbox-sender", daemon=True)

    def start(self) -> OutboxSender:
        self._thread.start()
        return self

    def wake(self) -> None:
        """Try to deliver now (ignoring the current backoff once)."""
        self._wake.set()

    def stop(self, *, flush: bool = True, flush_seconds: float = 20.0) -> SendReport | None:
        """Stop the thread; with ``flush``, try to deliver what is pending first. Returns the last report.

        A request the thread has in flight is interrupted (:meth:`HubClient.interrupt`), so a hub that
        drips its answers cannot hold the exit. The flush retries for up to ``flush_seconds`` in all
        (each request's deadline is cut to what is left) while the hub answers but fails (5xx, 429: a
        busy or restarting hub); a hub that cannot be reached at all, or answers what this client
        refuses, gets one attempt (``SendReport.retry_helps``), of at most ``HOPELESS_FLUSH_SECONDS``
        when the sender's last pass already found it so.
        """
        self._stop.set()
        self._wake.set()
        self.hub.interrupt()
        try:
            self._thread.join(timeout=60.0)
        finally:
            self.hub.resume()
        if not flush:
            return self.last_report
        failing = self.last_report is not None and self.last_report.pending > 0 and not self.last_report.retry_helps
        deadline = time.monotonic() + (min(flush_seconds, HOPELESS_FLUSH_SECONDS) if failing else flush_seconds)
        configured = self.hub.deadline_seconds
        try:
            while True:
                self.hub.deadline_seconds = max(1.0, min(configured, deadline - time.monotonic()))
                self.last_report = self.outbox.send_pending(self.hub, force=True)
                report = self.last_report
                if not report.pending or not report.unavailable or not report.retry_helps or time.monotonic() > deadline:
                    return report
                time.sleep(1.0)
        finally:
            self.hub.deadline_seconds = configured

    def _run(self) -> None:
        force = True
        while not self._stop.is_set():
            try:
                self.last_report = self.outbox.send_pending(self.hub, force=force)
            except StateFileError as exc:  # the thread's edge: say why delivery stopped, once
                _logger.error("outbox delivery stopped: %s (hint: %s)", exc, exc.hint)
                return
            head = self.outbox.head()
            wait = self.idle_seconds
            if head is not None:
                wait = max(0.05, min(wait, head.next_attempt_at - time.time()))
            force = self._wake.wait(timeout=wait)
            self._wake.clear()
