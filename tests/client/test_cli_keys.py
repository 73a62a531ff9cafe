"""``autoresearch --version``, ``--help`` and ``keys generate|show`` with real key files."""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cli_run import run_cli

from autoresearch.protocol import KeyPair

COMMANDS = [
    "keys", "sign", "verify", "prepare", "train", "init", "run", "calibrate", "hub",
    "join", "pull", "findings", "show", "outbox", "demo", "mcp",
]  # fmt: skip


CLAIM_JSON = json.dumps(
    {
        "schema": "autoresearch/claim/v1",
        "track": "tiny-0123456789ab",
        "parent_canonical_sha256": "a" * 64,
        "child_canonical_sha256": "b" * 64,
        "lease_seconds": 60,
        "created_at": "2026-03-14T15:09:26Z",
    }
).encode()


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    return lambda *args, stdin=None: run_cli(capsys, monkeypatch, *args, stdin=stdin)


def _entry_point() -> str:
    return str(Path(sys.executable).with_name("autoresearch"))


def test_version_from_the_installed_entry_point(tmp_path: Path) -> None:
    proc = subprocess.run([_entry_point(), "--version"], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().startswith("autoresearch ")
    version = proc.stdout.split()[1]
    assert version[0].isdigit() and version != "0+unknown"


def test_help_lists_every_command_group(cli) -> None:  # type: ignore[no-untyped-def]
    result = cli("--help")
    assert result.code == 0
    listed = set(re.findall(r"^[│|]\s+([a-z]+)\s", result.out, re.MULTILINE))  # rows of rich's Commands panel
    missing = [c for c in COMMANDS if c not in listed]
    assert not missing, f"--help does not list {missing}:\n{result.out}"


@pytest.mark.parametrize("command", [(), ("run",), ("join",), ("demo",), ("train",)])
def test_help_shows_no_placeholder_after_a_flag(cli, command: tuple[str, ...]) -> None:  # type: ignore[no-untyped-def]
    """On/off flags take no value, so ``--help`` shows none (typer 0.29 prints ``<bool>``); valued options keep theirs."""
    result = cli(*command, "--help")
    assert result.code == 0, result.err
    assert "<bool>" not in result.out, result.out
    assert "--help" in result.out and (not command or "<" in result.out)


@pytest.mark.parametrize("command", ["run", "join"])
@pytest.mark.parametrize("name", ["--experiments", "-n", "--max-experiments"])
def test_the_number_of_experiments_has_one_name_and_the_pinned_alias(cli, command: str, name: str) -> None:  # type: ignore[no-untyped-def]
    """One name per concept across commands (demo's ``--experiments/-n``); DESIGN.md's ``--max-experiments``
    still works. -1 is out of range, so each name is parsed and refused before anything runs: a usage
    error with exit status 2 and no traceback (typer 0.29's own click exceptions included)."""
    args = [command] + (["http://127.0.0.1:9"] if command == "join" else []) + [name, "-1"]
    result = cli(*args)
    assert result.code == 2, (result.out, result.err)
    assert "Invalid value for '--experiments' / '-n' / '--max-experiments'" in result.err, result.err
    assert "greater than or equal to" in result.err and "Traceback" not in result.err


def test_keys_generate_writes_a_0600_key_and_prints_its_id(cli, clean_env: Path) -> None:  # type: ignore[no-untyped-def]
    result = cli("keys", "generate")
    assert result.code == 0, result.err
    key_id = result.out.strip()
    assert len(key_id) == 64 and int(key_id, 16) >= 0
    pem = clean_env / "keys" / "ed25519.pem"
    assert stat.S_IMODE(pem.stat().st_mode) == 0o600
    assert pem.read_bytes().startswith(b"-----BEGIN " + b"PRIVATE KEY-----")  # PKCS#8 PEM
    public_hex = (clean_env / "keys" / "ed25519.pub").read_text().strip()
    assert hashlib.sha256(bytes.fromhex(public_hex)).hexdigest() == key_id
    assert not [p for p in pem.parent.iterdir() if p.name.startswith(".")], "temp files left behind"


def test_keys_generate_refuses_to_overwrite(cli, clean_env: Path) -> None:  # type: ignore[no-untyped-def]
    first = cli("keys", "generate").out.strip()
    again = cli("keys", "generate")
    assert again.code == 1
    assert "already exists" in again.err and "hint:" in again.err
    forced = cli("keys", "generate", "--force")
    assert forced.code == 0 and forced.out.strip() != first
    backups = sorted((clean_env / "keys").glob("ed25519.pem.*.bak"))
    assert len(backups) == 1 and KeyPair.load(backups[0]).key_id == first
    assert str(backups[0]) in forced.err


def test_keys_show_prints_key_id_and_public_key(cli) -> None:  # type: ignore[no-untyped-def]
    key_id = cli("keys", "generate").out.strip()
    shown = cli("keys", "show")
    assert shown.code == 0
    fields = dict(line.split(":", 1) for line in shown.out.strip().splitlines())
    assert fields["key id"].strip() == key_id
    assert hashlib.sha256(bytes.fromhex(fields["public key"].strip())).hexdigest() == key_id
    data = json.loads(cli("keys", "show", "--json").out)
    assert data["key_id"] == key_id
    assert hashlib.sha256(bytes.fromhex(data["public_key"])).hexdigest() == key_id


def test_keys_show_without_a_key_says_how_to_make_one(cli) -> None:  # type: ignore[no-untyped-def]
    result = cli("keys", "show")
    assert result.code == 1
    assert "no signing key" in result.err
    assert "autoresearch keys generate" in result.err


@pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX")
@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_key_readable_by_others_is_refused_with_chmod_hint(cli, clean_env: Path, mode: int) -> None:  # type: ignore[no-untyped-def]
    cli("keys", "generate")
    pem = clean_env / "keys" / "ed25519.pem"
    pem.chmod(mode)
    for args in (("keys", "show"), ("sign", "-")):
        result = cli(*args, stdin=CLAIM_JSON)
        assert result.code == 1
        assert result.err.splitlines()[-1] == f"hint: chmod 600 {pem}"
        assert "Traceback" not in result.err
    pem.chmod(0o600)
    assert cli("keys", "show").code == 0


def test_malformed_key_file_is_reported(cli, clean_env: Path) -> None:  # type: ignore[no-untyped-def]
    pem = clean_env / "keys" / "ed25519.pem"
    pem.parent.mkdir()
    pem.write_text("not a key\n")
    pem.chmod(0o600)
    result = cli("keys", "show")
    assert result.code == 1
    assert "not a PEM private key" in result.err


def test_home_comes_from_the_environment(cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    other_home = tmp_path / "elsewhere"
    monkeypatch.setenv("AUTORESEARCH_HOME", str(other_home))
    assert cli("keys", "generate").code == 0
    assert (other_home / "keys" / "ed25519.pem").exists()


def test_error_text_is_printed_literally(cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    """Paths (and payload excerpts) may hold [...]; rich must not read them as markup."""
    home = tmp_path / "[bold]home[/]"
    monkeypatch.setenv("AUTORESEARCH_HOME", str(home))
    cli("keys", "generate")
    pem = home / "keys" / "ed25519.pem"
    pem.chmod(0o644)
    result = cli("keys", "show")
    assert result.code == 1
    assert f"chmod 600 {pem}" in result.err


RACER = """
import sys, time
from pathlib import Path
from autoresearch.client.commands.keys import load_or_create_keys
gate = Path(sys.argv[1])
while not gate.exists():
    time.sleep(0.005)
print(load_or_create_keys().key_id)
"""


def test_concurrent_first_use_ends_with_one_key_that_every_process_reports(clean_env: Path, tmp_path: Path) -> None:
    """Attack: six processes create the key at the same moment (several `join`s started together).
    Before, each wrote its own key and reported its own id while only the last one stayed on disk."""
    gate = tmp_path / "go"
    env = {**os.environ, "AUTORESEARCH_HOME": str(clean_env)}
    procs = [
        subprocess.Popen([sys.executable, "-c", RACER, str(gate)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(6)
    ]
    gate.touch()
    outputs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err for _, err in outputs]
    reported = {out.strip() for out, _ in outputs}
    on_disk = KeyPair.load(clean_env / "keys" / "ed25519.pem").key_id
    assert reported == {on_disk}
    assert (clean_env / "keys" / "ed25519.pub").read_text().strip() == KeyPair.load(clean_env / "keys" / "ed25519.pem").public_key_hex
    assert sorted(p.name for p in (clean_env / "keys").iterdir()) == ["ed25519.pem", "ed25519.pub"]  # no temp files


def test_unwritable_home_is_one_line_naming_the_folder(cli, clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    """A home that cannot hold a keys folder (here: below a plain file, which stops root too)."""
    blocker = clean_env / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv("AUTORESEARCH_HOME", str(blocker / "home"))
    result = cli("keys", "generate")
    assert result.code == 1
    assert "Traceback" not in result.err
    lines = result.err.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("error: cannot write") and str(blocker) in lines[0]
    assert lines[1].startswith("hint: make") and "AUTORESEARCH_HOME" in lines[1]


def test_truncated_key_file_is_one_line_with_the_fix(cli, clean_env: Path) -> None:  # type: ignore[no-untyped-def]
    assert cli("keys", "generate").code == 0
    pem = clean_env / "keys" / "ed25519.pem"
    pem.write_bytes(pem.read_bytes()[:40])
    result = cli("keys", "show")
    assert result.code == 1 and "Traceback" not in result.err
    assert f"{pem} is not a PEM private key" in result.err and "keys generate --force" in result.err
