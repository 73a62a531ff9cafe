"""Ed25519 key files: key id, atomic 0600 files, refusal of permissive or malformed files."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest

from autoresearch.protocol import KeyFileError, KeyPair, key_id, load_public_key


def test_key_id_is_sha256_of_raw_public_key() -> None:
    keys = KeyPair.generate()
    raw = bytes.fromhex(keys.public_key_hex)
    assert len(raw) == 32
    assert keys.key_id == hashlib.sha256(raw).hexdigest() == key_id(raw) == key_id(load_public_key(raw))


def test_save_and_load(tmp_path: Path) -> None:
    keys = KeyPair.generate()
    path = tmp_path / "keys" / "ed25519.pem"
    keys.save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert path.with_suffix(".pub").read_text().strip() == keys.public_key_hex
    assert KeyPair.load(path).key_id == keys.key_id
    assert sorted(p.name for p in path.parent.iterdir()) == ["ed25519.pem", "ed25519.pub"]  # no temp files


def test_save_never_overwrites(tmp_path: Path) -> None:
    path = tmp_path / "ed25519.pem"
    KeyPair.generate().save(path)
    before = path.read_bytes()
    with pytest.raises(KeyFileError) as info:
        KeyPair.generate().save(path)
    assert info.value.reason == "key_exists"
    assert path.read_bytes() == before


@pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX")
def test_load_refuses_group_or_world_access(tmp_path: Path) -> None:
    path = tmp_path / "ed25519.pem"
    KeyPair.generate().save(path)
    for mode in (0o644, 0o640, 0o604, 0o620, 0o602, 0o610):
        path.chmod(mode)
        with pytest.raises(KeyFileError, match="accessible by other users") as info:
            KeyPair.load(path)
        assert info.value.reason == "key_permissions"
        assert info.value.hint == f"chmod 600 {path}"
    path.chmod(0o400)
    KeyPair.load(path)


def test_load_errors(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError) as info:
        KeyPair.load(tmp_path / "missing.pem")
    assert info.value.reason == "key_missing"
    bad = tmp_path / "bad.pem"
    bad.write_bytes(b"garbage")
    bad.chmod(0o600)
    with pytest.raises(KeyFileError) as info:
        KeyPair.load(bad)
    assert info.value.reason == "key_malformed"
