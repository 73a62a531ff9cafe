"""The offline climbmix cache in upstream's layout (what the GPU check trains on), built on CPU."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from autoresearch.protocol import TrackSpec
from autoresearch.trainer import climbmix, data, tracks

pytestmark = pytest.mark.slow  # trains an 8192-token BPE tokenizer (a few seconds)


@pytest.fixture(scope="module")
def upstream_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("home")
    climbmix.build_offline_cache(home / ".cache" / "autoresearch")
    return home


def test_cache_has_upstreams_layout_and_the_shipped_text(upstream_home: Path) -> None:
    root = upstream_home / ".cache" / "autoresearch"
    names = sorted(p.name for p in (root / "data").iterdir())
    assert names == ["shard_00000.parquet", "shard_00001.parquet", "shard_06542.parquet"]
    corpus = data.load_corpus(tracks.get_track("cpu"))
    texts = {n: pq.read_table(root / "data" / n).column("text").to_pylist() for n in names}
    assert [pq.ParquetFile(root / "data" / n).schema_arrow.names for n in names] == [["text"]] * 3
    assert len(texts["shard_00000.parquet"]) + len(texts["shard_00001.parquet"]) == len(corpus.train_docs)
    assert [data.encode_bytes(t).tolist() for t in texts["shard_06542.parquet"]] == [d.tolist() for d in corpus.val_docs]
    assert pq.ParquetFile(root / "data" / "shard_00000.parquet").num_row_groups > 1
    enc = pickle.loads((root / "tokenizer" / "tokenizer.pkl").read_bytes())
    assert enc.n_vocab == tracks.CLIMBMIX_VOCAB_SIZE and enc.encode_single_token(climbmix.BOS_TOKEN) == 8188
    sample = "def f(x):\n    return x ** 2  # é"
    assert enc.decode(enc.encode_ordinary(sample)) == sample
    torch = pytest.importorskip("torch")
    token_bytes = torch.load(root / "tokenizer" / "token_bytes.pt")
    assert token_bytes.dtype == torch.int32 and token_bytes.tolist() == climbmix.upstream_token_bytes(enc).tolist()


def test_harness_reads_it_as_upstreams_cache_and_packs_upstreams_eval_rows(upstream_home: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(upstream_home))
    monkeypatch.setenv("AUTORESEARCH_CACHE", str(tmp_path / "ours"))  # empty: only upstream's cache has data
    summary = climbmix.prepare(num_shards=2, client=None, base_url="http://127.0.0.1:9/unreachable", train_tokenizer_too=True)
    assert summary.downloaded == [] and len(summary.reused) == 3  # nothing to download
    spec = TrackSpec.build(**{**tracks.get_track("climbmix").model_dump(mode="json"), "eval_tokens": 8 * 2048})
    corpus = climbmix.load_climbmix(spec)
    assert corpus.vocab_size == 8192 and corpus.bos_id == 8188
    rows = data.eval_rows(corpus, spec.max_seq_len, spec.eval_tokens)
    assert rows.shape == (8, 2049) and (rows[:, 0] == corpus.bos_id).all()
    expected = data.upstream_rows(corpus.val_doc_batches(), 2049, 8)
    assert np.array_equal(rows, expected)


def test_bytes_are_counted_as_upstream_counts_them(upstream_home: Path) -> None:
    enc = pickle.loads((upstream_home / ".cache" / "autoresearch" / "tokenizer" / "tokenizer.pkl").read_bytes())
    up, exact = climbmix.upstream_token_bytes(enc), climbmix.exact_token_bytes(enc)
    assert (up[8188:] == 0).all() and (exact[8188:] == 0).all()
    differ = np.nonzero(up != exact)[0]
    assert len(differ) > 0  # byte-level merges that end inside a multi-byte character
    for i in differ[:20]:
        raw = enc.decode_single_token_bytes(int(i))
        text = raw.decode("utf-8", errors="replace")
        assert "\ufffd" in text and up[i] == len(text.encode("utf-8")) > exact[i] == len(raw)
