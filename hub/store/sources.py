"""``train.py`` sources, content-addressed by the SHA-256 of their text (``sources`` table).

The caller vouches that a key is the SHA-256 of its text where it passes both
(:func:`put_sources`: the ingest checks did); :func:`put_source` hashes the text itself.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from autoresearch.protocol import canonical_source_sha256, sha256_hex, utc_now

from ..db import begin_write
from ..models import Source
from ._common import _insert

SOURCES_PER_INSERT = 500  # rows per multi-row source insert (5 bound values each; SQLite allows 32,766)


def get_source(session: Session, sha256: str) -> str | None:
    """The ``train.py`` text stored under this SHA-256, or None."""
    return session.scalar(select(Source.text).where(Source.sha256 == sha256))


def get_sources(session: Session, sha256s: set[str]) -> dict[str, str]:
    """The stored ``train.py`` sources with these SHA-256s (unknown ones are left out), one statement."""
    if not sha256s:
        return {}
    return dict(session.execute(select(Source.sha256, Source.text).where(Source.sha256.in_(sha256s))).all())


def put_source(session: Session, text: str, canonical_sha256: str | None = None) -> bool:
    """Store a ``train.py`` content-addressed; returns True when it was new. Idempotent and race-safe."""
    sha = sha256_hex(text)
    if canonical_sha256 is None:
        canonical_sha256 = canonical_source_sha256(text)
    begin_write(session)
    stmt = (
        _insert(session)(Source)
        .values(sha256=sha, canonical_sha256=canonical_sha256, text=text, size=len(text.encode()), created_at=utc_now())
        .on_conflict_do_nothing(index_elements=["sha256"])
        .returning(Source.sha256)
    )
    return session.execute(stmt).first() is not None


def put_sources(session: Session, sources: dict[str, tuple[str, str]]) -> None:
    """Store ``{sha256: (text, canonical sha256)}`` content-addressed in multi-row inserts
    (``ON CONFLICT DO NOTHING``: idempotent and race-safe). The caller vouches that each key is the
    SHA-256 of its text (the ingest checks did)."""
    if not sources:
        return
    begin_write(session)
    now = utc_now()
    rows = [{"sha256": sha, "canonical_sha256": canonical, "text": text, "size": len(text.encode()), "created_at": now}
            for sha, (text, canonical) in sources.items()]
    for i in range(0, len(rows), SOURCES_PER_INSERT):
        stmt = _insert(session)(Source).values(rows[i : i + SOURCES_PER_INSERT])
        session.execute(stmt.on_conflict_do_nothing(index_elements=["sha256"]))


def _source_by_canonical(session: Session, canonical_sha256: str) -> str | None:
    return session.scalar(select(Source.text).where(Source.canonical_sha256 == canonical_sha256).limit(1))
