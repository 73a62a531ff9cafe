"""Packing invariants of the BOS-aligned best-fit dataloader and the offline corpus loader."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from autoresearch.trainer import data, tracks

BOS = 0


def _docs(lengths: list[int]) -> list[np.ndarray]:
    """Document i is BOS followed by ``lengths[i]`` copies of token i + 1 (so tokens name their doc)."""
    return [np.array([BOS] + [i + 1] * n, dtype=np.int64) for i, n in enumerate(lengths)]


def _epochs(docs: list[np.ndarray], n: int):
    for epoch in range(1, n + 1):
        for doc in docs:
            yield doc, epoch


@settings(max_examples=60, deadline=None)
@given(
    lengths=st.lists(st.integers(min_value=1, max_value=90), min_size=1, max_size=40),
    row_len=st.integers(min_value=2, max_value=64),
    buffer_size=st.integers(min_value=1, max_value=16),
)
def test_rows_start_with_bos_have_no_padding_and_lose_no_token(lengths: list[int], row_len: int, buffer_size: int) -> None:
    docs = _docs(lengths)
    rows = list(data.BestFitPacker(_epochs(docs, 2), row_len, BOS, buffer_size=buffer_size))
    for row in rows:
        assert row.shape == (row_len,) and row[0] == BOS
    emitted = Counter(int(t) for row in rows for t in row if t != BOS)
    expected = Counter({i + 1: 2 * n for i, n in enumerate(lengths)})
    # only what cannot fill a last whole row may be left over, across the epoch boundary too
    assert not emitted - expected
    assert sum((expected - emitted).values()) < row_len


def test_document_pieces_keep_their_order() -> None:
    doc = np.concatenate([[BOS], np.arange(1, 200)])
    rows = list(data.BestFitPacker([(doc, 1)], 16, BOS))
    text = [int(t) for row in rows for t in row if t != BOS]
    assert text == sorted(text) and len(text) >= 199 - 16


def test_best_fit_prefers_the_largest_document_that_fits() -> None:
    docs = _docs([3, 9, 5])  # segment lengths 4, 10, 6
    row = data.BestFitPacker(((d, 1) for d in docs), 10, BOS).next_row()
    assert row is not None and list(row) == [BOS] + [2] * 9


def test_packer_rejects_a_document_without_bos() -> None:
    with pytest.raises(ValueError, match="BOS"):
        data.BestFitPacker([(np.array([5, 6, 7]), 1)], 4, BOS).next_row()


def test_training_stream_is_seeded_and_reshuffles_each_epoch() -> None:
    corpus = data.load_corpus(tracks.get_track("tiny"))
    n = len(corpus.train_docs)

    def order(seed: int, count: int) -> list[tuple[int, int]]:
        stream = corpus.train_stream(seed=seed)
        ids = {id(d): i for i, d in enumerate(corpus.train_docs)}
        return [(ids[id(d)], e) for d, e in (next(stream) for _ in range(count))]

    two_epochs = order(3, 2 * n)
    assert [e for _, e in two_epochs] == [1] * n + [2] * n
    first, second = [i for i, _ in two_epochs[:n]], [i for i, _ in two_epochs[n:]]
    assert sorted(first) == sorted(second) == list(range(n))  # every document once per epoch
    assert first != second
    assert order(3, 20) == two_epochs[:20] and order(4, 20) != two_epochs[:20]


def test_eval_rows_are_fixed_and_bos_aligned() -> None:
    track = tracks.get_track("tiny")
    corpus = data.load_corpus(track)
    a = data.eval_rows(corpus, track.max_seq_len, track.eval_tokens)
    b = data.eval_rows(data.load_corpus(track), track.max_seq_len, track.eval_tokens)
    assert a.shape == (track.eval_tokens // track.max_seq_len, track.max_seq_len + 1)
    assert np.array_equal(a, b) and (a[:, 0] == data.BYTES_BOS_ID).all()
    assert a.max() <= data.BYTES_BOS_ID and a.min() >= 0


def test_corpus_with_wrong_checksum_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "corpus.jsonl.xz"
    shutil.copy(tracks.pycorpus_path(), bad)
    with bad.open("ab") as fh:
        fh.write(b"\0")
    with pytest.raises(data.DataError, match="SHA-256"):
        data.load_pycorpus(tracks.get_track("cpu"), path=bad)


def test_byte_tokenizer_counts_utf8_bytes() -> None:
    ids = data.encode_bytes("é!")
    assert list(ids) == [data.BYTES_BOS_ID, 0xC3, 0xA9, ord("!")]
    corpus = data.load_corpus(tracks.get_track("tiny"))
    assert corpus.token_bytes[data.BYTES_BOS_ID] == 0 and corpus.token_bytes[:256].sum() == 256


def test_long_documents_are_spread_round_robin_not_cut_into_consecutive_rows() -> None:
    docs = _docs([1000] * 8)
    packer = data.BestFitPacker(((d, 1) for d in docs), 16, BOS, buffer_size=8)
    first = [next(iter(packer)) for _ in range(8)]
    sources = [int(row[1]) for row in first]
    assert sorted(sources) == list(range(1, 9))  # eight rows, eight different documents


# --------------------------------------------------------------------------------------------------
# Evaluation rows


@pytest.mark.parametrize("name", ["tiny", "cpu"])
def test_eval_rows_are_unique_and_spread_over_one_pass_of_the_val_split(name: str) -> None:
    track = tracks.get_track(name)
    corpus = data.load_corpus(track)
    rows = data.eval_rows(corpus, track.max_seq_len, track.eval_tokens)
    n = track.eval_tokens // track.max_seq_len
    assert rows.shape == (n, track.max_seq_len + 1) and len(np.unique(rows, axis=0)) == n  # was 69 / 127 unique
    one_pass = list(data.BestFitPacker(((d, 1) for d in corpus.val_docs), track.max_seq_len + 1, corpus.bos_id))
    index = {row.tobytes(): i for i, row in enumerate(one_pass)}
    picked = [index[row.tobytes()] for row in rows]  # every row is a row of the single pass
    assert picked == sorted(picked) and picked[0] == 0 and picked[-1] >= len(one_pass) - len(one_pass) // n - 1
    gaps = np.diff(picked)
    assert gaps.max() - gaps.min() <= 1  # evenly spaced, so late parts of documents count as much as starts


def test_eval_rows_refuse_a_split_too_small_for_the_track() -> None:
    corpus = data.TokenizedCorpus(257, data.BYTES_BOS_ID, np.ones(257, dtype=np.int64), [], [data.encode_bytes("x" * 100)])
    with pytest.raises(data.DataError, match="asks for 8"):
        data.eval_rows(corpus, 16, 128)


def _upstream_loop(batches, row_len: int, n_rows: int, buffer_size: int) -> list[list[int]]:  # type: ignore[no-untyped-def]
    """The row loop of upstream's ``make_dataloader`` (prepare.py), transcribed with lists."""
    doc_buffer: list[list[int]] = []
    rows = []
    for _ in range(n_rows):
        row = [0] * row_len
        pos = 0
        while pos < row_len:
            while len(doc_buffer) < buffer_size:
                doc_buffer.extend(next(batches))
            remaining = row_len - pos
            best_idx, best_len = -1, 0
            for i, doc in enumerate(doc_buffer):
                if len(doc) <= remaining and len(doc) > best_len:
                    best_idx, best_len = i, len(doc)
            if best_idx >= 0:
                doc = doc_buffer.pop(best_idx)
                row[pos : pos + len(doc)] = doc
                pos += len(doc)
            else:
                shortest_idx = min(range(len(doc_buffer)), key=lambda i: len(doc_buffer[i]))
                doc = doc_buffer.pop(shortest_idx)
                row[pos : pos + remaining] = doc[:remaining]
                pos += remaining
        rows.append(row)
    return rows


@settings(max_examples=40, deadline=None)
@given(
    lengths=st.lists(st.integers(min_value=1, max_value=60), min_size=1, max_size=30),
    row_len=st.integers(min_value=2, max_value=48),
    buffer_size=st.integers(min_value=1, max_value=12),
    batch=st.integers(min_value=1, max_value=5),
)
def test_upstream_rows_pick_the_documents_upstreams_loader_picks(lengths: list[int], row_len: int, buffer_size: int, batch: int) -> None:
    docs = _docs(lengths)

    def batches():  # type: ignore[no-untyped-def]
        while True:  # endless epochs, as upstream's _document_batches
            for i in range(0, len(docs), batch):
                yield [d.copy() for d in docs[i : i + batch]]

    expected = _upstream_loop(([list(map(int, d)) for d in b] for b in batches()), row_len, 12, buffer_size)
    got = data.upstream_rows(batches(), row_len, 12, buffer_size=buffer_size)
    assert got.tolist() == expected
