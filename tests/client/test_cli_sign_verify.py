"""``autoresearch sign FILE`` and ``autoresearch verify FILE`` with real keys and the golden vectors."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import pytest
from cli_run import run_cli

VECTORS = Path(__file__).resolve().parents[1] / "protocol" / "vectors"
MANIFEST: dict[str, dict[str, str]] = json.loads((VECTORS / "manifest.json").read_text())
TEST_PUBLIC_KEY: str = json.loads((VECTORS / "test_keys.json").read_text())["test_key"]["public_key"]

RECORD = {
    "schema": "autoresearch/claim/v1",
    "track": "tiny-0123456789ab",
    "parent_canonical_sha256": "a" * 64,
    "child_canonical_sha256": "b" * 64,
    "lease_seconds": 60,
    "description": "MATRIX_LR 0.04 → 0.05",
    "created_at": "2026-03-14T15:09:26.535Z",
}


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    return lambda *args, stdin=None: run_cli(capsys, monkeypatch, *args, stdin=stdin)


@pytest.fixture
def signed(cli, tmp_path: Path) -> Path:  # type: ignore[no-untyped-def]
    """A key in the home, and an envelope file made by ``sign``."""
    assert cli("keys", "generate").code == 0
    record = tmp_path / "record.json"
    record.write_text(json.dumps(RECORD, indent=2, ensure_ascii=False))  # not canonical: sign canonicalises
    result = cli("sign", str(record))
    assert result.code == 0, result.err
    env = tmp_path / "envelope.json"
    env.write_text(result.out)
    return env


def _one_line_error(result) -> str:  # type: ignore[no-untyped-def]
    assert result.code == 1
    assert result.out == ""
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err
    assert lines[0].startswith("error: invalid (")
    return lines[0]


def test_sign_then_verify(cli, signed: Path) -> None:  # type: ignore[no-untyped-def]
    env = json.loads(signed.read_text())
    body = base64.b64decode(env["payload"])
    key_id = cli("keys", "show", "--json")
    key_id = json.loads(key_id.out)["key_id"]
    assert env["payloadType"] == "application/vnd.autoresearch.claim.v1+json"
    assert env["signatures"][0]["keyid"] == key_id
    result = cli("verify", str(signed))
    assert result.code == 0, result.err
    assert "valid autoresearch/claim/v1" in result.out
    assert f"record id: {hashlib.sha256(body).hexdigest()}" in result.out
    assert f"key id:    {key_id}" in result.out
    assert "description: MATRIX_LR 0.04 → 0.05" in result.out


def test_verify_json_output(cli, signed: Path) -> None:  # type: ignore[no-untyped-def]
    data = json.loads(cli("verify", "--json", str(signed)).out)
    assert data["record"] == {**RECORD, "created_at": "2026-03-14T15:09:26.535000Z"}
    assert len(data["record_id"]) == 64


def test_sign_and_verify_through_stdin(cli, signed: Path) -> None:  # type: ignore[no-untyped-def]
    again = cli("sign", "-", stdin=json.dumps(RECORD).encode())
    assert again.code == 0
    assert again.out == signed.read_text()  # Ed25519 is deterministic and the bytes are canonical
    assert cli("verify", "-", stdin=signed.read_bytes()).code == 0


def test_verify_bad_signature(cli, signed: Path) -> None:  # type: ignore[no-untyped-def]
    env = json.loads(signed.read_text())
    sig = bytearray(base64.b64decode(env["signatures"][0]["sig"]))
    sig[0] ^= 1
    env["signatures"][0]["sig"] = base64.b64encode(bytes(sig)).decode()
    signed.write_text(json.dumps(env))
    assert "(bad_signature)" in _one_line_error(cli("verify", str(signed)))


def test_verify_under_another_public_key(cli, signed: Path) -> None:  # type: ignore[no-untyped-def]
    line = _one_line_error(cli("verify", "--public-key", TEST_PUBLIC_KEY, str(signed)))
    assert "does not match key id" in line


def test_verify_unknown_schema(cli, signed: Path) -> None:  # type: ignore[no-untyped-def]
    env = json.loads(signed.read_text())
    env["payloadType"] = "application/vnd.autoresearch.unknown.v1+json"
    signed.write_text(json.dumps(env))
    assert "(unknown_payload_type)" in _one_line_error(cli("verify", str(signed)))


def test_verify_non_canonical_payload(cli) -> None:  # type: ignore[no-untyped-def]
    line = _one_line_error(cli("verify", str(VECTORS / "bad" / "reordered_keys.json")))
    assert "(non_canonical)" in line and "first difference at byte" in line


def test_verify_malformed_json(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    bad = tmp_path / "bad.json"
    bad.write_text('{"payloadType": ')
    assert "(malformed_json)" in _one_line_error(cli("verify", str(bad)))


def test_verify_missing_file(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    assert "(unreadable)" in _one_line_error(cli("verify", str(tmp_path / "nope.json")))


@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_verify_golden_vectors(cli, name: str) -> None:  # type: ignore[no-untyped-def]
    """Every good vector exits 0 with its record id; every bad one exits 1 with its reason code."""
    expected = MANIFEST[name]
    key = ["--public-key", TEST_PUBLIC_KEY] if expected.get("verify_with", "test_key") == "test_key" else []
    result = cli("verify", *key, str(VECTORS / name))
    if expected["expect"] == "valid":
        assert result.code == 0, result.err
        assert f"record id: {expected['record_id']}" in result.out
    else:
        assert f"({expected['reason']})" in _one_line_error(result)


def test_sign_rejects_an_invalid_record(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cli("keys", "generate")
    bad = tmp_path / "record.json"
    bad.write_text(json.dumps({**RECORD, "lease_seconds": 0}))
    result = cli("sign", str(bad))
    assert result.code == 1 and result.out == ""
    assert "lease_seconds" in result.err
    bad.write_text(json.dumps({**RECORD, "schema": "autoresearch/nope/v1"}))
    assert "unknown schema" in cli("sign", str(bad)).err


def test_sign_without_a_key_says_how_to_make_one(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    record = tmp_path / "record.json"
    record.write_text(json.dumps(RECORD))
    result = cli("sign", str(record))
    assert result.code == 1
    assert "autoresearch keys generate" in result.err
