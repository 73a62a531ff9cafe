"""Track specs: stable ids, derived tracks, the reference template, the shipped corpus checksum."""

from __future__ import annotations

import ast
import hashlib
import subprocess
import sys

import pytest

from autoresearch.protocol import TrackSpec
from autoresearch.trainer import tracks
from autoresearch.trainer.data import sha256_file


def test_builtin_tracks_have_content_ids_and_expected_settings() -> None:
    by_name = {t.name: t for t in tracks.builtin_tracks()}
    assert set(by_name) == {"climbmix", "cpu", "tiny"}
    for spec in by_name.values():
        assert spec.id.startswith(spec.name + "-")
        assert TrackSpec.model_validate_json(spec.model_dump_json()) == spec  # id re-validates
        assert spec.harness_version == tracks.HARNESS_VERSION
    assert (by_name["climbmix"].vocab_size, by_name["climbmix"].max_seq_len, by_name["climbmix"].time_budget) == (8192, 2048, 300.0)
    assert by_name["cpu"].time_budget == 60.0 and by_name["cpu"].device == "cpu"
    assert by_name["tiny"].time_budget < 10


def test_get_track_by_name_and_by_id() -> None:
    cpu = tracks.get_track("cpu")
    assert tracks.get_track(cpu.id) == cpu


def test_time_budget_override_gives_a_derived_track_with_its_own_id() -> None:
    base = tracks.get_track("tiny")
    derived = tracks.get_track("tiny", time_budget=7)
    assert derived.time_budget == 7.0 and derived.id != base.id and derived.name == "tiny"
    assert tracks.get_track("tiny", time_budget=base.time_budget) == base
    assert tracks.get_track("tiny", time_budget=7) == derived  # deterministic


def test_unknown_track_names_the_known_ones() -> None:
    with pytest.raises(tracks.UnknownTrack) as info:
        tracks.get_track("gpu-fast")
    assert isinstance(info.value, KeyError)
    assert "climbmix" in str(info.value) and "tiny" in str(info.value) and "gpu-fast" in str(info.value)


@pytest.mark.parametrize("bad", [0, -1, float("nan"), float("inf")])
def test_bad_time_budget_is_rejected(bad: float) -> None:
    with pytest.raises(ValueError, match="time budget"):
        tracks.get_track("tiny", time_budget=bad)


def test_reference_sources_parse_hash_to_the_spec_and_differ_only_in_constants() -> None:
    sources = {}
    for spec in tracks.builtin_tracks():
        source = tracks.reference_source(spec)
        assert hashlib.sha256(source.encode()).hexdigest() == spec.reference_sha256
        sources[spec.name] = source
        ast.parse(source)
    tiny = ast.parse(sources["tiny"])
    constants = {
        node.targets[0].id: eval(compile(ast.Expression(node.value), "<const>", "eval"), {})  # noqa: S307 - our own constants
        for node in tiny.body
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name) and node.targets[0].id.isupper()
    }
    assert constants["DEPTH"] == 2 and constants["TOTAL_BATCH_SIZE"] % (constants["DEVICE_BATCH_SIZE"] * 128) == 0
    # same model code: only assignment lines differ between tracks
    differing = [a for a, b in zip(sources["tiny"].splitlines(), sources["climbmix"].splitlines(), strict=True) if a != b]
    assert differing and all(" = " in line and line.split(" = ")[0].isupper() for line in differing)


def test_render_refuses_an_unknown_constant() -> None:
    with pytest.raises(ValueError, match="NOT_A_CONSTANT"):
        tracks._render("DEPTH = 8  # layers\n", {"NOT_A_CONSTANT": "1"})


def test_shipped_corpus_matches_the_pinned_checksum() -> None:
    path = tracks.pycorpus_path()
    assert path.is_file() and path.stat().st_size < 2 * 2**20
    assert sha256_file(path) == tracks.PYCORPUS_SHA256 == tracks.get_track("cpu").data_sha256


def test_tracks_module_imports_no_torch() -> None:
    code = "import sys, autoresearch.trainer.tracks as t; t.builtin_tracks(); t.reference_source('cpu'); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
