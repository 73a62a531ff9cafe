"""``autoresearch hub serve|migrate|import|admin``: run and administer a hub.

The hub's own command group, mounted by the CLI (client/cli.py) when the ``hub`` extra is installed.
The hub's modules are imported inside the commands, so ``autoresearch --help`` stays fast.
Admin commands work on the database directly (``--db`` or ``AUTORESEARCH_HUB_DB_URL``), like
``hub migrate``: whoever can reach the database administers the hub. They never migrate it: a
database behind this hub's newest revision is refused with ``hint: run autoresearch hub migrate``
(migrating is a decision, with a backup, never a side effect of listing tokens).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer

from autoresearch.client import console
from autoresearch.client.errors import UsageError

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from .settings import HubSettings

hub_app = typer.Typer(help="Run and administer a hub (needs the `hub` extra).", no_args_is_help=True)
admin_app = typer.Typer(help="Tokens, clients, approval and revocation on a hub's database.", no_args_is_help=True)
tokens_app = typer.Typer(help="Enroll and read tokens of a private hub.", no_args_is_help=True)
hub_app.add_typer(admin_app, name="admin")
admin_app.add_typer(tokens_app, name="tokens")

DbOption = Annotated[
    str | None,
    typer.Option("--db", envvar="AUTORESEARCH_HUB_DB_URL", help="SQLAlchemy URL; default: SQLite hub.db in AUTORESEARCH_HOME."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")]


def _settings(db: str | None, **overrides: Any) -> HubSettings:
    try:
        from .settings import HubSettings
    except ImportError as exc:
        raise UsageError(f"the hub is not installed ({exc.name} is missing)", hint="pip install 'autoresearch-hub[hub]'") from exc
    values: dict[str, Any] = {k: v for k, v in overrides.items() if v is not None}
    if db is not None:
        values["db_url"] = db
    return HubSettings(**values)


@contextmanager
def _session(db: str | None) -> Iterator[Session]:
    """A session on the hub database, which must be at the newest revision (never migrated here);
    HubError becomes a one-line UsageError.

    Raises:
        UsageError: the database is not at the newest revision (hint: ``autoresearch hub migrate``),
            or the HubError of the command.
    """
    from .db import make_engine, session_factory
    from .errors import HubError
    from .migrate import SchemaNotCurrent, require_current

    settings = _settings(db)
    logging.getLogger("alembic").setLevel(logging.WARNING)  # admin output stays short
    try:
        require_current(settings.db_url)
    except SchemaNotCurrent as exc:
        raise UsageError(str(exc), hint="run autoresearch hub migrate (back the database up first)") from exc
    engine = make_engine(settings.db_url)
    try:
        with session_factory(engine)() as session:
            yield session
            session.commit()
    except HubError as exc:
        raise UsageError(exc.message) from exc
    finally:
        engine.dispose()


@hub_app.command("serve")
def serve(
    db: DbOption = None,
    host: Annotated[str, typer.Option(envvar="AUTORESEARCH_HUB_HOST", help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(envvar="AUTORESEARCH_HUB_PORT", help="TCP port.")] = 8000,
    private: Annotated[
        bool | None, typer.Option("--private/--public", envvar="AUTORESEARCH_HUB_PRIVATE", help="Reads need a token; keys enroll with a token.")
    ] = None,
    require_approval: Annotated[
        bool | None, typer.Option("--require-approval", envvar="AUTORESEARCH_HUB_REQUIRE_APPROVAL", help="Keys without an enroll token wait for `hub admin approve`.")
    ] = None,
) -> None:
    """Migrate the database, then serve the API (/api/v1, /docs) and the pages."""
    settings = _settings(db, private=private, require_approval=require_approval)
    import uvicorn

    from . import logs
    from .app import create_app
    from .migrate import upgrade

    logs.configure(settings.json_logs)
    upgrade(settings.db_url)
    if settings.private and settings.admin_token is None:
        console.info("private hub without AUTORESEARCH_HUB_ADMIN_TOKEN: use `autoresearch hub admin tokens create` for tokens")
    console.info(f"hub on http://{host}:{port} (database: {settings.db_url.split('://')[0]}, {'private' if settings.private else 'public'})")
    uvicorn.run(create_app(settings), host=host, port=port, log_config=None, access_log=False)


@hub_app.command("migrate")
def migrate(db: DbOption = None) -> None:
    """Apply the database migrations (Alembic) and exit."""
    settings = _settings(db)
    from .migrate import upgrade

    upgrade(settings.db_url)
    console.info("database is at the newest schema")


@tokens_app.command("create")
def tokens_create(
    kind: Annotated[str, typer.Option("--kind", help="enroll (register keys, read) or read.")] = "enroll",
    label: Annotated[str, typer.Option(help="What the token is for.")] = "",
    db: DbOption = None,
) -> None:
    """Make a token and print it once on stdout (only its hash is stored)."""
    if kind not in ("enroll", "read"):
        raise UsageError(f"--kind must be enroll or read, not {kind!r}")
    from . import store

    with _session(db) as session:
        token = store.create_token(session, kind, label)
    console.out().print(token, highlight=False)


@tokens_app.command("list")
def tokens_list(db: DbOption = None, json_: JsonOption = False) -> None:
    """Tokens by id (never the tokens themselves)."""
    from . import store

    with _session(db) as session:
        rows = store.list_tokens(session)
    if json_:
        console.print_json([{"id": t.id, "kind": t.kind, "label": t.label, "created_at": t.created_at.isoformat(), "revoked": t.revoked} for t in rows])
        return
    for t in rows:
        console.out().print(f"{t.id}\t{t.kind}\t{'revoked' if t.revoked else 'live'}\t{t.created_at:%Y-%m-%d}\t{t.label}", highlight=False)


@tokens_app.command("revoke")
def tokens_revoke(token_id: Annotated[int, typer.Argument(help="Token id from `tokens list`.")], db: DbOption = None) -> None:
    """Revoke a token: requests carrying it get 401 bad_token."""
    from . import store

    with _session(db) as session:
        store.revoke_token(session, token_id)
    console.info(f"token {token_id} revoked")


@admin_app.command("clients")
def clients(db: DbOption = None, json_: JsonOption = False) -> None:
    """Registered keys with status and experiment counts."""
    from . import store

    with _session(db) as session:
        rows = store.list_clients(session)
    if json_:
        console.print_json([c.model_dump(mode="json") for c in rows])
        return
    for c in rows:
        console.out().print(f"{c.key_id}\t{c.status}\t{c.experiments}\t{c.display_name}", highlight=False)


def _set_status(key_id: str, status: Literal["active", "revoked"], db: str | None) -> None:
    from . import store

    with _session(db) as session:
        client = store.set_client_status(session, key_id.lower(), status)
    console.info(f"{client.display_name} ({client.key_id[:12]}…) is {client.status}")


@admin_app.command("approve")
def approve(key_id: Annotated[str, typer.Argument(help="Key id of a pending client.")], db: DbOption = None) -> None:
    """Approve a pending key: its records are accepted from now on."""
    _set_status(key_id, "active", db)


@admin_app.command("revoke")
def revoke(key_id: Annotated[str, typer.Argument(help="Key id to revoke.")], db: DbOption = None) -> None:
    """Revoke a key: its new records get 403 key_revoked; its stored ones stay, marked revoked."""
    _set_status(key_id, "revoked", db)


@admin_app.command("rederive")
def rederive(
    db: DbOption = None,
    track: Annotated[str | None, typer.Option("--track", help="Only this track id (default: all).")] = None,
) -> None:
    """Recompute the hub's figures, verdicts, direction statistics and bests from the stored records
    (run once after upgrading to migration 0005)."""
    from . import store

    with _session(db) as session:
        n = store.rederive(session, track)
    console.info(f"rederived {n} experiment run(s)")


def _envelope_lines(path: Path) -> Iterator[bytes]:
    """Envelopes of a JSON-lines file (one DSSE envelope per line; blank lines skipped)."""
    with path.open("rb") as f:
        for line in f:
            if line.strip():
                yield line.strip()


def _outbox_file(path: Path) -> Path | None:
    """The outbox of a dump directory: ``outbox.sqlite`` in it, or in its ``.autoresearch/``."""
    for candidate in (path / "outbox.sqlite", path / ".autoresearch" / "outbox.sqlite"):
        if candidate.is_file():
            return candidate
    return None


@hub_app.command("import")
def import_(
    paths: Annotated[list[Path], typer.Argument(help="JSON-lines files of envelopes, or outbox dump directories.")],
    db: DbOption = None,
    batch: Annotated[int, typer.Option("--batch", min=1, help="Experiments per database transaction.")] = 2000,
    json_: JsonOption = False,
) -> None:
    """Import signed history (JSON-lines envelopes or an outbox folder), verified as the API does.

    Experiments are stored in batches (no near-duplicate search). A file is JSON lines (one DSSE
    envelope per line); a directory is an outbox dump (its outbox.sqlite, every item whatever its
    state, with the sources it carries). Refused records are counted by reason and skipped.
    """
    import time

    from autoresearch.client.outbox import Outbox

    from .catalog import TrackCatalog
    from .db import make_engine, session_factory
    from .importer import Importer
    from .migrate import SchemaNotCurrent, require_current

    settings = _settings(db)
    try:
        require_current(settings.db_url)
    except SchemaNotCurrent as exc:
        raise UsageError(str(exc), hint="run autoresearch hub migrate (back the database up first)") from exc
    for path in paths:
        if not path.exists():
            raise UsageError(f"{path} does not exist")
        if path.is_dir() and _outbox_file(path) is None:
            raise UsageError(f"{path} is a folder without an outbox.sqlite", hint="pass the workspace or its .autoresearch folder")
    engine = make_engine(settings.db_url)
    start = time.perf_counter()
    try:
        importer = Importer(session_factory(engine), settings, TrackCatalog.builtin(), batch=batch)
        for path in paths:
            outbox_path = _outbox_file(path) if path.is_dir() else None
            if outbox_path is not None:
                box = Outbox(outbox_path)
                items = box.items(("pending", "sent", "rejected"))
                for item in items:
                    for sha in item.sources:
                        text = box.source(sha)
                        if text is not None:
                            importer.add_source(sha, text)
                    importer.add(box.envelope(item.record_id).to_json().encode())
            else:
                for body in _envelope_lines(path):
                    importer.add(body)
        report = importer.finish()
    finally:
        engine.dispose()
    seconds = time.perf_counter() - start
    summary = {
        "stored": dict(report.stored), "already_stored": report.already, "refused": dict(report.refused),
        "records": report.total, "seconds": round(seconds, 2),
        "records_per_s": round(report.total / seconds, 1) if seconds > 0 else None,
    }
    if json_:
        console.print_json(summary)
        return
    stored = ", ".join(f"{n} {kind}(s)" for kind, n in sorted(report.stored.items())) or "nothing new"
    refused = ", ".join(f"{code}: {n}" for code, n in sorted(report.refused.items()))
    console.info(f"imported {stored}; {report.already} already stored"
                 + (f"; refused {sum(report.refused.values())} ({refused})" if refused else "")
                 + f" — {report.total} records in {seconds:.1f} s ({summary['records_per_s']} records/s)")


def register(app: typer.Typer) -> None:
    app.add_typer(hub_app, name="hub")
