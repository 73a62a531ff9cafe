"""Test helpers for the federation tests: signed records and a small in-memory hub on MockTransport.

The fake hub speaks the pinned API shapes (Accepted, ErrorBody) so the hub client and the outbox can
be tested without the real hub; the end-to-end tests in tests/e2e use the real one.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass, field

import httpx

from autoresearch.protocol import (
    ClientRegistration,
    Envelope,
    ExperimentRecord,
    KeyPair,
    RunMetrics,
    SoftwareVersions,
    canonical_source_sha256,
    sha256_hex,
    sign,
    utc_now,
    verify,
)

PARENT = "LR = 0.01\nSTEPS = 10\n"


def experiment_record(parent: str = PARENT, child: str | None = None, *, val_bpb: float = 1.5) -> ExperimentRecord:
    """A valid ``ok``/``keep`` experiment record for ``parent`` → ``child``."""
    child = child if child is not None else parent.replace("0.01", "0.02")
    diff = "".join(difflib.unified_diff(parent.splitlines(True), child.splitlines(True), "a/train.py", "b/train.py"))
    return ExperimentRecord(
        track="tiny-000000000000",
        parent_sha256=sha256_hex(parent),
        child_sha256=sha256_hex(child),
        parent_canonical_sha256=canonical_source_sha256(parent),
        child_canonical_sha256=canonical_source_sha256(child),
        diff=diff,
        description="LR 0.01 → 0.02",
        outcome="ok",
        status="keep",
        metrics=RunMetrics(val_bpb=val_bpb),
        hardware_class="cpu:test:2",
        software=SoftwareVersions(python="3.12"),
        harness_version="1",
        created_at=utc_now(),
    )


def registration(keys: KeyPair, name: str = "tester") -> Envelope:
    return sign(
        ClientRegistration(public_key=keys.public_key_hex, display_name=name, created_at=utc_now()), keys
    )


def _error(status: int, code: str, message: str = "") -> httpx.Response:
    return httpx.Response(status, json={"error": {"code": code, "message": message or code, "status": status}})


@dataclass
class FakeHub:
    """In-memory hub: registered keys, experiments by record id, sources by sha256; can go down."""

    down: bool = False
    busy: int = 0  # answer this many next requests with 503 (a busy database)
    revoked: set[str] = field(default_factory=set)
    pending_keys: set[str] = field(default_factory=set)
    known_sources: set[str] = field(default_factory=set)
    keys: set[str] = field(default_factory=set)
    records: dict[str, str] = field(default_factory=dict)
    posts: list[str] = field(default_factory=list)
    puts: list[str] = field(default_factory=list)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if self.down:
            raise httpx.ConnectError("connection refused", request=request)
        if self.busy:
            self.busy -= 1
            return _error(503, "database_unavailable", "the database is locked")
        path = request.url.path
        if request.method == "PUT" and path.startswith("/api/v1/sources/"):
            sha = path.rsplit("/", 1)[1]
            assert sha256_hex(request.content) == sha
            self.known_sources.add(sha)
            self.puts.append(sha)
            return httpx.Response(201, json={"id": sha, "created": True, "kind": "source"})
        if request.method != "POST":
            return _error(404, "not_found")
        verified = verify(request.content)
        self.posts.append(verified.record_id)
        if path == "/api/v1/clients":
            self.keys.add(verified.keyid)
            return self._accept(verified.record_id, request.content, "client")
        if verified.keyid in self.revoked:
            return _error(403, "key_revoked", "this key was revoked")
        if verified.keyid in self.pending_keys:
            return _error(403, "key_pending", "awaiting approval")
        if verified.keyid not in self.keys:
            return _error(403, "unregistered_key")
        record = verified.record
        if isinstance(record, ExperimentRecord) and record.parent_sha256 not in self.known_sources:
            return _error(409, "unknown_parent", "parent train.py unknown")
        return self._accept(verified.record_id, request.content, "experiment")

    def _accept(self, record_id: str, body: bytes, kind: str) -> httpx.Response:
        created = record_id not in self.records
        self.records.setdefault(record_id, body.decode())
        return httpx.Response(201 if created else 200, json={"id": record_id, "created": created, "kind": kind})

    def experiment_ids(self) -> list[str]:
        return [rid for rid, body in self.records.items() if json.loads(body)["payloadType"].endswith("experiment.v1+json")]
