"""Pure parts of the hub: diff application, near-duplicate fingerprints, JSON logs, settings."""

from __future__ import annotations

import json
import logging

import pytest

from autoresearch.hub import dedup
from autoresearch.hub.db import normalise_url
from autoresearch.hub.errors import Rejected
from autoresearch.hub.logs import JsonFormatter
from autoresearch.hub.patch import apply_to
from autoresearch.hub.settings import HubSettings
from autoresearch.protocol import sha256_hex

from . import factory

REF = factory.REFERENCE


@pytest.mark.parametrize(
    "child",
    [
        factory.with_constant(REF, "DEPTH", 4),
        REF + "EXTRA = 1",  # no newline at the end
        REF.rstrip("\n"),
        "X = 1\n" + REF,
        REF,
    ],
)
def test_diff_applies_exactly(child: str) -> None:
    assert apply_to(REF, factory.unified_diff(REF, child), sha256_hex(child)) == child


def test_diff_refusals() -> None:
    child = factory.with_constant(REF, "DEPTH", 4)
    diff = factory.unified_diff(REF, child)
    with pytest.raises(Rejected) as wrong_hash:
        apply_to(REF, diff, sha256_hex("something else"))
    assert wrong_hash.value.code == "hash_mismatch"
    with pytest.raises(Rejected) as wrong_parent:
        apply_to(factory.with_constant(REF, "DEPTH", 3), diff, sha256_hex(child))
    assert wrong_parent.value.code == "diff_does_not_apply"
    two_files = diff + diff.replace("train.py", "other.py")
    with pytest.raises(Rejected) as many:
        apply_to(REF, two_files, sha256_hex(child))
    assert many.value.code == "diff_does_not_apply"


def test_minhash_similarity_orders_changes() -> None:
    block = "\n\ndef f(step):\n" + "".join(f"    a{i} = step * {i}\n" for i in range(30)) + "    return {last}\n"
    a = dedup.minhash_bytes(dedup.diff_tokens(REF, REF + block.format(last="a1")))
    b = dedup.minhash_bytes(dedup.diff_tokens(REF, REF + block.format(last="a2")))
    c = dedup.minhash_bytes(dedup.diff_tokens(REF, factory.with_constant(REF, "DEPTH", 5)))
    assert a is not None and b is not None and c is not None
    assert dedup.jaccard(a, a) == 1.0
    assert dedup.jaccard(a, b) >= 0.9
    assert dedup.jaccard(a, c) < 0.2
    assert dedup.minhash_bytes(dedup.diff_tokens(REF, REF + "# only a comment\n")) is None


def test_constant_rule_applies_to_constant_only_changes() -> None:
    lr = factory.with_constant(REF, "MATRIX_LR", 0.05)
    assert dedup.const_changes(REF, lr, ["MATRIX_LR ↑"]) == {"MATRIX_LR": (0.04, 0.05)}
    assert dedup.const_changes(REF, lr + "\ndef g():\n    return 1\n", ["MATRIX_LR ↑", "g"]) is None
    changes = dedup.const_changes(REF, lr, ["MATRIX_LR ↑"])
    assert changes is not None and dedup.load_changes(dedup.dump_changes(changes)) == changes


def test_json_log_lines_keep_extra_fields() -> None:
    record = logging.LogRecord("autoresearch.hub.app", logging.INFO, __file__, 1, "request", None, None)
    record.status = 201
    record.path = "/api/v1/experiments"
    line = json.loads(JsonFormatter().format(record))
    assert (line["level"], line["logger"], line["msg"], line["status"], line["path"]) == (
        "info", "autoresearch.hub.app", "request", 201, "/api/v1/experiments"
    )


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch, clean_env: object) -> None:
    monkeypatch.setenv("AUTORESEARCH_HUB_PRIVATE", "1")
    monkeypatch.setenv("AUTORESEARCH_HUB_ADMIN_TOKEN", "s3cret")
    settings = HubSettings()
    assert settings.private is True
    assert settings.admin_token is not None and settings.admin_token.get_secret_value() == "s3cret"
    assert settings.db_url.endswith("ar-home/hub.db") and settings.db_url.startswith("sqlite:///")
    assert "s3cret" not in repr(settings)
    assert normalise_url("postgresql://u:p@h/db") == "postgresql+psycopg://u:p@h/db"
