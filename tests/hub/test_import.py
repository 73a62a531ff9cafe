"""``autoresearch hub import`` (issue 16, item 6): history through the API's verification and the
bulk row path, with the same stored figures as records posted one by one."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from autoresearch.client.cli import app
from autoresearch.client.outbox import Outbox
from autoresearch.hub.catalog import TrackCatalog
from autoresearch.hub.db import make_engine, session_factory
from autoresearch.hub.importer import import_envelopes
from autoresearch.hub.settings import HubSettings
from autoresearch.protocol import KeyPair, parse_envelope, record_id, sign
from autoresearch.trainer import tracks

from . import factory
from .conftest import make_hub

runner = CliRunner()
FIELDS = ("normalised", "directions", "calibration_id", "verdict", "assessment", "needs_replication", "provisional", "replications", "record")


def _history() -> tuple[list[bytes], KeyPair]:
    """Two keys' registrations and calibrations, and a chain of experiments (the third's parent is
    the first's child), as envelope bytes in the order a lab would dump them; and one signer."""
    track = factory.make_track()
    ada, bob = KeyPair.generate(), KeyPair.generate()
    bodies = [factory.envelope_bytes(factory.registration(k, n), k) for k, n in ((ada, "ada"), (bob, "bob"))]
    cals = {}
    for m, k in enumerate((ada, bob)):
        cal = factory.calibration(track, machine=m)
        cals[k.key_id] = record_id(cal)
        bodies.append(factory.envelope_bytes(cal, k))
    first = factory.with_constant(factory.REFERENCE, "MATRIX_LR", 0.05)
    second = factory.with_constant(first, "WARMUP_STEPS", 20)
    other = factory.with_constant(factory.REFERENCE, "EMBED_LR", 0.5)
    for i, (parent, child, k) in enumerate([(factory.REFERENCE, first, ada), (factory.REFERENCE, first, bob),
                                            (first, second, ada), (factory.REFERENCE, other, bob)]):
        rec = factory.experiment(track, parent, child, val_bpb=round(2.15 - 0.01 * i, 4), parent_val_bpb=2.2, seed=i,
                                 calibration_id=cals[k.key_id])
        bodies.append(factory.envelope_bytes(rec, k))
    return bodies, ada


def test_import_stores_what_the_api_stores_and_refuses_what_it_refuses(
    db_url: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Catches: an import path that skips a check the API makes, or stores other figures than the
    API (one row builder, one verification)."""
    bodies, ada = _history()
    tampered = json.loads(bodies[-1])
    tampered["signatures"][0]["sig"] = tampered["signatures"][0]["sig"][::-1]
    nobodys = factory.with_constant(factory.REFERENCE, "DEPTH", 3)  # a parent the hub never saw
    orphan = factory.envelope_bytes(factory.experiment(factory.make_track(), nobodys, factory.with_constant(nobodys, "DEPTH", 4)), ada)

    # the API, one POST at a time, on a second (SQLite) database
    shutil.copyfile(request.getfixturevalue("sqlite_template"), tmp_path / "api.db")
    serving = make_hub(f"sqlite:///{tmp_path / 'api.db'}")
    api = next(serving)
    for body in bodies:
        kind = parse_envelope(body).payload_type.split(".")[2]
        assert api.client.post(f"/api/v1/{ {'client': 'clients'}.get(kind, kind + 's') }", content=body).status_code == 201
    via_api = {e["id"]: e for e in api.client.get("/api/v1/experiments?limit=50").json()["items"]}
    next(serving, None)  # runs make_hub to its end (disposes the engine)
    assert len(via_api) == 4

    # the import, on the test's database (SQLite or PostgreSQL), batches of two
    catalog = TrackCatalog.of([(factory.make_track(), lambda: factory.REFERENCE)])
    engine = make_engine(db_url)
    try:
        report = import_envelopes(session_factory(engine), HubSettings(db_url=db_url), catalog,
                                  [*bodies, bodies[5], json.dumps(tampered).encode(), orphan, b"{not json"], batch=2)
    finally:
        engine.dispose()
    assert dict(report.stored) == {"client": 2, "calibration": 2, "experiment": 4}
    assert report.already == 1
    assert dict(report.refused) == {"bad_signature": 1, "unknown_parent": 1, "malformed_json": 1}

    serving = make_hub(db_url)
    hub = next(serving)
    via_import = {e["id"]: e for e in hub.client.get("/api/v1/experiments?limit=50").json()["items"]}
    next(serving, None)  # runs make_hub to its end (disposes the engine)
    assert via_import.keys() == via_api.keys()
    for eid, view in via_api.items():
        assert {f: via_import[eid][f] for f in FIELDS} == {f: view[f] for f in FIELDS}, eid
    assert any(v["verdict"] == "qualified" for v in via_import.values())  # the figures really were computed


def test_cli_imports_an_outbox_dump_and_json_lines(tmp_path: Path) -> None:
    """Catches: the CLI not reading an outbox's items and sources, or re-storing what it has."""
    spec = tracks.get_track("tiny")
    reference = tracks.reference_source(spec)
    keys = KeyPair.generate()
    parent = factory.with_constant(reference, "MATRIX_LR", 0.05)  # not the reference: the outbox carries it
    child = factory.with_constant(parent, "WARMDOWN_RATIO", 0.3)
    box = Outbox(tmp_path / "ws" / ".autoresearch" / "outbox.sqlite")
    box.enqueue("client", sign(factory.registration(keys, "lab"), keys))
    box.enqueue("experiment", sign(factory.experiment(spec, parent, child, parent_val_bpb=1.6), keys),
                sources={factory.sha256_hex(parent): parent})
    lines = tmp_path / "more.jsonl"
    lines.write_text(sign(factory.experiment(spec, reference, parent, seed=1), keys).to_json() + "\n\n")
    db = f"sqlite:///{tmp_path / 'hub.db'}"
    assert runner.invoke(app, ["hub", "migrate", "--db", db]).exit_code == 0
    result = runner.invoke(app, ["hub", "import", str(tmp_path / "ws"), str(lines), "--db", db, "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    first = json.loads(result.stdout)
    assert (first["stored"], first["already_stored"], first["refused"]) == ({"client": 1, "experiment": 2}, 0, {})
    again = json.loads(runner.invoke(app, ["hub", "import", str(lines), "--db", db, "--json"]).stdout)
    assert (again["stored"], again["already_stored"]) == ({}, 1)


@pytest.mark.parametrize("bad", ["missing.jsonl", "emptydir"])
def test_cli_import_names_a_bad_path(tmp_path: Path, bad: str) -> None:
    (tmp_path / "emptydir").mkdir()
    db = f"sqlite:///{tmp_path / 'hub.db'}"
    assert runner.invoke(app, ["hub", "migrate", "--db", db]).exit_code == 0
    result = runner.invoke(app, ["hub", "import", str(tmp_path / bad), "--db", db])
    assert result.exit_code != 0
