"""Golden test vectors: each good one verifies to its expected record id, each bad one fails with the
error class it is named for, and the generator reproduces the committed files byte for byte."""

from __future__ import annotations

import json
from pathlib import Path

import make_vectors
import pytest
from protocol_factories import other_keys, vector_keys

import autoresearch.protocol as protocol
from autoresearch.protocol import ProtocolError, verify

VECTORS = Path(__file__).resolve().parent / "vectors"
MANIFEST: dict[str, dict[str, str]] = json.loads((VECTORS / "manifest.json").read_text())
KEYS = json.loads((VECTORS / "test_keys.json").read_text())
GOOD = sorted(k for k, v in MANIFEST.items() if v["expect"] == "valid")
BAD = sorted(k for k, v in MANIFEST.items() if v["expect"] != "valid")


def test_manifest_lists_every_vector_file() -> None:
    on_disk = {f"{p.parent.name}/{p.name}" for p in VECTORS.glob("*/*.json")}
    assert on_disk == set(MANIFEST)
    assert len(GOOD) >= 6 and len(BAD) >= 25


def test_committed_keys_are_the_test_keys() -> None:
    assert KEYS["test_key"]["public_key"] == vector_keys().public_key_hex
    assert KEYS["test_key"]["key_id"] == vector_keys().key_id
    assert KEYS["other_key"]["key_id"] == other_keys().key_id
    assert "TEST VECTOR" in KEYS["WARNING"]


@pytest.mark.parametrize("name", GOOD)
def test_good_vector_verifies_to_expected_id(name: str) -> None:
    expected = MANIFEST[name]
    data = (VECTORS / name).read_bytes()
    for key in (None, KEYS["test_key"]["public_key"]):  # embedded key, then the pinned test key
        result = verify(data, key)
        assert result.record_id == expected["record_id"]
        assert result.keyid == expected["key_id"]
        assert result.record.model_dump(by_alias=True)["schema"] == expected["schema"]
        assert protocol.record_id(result.record) == expected["record_id"]


@pytest.mark.parametrize("name", BAD)
def test_bad_vector_fails_with_named_error(name: str) -> None:
    expected = MANIFEST[name]
    error_class = getattr(protocol, expected["expect"])
    assert issubclass(error_class, ProtocolError)
    key = KEYS["test_key"]["public_key"] if expected["verify_with"] == "test_key" else None
    with pytest.raises(ProtocolError) as info:
        verify((VECTORS / name).read_bytes(), key)
    assert type(info.value) is error_class, f"{name} ({expected['catches']}): {info.value!r}"
    assert info.value.reason == expected["reason"], f"{name}: {info.value!r}"


def test_signed_by_other_key_is_valid_under_its_own_key() -> None:
    """The envelope is well formed: only the expectation of *which* key signed makes it bad."""
    result = verify((VECTORS / "bad" / "signed_by_other_key.json").read_bytes())
    assert result.keyid == KEYS["other_key"]["key_id"]


def test_generator_reproduces_committed_vectors(tmp_path: Path) -> None:
    """Regenerating gives byte-identical files: canonical bytes and signatures have not drifted."""
    make_vectors.generate(tmp_path)
    fresh = {p.relative_to(tmp_path): p.read_bytes() for p in tmp_path.rglob("*.json")}
    committed = {p.relative_to(VECTORS): p.read_bytes() for p in VECTORS.rglob("*.json")}
    assert fresh.keys() == committed.keys()
    changed = sorted(str(k) for k in fresh if fresh[k] != committed[k])
    assert not changed, f"vectors differ from the generator's output: {changed}"
