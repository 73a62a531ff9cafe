"""Bulk import of signed history (``autoresearch hub import``): a lab's outbox dump or another hub's
envelopes, through the same verification as the API and the bulk row path of the store.

Each envelope is verified exactly as its route verifies it — registrations under the key they
announce (:func:`autoresearch.hub.ingest.verify_registration` and the record bounds), calibrations
and experiments under their signer's registered, active key (:func:`autoresearch.hub.deps.signed_by_active_key`),
then :func:`autoresearch.hub.limits.check_record` and, for experiments,
:func:`autoresearch.hub.ingest.check_experiment_under` (the diff applied to the parent, hashes,
canonical hashes, bounds, directions, fingerprints). This runs on the hub's side of the trust
boundary over untrusted input: sources are parsed by ``ast``, never executed, and nothing a record
claims about its own statistics is taken (the store recomputes them).

Differences from the API, by design: an import is an admin's act, so quotas do not apply and
imported registrations are ``active``; experiments are stored with :func:`autoresearch.hub.store.bulk_load`
in batches (one transaction per batch, CPU checks before it), which runs no near-duplicate search.
A record that fails a check is counted with its reason and skipped; the rest go on.

Parents: an experiment's parent ``train.py`` is looked up in the sources given with the import
(an outbox's ``sources`` table), then among the children already imported, then in the hub's
``sources``, then the track's reference. An experiment whose parent is nowhere is refused with
``unknown_parent``.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from autoresearch.protocol import (
    CALIBRATION_SCHEMA,
    CLIENT_SCHEMA,
    EXPERIMENT_SCHEMA,
    CalibrationRecord,
    ExperimentRecord,
    ProtocolError,
    parse_envelope,
    payload_type,
    sha256_hex,
    utc_now,
)

from . import ingest, limits, store
from .catalog import TrackCatalog
from .deps import signed_by_active_key
from .errors import HubError, from_protocol
from .ingest import CheckedExperiment
from .models import Experiment
from .settings import HubSettings

_logger = logging.getLogger(__name__)

IMPORT_BATCH = 2000
"""Experiments per ``bulk_load`` transaction."""


@dataclass
class ImportReport:
    """What an import did: records stored per kind, records already stored, refusals by reason."""

    stored: Counter[str] = field(default_factory=Counter)
    already: int = 0
    refused: Counter[str] = field(default_factory=Counter)

    @property
    def total(self) -> int:
        return sum(self.stored.values()) + self.already + sum(self.refused.values())


class Importer:
    """Verify and store envelopes in order (see the module docstring). Use :meth:`add` for each
    envelope's bytes, then :meth:`finish`; :attr:`report` holds the counts.

    Args:
        sessions: session factory on a migrated hub database.
        settings: the hub's bounds (the same the API applies).
        catalog: tracks the hub serves.
        sources: ``{sha256: train.py}`` shipped with the import (e.g. an outbox's); each is checked
            against its hash before use.
        batch: experiments per bulk transaction.
    """

    def __init__(self, sessions: sessionmaker[Session], settings: HubSettings, catalog: TrackCatalog, *,
                 sources: Mapping[str, str] | None = None, batch: int = IMPORT_BATCH) -> None:
        if batch < 1:
            raise ValueError(f"batch must be at least 1, not {batch}")
        self.sessions = sessions
        self.settings = settings
        self.catalog = catalog
        self.batch = batch
        self.report = ImportReport()
        self._sources = {sha: text for sha, text in (sources or {}).items() if sha256_hex(text) == sha}
        self._pending: list[tuple[CheckedExperiment, str]] = []
        self._pending_ids: set[str] = set()

    def add_source(self, sha256: str, text: str) -> None:
        """Offer a ``train.py`` a later experiment may name as its parent (ignored unless it hashes to ``sha256``)."""
        if sha256_hex(text) == sha256:
            self._sources.setdefault(sha256, text)

    def add(self, body: bytes) -> None:
        """Verify one envelope and store it (registrations and calibrations at once, experiments
        with the next batch). A refusal is counted in the report, never raised."""
        try:
            schema = _schema_of(body)
            if schema == CLIENT_SCHEMA:
                self._register(body)
            elif schema == CALIBRATION_SCHEMA:
                self._flush()  # experiments before it take its figures through the store's late link
                self._calibration(body)
            elif schema == EXPERIMENT_SCHEMA:
                self._experiment(body)
            else:
                self.report.refused["unknown_schema"] += 1
        except HubError as exc:
            self.report.refused[exc.code] += 1
            _logger.debug("import: refused %s: %s", exc.code, exc.message)

    def finish(self) -> ImportReport:
        """Store the experiments still waiting; returns the report."""
        self._flush()
        return self.report

    def _register(self, body: bytes) -> None:
        verified = ingest.verify_registration(body, CLIENT_SCHEMA)
        limits.check_record(verified.record, None)
        with self.sessions() as session:
            _, created = store.register_client(session, verified, status="active", envelope_json=body.decode("utf-8"))
            session.commit()
        self._count("client", created)

    def _calibration(self, body: bytes) -> None:
        with self.sessions() as session:
            verified = signed_by_active_key(session, body, CALIBRATION_SCHEMA)
            record = verified.record
            assert isinstance(record, CalibrationRecord)  # the schema was checked
            spec = self.catalog.get_by_id(record.track)
            limits.check_record(record, spec)
            ingest.check_not_future(record.created_at, utc_now(), self.settings.max_future_seconds)
            created = store.add_calibration(session, verified, envelope_json=body.decode("utf-8"))
            session.commit()
        self._count("calibration", created)

    def _experiment(self, body: bytes) -> None:
        with self.sessions() as session:
            verified = signed_by_active_key(session, body, EXPERIMENT_SCHEMA)
            record = verified.record
            assert isinstance(record, ExperimentRecord)
            if verified.record_id in self._pending_ids or store.experiment_exists(session, verified.record_id):
                self.report.already += 1
                return
            spec = self.catalog.get_by_id(record.track)
            limits.check_record(record, spec)
            parent = self._sources.get(record.parent_sha256)
            if parent is None:
                parent = store.get_source(session, record.parent_sha256)
        if parent is None and record.parent_sha256 == spec.reference_sha256:
            parent = self.catalog.reference_source(spec)
        if parent is None:
            self.report.refused["unknown_parent"] += 1
            return
        checked = ingest.check_experiment_under(verified, spec, parent, self.settings, now=utc_now())
        self._sources.setdefault(record.child_sha256, checked.child_source)  # a later record's parent
        self._pending.append((checked, body.decode("utf-8")))
        self._pending_ids.add(verified.record_id)
        if len(self._pending) >= self.batch:
            self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        items, envelopes = zip(*self._pending, strict=True)
        with self.sessions() as session:
            ids = [c.verified.record_id for c in items]
            stored = set(session.scalars(select(Experiment.id).where(Experiment.id.in_(ids))).all())  # raced in
            keep = [(c, e) for c, e in zip(items, envelopes, strict=True) if c.verified.record_id not in stored]
            if keep:
                store.bulk_load(session, [c for c, _ in keep], [e for _, e in keep])
            session.commit()
        self.report.stored["experiment"] += len(keep)
        self.report.already += len(items) - len(keep)
        self._pending.clear()
        self._pending_ids.clear()

    def _count(self, kind: str, created: bool) -> None:
        if created:
            self.report.stored[kind] += 1
        else:
            self.report.already += 1


def _schema_of(body: bytes) -> str:
    """The schema the envelope's ``payloadType`` names ("" for none we import); the signature and
    the payload's own ``schema`` are checked later, under the right key, by the route's verifier.

    Raises:
        HubError: ``malformed_json``, ``envelope_malformed``.
    """
    try:
        ptype = parse_envelope(body).payload_type
    except ProtocolError as exc:
        raise from_protocol(exc) from exc
    schema: str = _SCHEMAS.get(ptype, "")
    return schema


_SCHEMAS = {payload_type(s): s for s in (CLIENT_SCHEMA, CALIBRATION_SCHEMA, EXPERIMENT_SCHEMA)}


def import_envelopes(sessions: sessionmaker[Session], settings: HubSettings, catalog: TrackCatalog,
                     bodies: Iterable[bytes], *, sources: Mapping[str, str] | None = None,
                     batch: int = IMPORT_BATCH) -> ImportReport:
    """Verify and store every envelope of ``bodies`` in order (:class:`Importer`)."""
    importer = Importer(sessions, settings, catalog, sources=sources, batch=batch)
    for body in bodies:
        importer.add(body)
    return importer.finish()
