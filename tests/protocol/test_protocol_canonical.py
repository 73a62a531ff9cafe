"""RFC 8785 canonical JSON, record ids and the canonical form of a ``train.py``.

Expected outputs are the RFC 8785 examples (§3.2.2.2 strings, §3.2.3 key order, Appendix B numbers).
"""

from __future__ import annotations

import struct

import pytest
from protocol_factories import experiment

from autoresearch.protocol import (
    SchemaError,
    canonical_bytes,
    canonical_json,
    canonical_source,
    canonical_source_sha256,
    record_id,
    sha256_hex,
)

# RFC 8785 Appendix B: IEEE 754 bits → canonical text.
APPENDIX_B = [
    (0x0000000000000000, "0"),
    (0x8000000000000000, "0"),  # minus zero
    (0x0000000000000001, "5e-324"),
    (0x8000000000000001, "-5e-324"),
    (0x7FEFFFFFFFFFFFFF, "1.7976931348623157e+308"),
    (0xFFEFFFFFFFFFFFFF, "-1.7976931348623157e+308"),
    (0x4340000000000000, "9007199254740992"),
    (0xC340000000000000, "-9007199254740992"),
    (0x4430000000000000, "295147905179352830000"),
    (0x44B52D02C7E14AF5, "9.999999999999997e+22"),
    (0x44B52D02C7E14AF6, "1e+23"),
    (0x44B52D02C7E14AF7, "1.0000000000000001e+23"),
    (0x444B1AE4D6E2EF4E, "999999999999999700000"),
    (0x444B1AE4D6E2EF4F, "999999999999999900000"),
    (0x444B1AE4D6E2EF50, "1e+21"),
    (0x3EB0C6F7A0B5ED8C, "9.999999999999997e-7"),
    (0x3EB0C6F7A0B5ED8D, "0.000001"),
    (0x41B3DE4355555553, "333333333.3333332"),
    (0x41B3DE4355555554, "333333333.33333325"),
    (0x41B3DE4355555555, "333333333.3333333"),
    (0x41B3DE4355555556, "333333333.3333334"),
    (0x41B3DE4355555557, "333333333.33333343"),
    (0xBECBF647612F3696, "-0.0000033333333333333333"),
    (0x43143FF3C1CB0959, "1424953923781206.2"),
]


def _float(bits: int) -> float:
    return struct.unpack(">d", bits.to_bytes(8, "big"))[0]


@pytest.mark.parametrize(("bits", "expected"), APPENDIX_B, ids=[e for _, e in APPENDIX_B])
def test_numbers_follow_rfc8785_appendix_b(bits: int, expected: str) -> None:
    assert canonical_json(_float(bits)) == expected.encode()


def test_keys_sort_by_utf16_code_units() -> None:
    """RFC 8785 §3.2.3: U+1F600 (surrogates D83D DE00) sorts before U+FB33, unlike code-point order."""
    value = {
        "\u20ac": "Euro Sign",
        "\r": "Carriage Return",
        "\ufb33": "Hebrew Letter Dalet With Dagesh",
        "1": "One",
        "\U0001f600": "Emoji: Grinning Face",
        "\u0080": "Control",
        "\u00f6": "Latin Small Letter O With Diaeresis",
    }
    out = canonical_json(value).decode("utf-8")
    order = [out.index(f'"{k}"') if k != "\r" else out.index('"\\r"') for k in ("\r", "1", "\u0080", "\u00f6", "\u20ac", "\U0001f600", "\ufb33")]
    assert order == sorted(order)


def test_nested_key_order_and_no_whitespace() -> None:
    assert canonical_json({"b": [3, {"z": 1, "a": None}], "a": True}) == b'{"a":true,"b":[3,{"a":null,"z":1}]}'


def test_string_escapes_rfc8785_example() -> None:
    """§3.2.2.2: control characters as lowercase \\u00XX except the short forms; '/' not escaped;
    non-ASCII as raw UTF-8."""
    value = "\u20ac$\u000f\u000aA'\u0042\u0022\u005c\\\"/"
    assert canonical_json(value) == '"€$\\u000f\\nA\'B\\"\\\\\\\\\\"/"'.encode()


def test_unicode_is_not_normalised() -> None:
    """NFC and NFD spellings of é are different strings and stay different (RFC 8785 §3.2.2.2)."""
    assert canonical_json("\u00e9") != canonical_json("e\u0301")
    assert canonical_json("\u00e9") == '"é"'.encode()


@pytest.mark.parametrize("value", [2**53, -(2**53), 10**30, float("nan"), float("inf"), float("-inf"), {1: "x"}, {"a": {2.5}}])
def test_values_json_cannot_carry_exactly_are_rejected(value: object) -> None:
    with pytest.raises(SchemaError, match="RFC 8785"):
        canonical_json(value)


def test_largest_safe_integers_are_kept() -> None:
    assert canonical_json([2**53 - 1, -(2**53 - 1)]) == b"[9007199254740991,-9007199254740991]"


def test_record_id_is_sha256_of_canonical_bytes() -> None:
    record = experiment()
    body = canonical_bytes(record)
    assert record_id(record) == sha256_hex(body)
    assert len(record_id(record)) == 64 and record_id(record) == record_id(record).lower()
    assert record_id(experiment(description="another")) != record_id(record)


def test_record_canonical_bytes_use_json_keys_and_utc_z() -> None:
    body = canonical_bytes(experiment())
    assert b'"schema":"autoresearch/experiment/v1"' in body
    assert b"schema_" not in body
    assert b'"created_at":"2026-03-14T15:09:26.535000Z"' in body


def test_canonical_source_drops_comments_and_formatting() -> None:
    a = "X = 1  # one\n\n\ndef f( a ,b ):\n    return (a+b)\n"
    b = "# header\nX=1\ndef f(a, b):\n    return a + b\n"
    assert canonical_source(a) == canonical_source(b)
    assert canonical_source_sha256(a) == canonical_source_sha256(b)
    assert canonical_source_sha256(a) != canonical_source_sha256("X = 2\n")


def test_canonical_source_rejects_unparsable_train_py() -> None:
    with pytest.raises(SchemaError, match="line 1") as info:
        canonical_source("def broken(:\n")
    assert info.value.reason == "unparsable_source"
