"""Pure parts the hub relies on: diff application and near-duplicate fingerprints (protocol.source), JSON
logs, settings."""

from __future__ import annotations

import ast
import json
import logging
import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from autoresearch.hub import limits
from autoresearch.hub.db import normalise_url
from autoresearch.hub.logs import JsonFormatter
from autoresearch.hub.settings import HubSettings
from autoresearch.protocol import ast_shape, canonical_source, sha256_hex, source
from autoresearch.protocol.source import PatchError

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
    assert source.apply_diff(REF, factory.unified_diff(REF, child), sha256_hex(child)) == child


def test_diff_refusals() -> None:
    child = factory.with_constant(REF, "DEPTH", 4)
    diff = factory.unified_diff(REF, child)
    with pytest.raises(PatchError) as wrong_hash:
        source.apply_diff(REF, diff, sha256_hex("something else"))
    assert wrong_hash.value.reason == "hash_mismatch"
    with pytest.raises(PatchError) as wrong_parent:
        source.apply_diff(factory.with_constant(REF, "DEPTH", 3), diff, sha256_hex(child))
    assert wrong_parent.value.reason == "diff_does_not_apply"
    two_files = diff + diff.replace("train.py", "other.py")
    with pytest.raises(PatchError) as many:
        source.apply_diff(REF, two_files, sha256_hex(child))
    assert many.value.reason == "diff_does_not_apply"


def test_minhash_similarity_orders_changes() -> None:
    block = "\n\ndef f(step):\n" + "".join(f"    a{i} = step * {i}\n" for i in range(30)) + "    return {last}\n"
    a = source.minhash_signature(source.diff_tokens(REF, REF + block.format(last="a1")))
    b = source.minhash_signature(source.diff_tokens(REF, REF + block.format(last="a2")))
    c = source.minhash_signature(source.diff_tokens(REF, factory.with_constant(REF, "DEPTH", 5)))
    assert a is not None and b is not None and c is not None
    assert source.jaccard(a, a) == 1.0
    assert source.jaccard(a, b) >= 0.9
    assert source.jaccard(a, c) < 0.2
    assert source.minhash_signature(source.diff_tokens(REF, REF + "# only a comment\n")) is None


def test_constant_rule_applies_to_constant_only_changes() -> None:
    lr = factory.with_constant(REF, "MATRIX_LR", 0.05)
    assert source.const_changes(REF, lr, ["MATRIX_LR ↑"]) == {"MATRIX_LR": (0.04, 0.05)}
    assert source.const_changes(REF, lr + "\ndef g():\n    return 1\n", ["MATRIX_LR ↑", "g"]) is None
    changes = source.const_changes(REF, lr, ["MATRIX_LR ↑"])
    assert changes is not None and source.load_changes(source.dump_changes(changes)) == changes


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


def _text_problem_by_definition(value: str, multiline: bool) -> str | None:
    """The per-character definition that ``limits.text_problem``'s regex scan must match."""
    for i, ch in enumerate(value):
        if ch in "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069":
            return f"U+{ord(ch):04X} (a bidi control) at {i}"
        if unicodedata.category(ch) == "Cc" and not (multiline and ch in "\t\n\r\x0c"):
            return f"U+{ord(ch):04X} (a control character) at {i}"
    return None


@settings(max_examples=300, deadline=None)
@given(
    st.text(alphabet=st.one_of(st.characters(), st.sampled_from("\t\n\r\x0c\x00\x1b\x7f\x85\x9f\u202e\u2066\u200f"))),
    st.booleans(),
)
def test_text_problem_matches_its_definition(value: str, multiline: bool) -> None:
    """A stranger's string is refused for the first control or bidi character, exactly as the
    per-character definition says (the hub's scan is one regex; a gap in its class would let one through)."""
    assert limits.text_problem(value, multiline=multiline) == _text_problem_by_definition(value, multiline)


def test_the_analysis_takes_the_tree_the_limits_parsed_and_never_a_changed_one() -> None:
    """The hub parses a child once: limits measure it and hand the tree on; the analysis takes it
    (and strips docstrings from it). A second analysis of the same text must not get that changed tree."""
    from autoresearch.protocol import canonical

    child = factory.with_constant(REF, "DEPTH", 7) + '\n\ndef helper():\n    """doc"""\n    return 1\n'
    limits.source_shape.cache_clear()
    source._analysis.cache_clear()
    limits.source_shape(child)
    assert child in canonical._HANDED_ON
    assert source.canonical_text(child) == canonical_source(child)  # the analysis took the tree…
    assert child not in canonical._HANDED_ON  # …once
    source._analysis.cache_clear()
    assert source.canonical_text(child) == canonical_source(child)  # parsed afresh: the docstring is still there
    assert '"""doc"""' in source.canonical_text(child) or "'doc'" in source.canonical_text(child)
    for i in range(20):  # children refused before analysis leave at most a few trees behind
        limits.source_shape(factory.with_constant(REF, "DEPTH", 10 + i))
    assert len(canonical._HANDED_ON) <= canonical._HANDED_ON_SIZE


def test_ast_shape_counts_every_node_and_level() -> None:
    tree = ast.parse(REF + "\nx = [[[1, (2, {3: f(a, *b, k=c)})]]]\n")

    def depth(node: ast.AST) -> int:
        return 1 + max((depth(c) for c in ast.iter_child_nodes(node)), default=0)

    assert ast_shape(tree) == (depth(tree), sum(1 for _ in ast.walk(tree)))
