"""Harness data: track corpora, tokenizers and the BOS-aligned best-fit packing dataloader.

Every document is tokenized as ``[BOS, *tokens]``. Rows of ``T + 1`` tokens are packed best-fit from
a buffer of documents (upstream karpathy/autoresearch ``prepare.py``, ``make_dataloader``): take the
largest buffered document that fits the space left in the row; when none fits, crop one to fill the
row exactly. Unlike upstream, the cropped remainder is not dropped: it goes back into the buffer as
a new segment ``[BOS, *rest]``, so no text token is lost, also across epoch boundaries (the buffer
carries over; the next epoch's documents are appended behind it). Because remainders come back, the
cropped document is the *oldest* in the buffer, not the shortest as upstream: cropping the shortest
would cut the same document again for the next row, and with documents much longer than a row whole
batches would come from one document (measured on ``tiny``: val_bpb 4.19 instead of 3.6 after 125
steps). Consequences: every
row starts with BOS, there is no padding, inputs are ``row[:-1]`` and targets ``row[1:]``.

The offline corpus (``cpu``/``tiny``) is read from the file shipped in ``trainer/corpus/`` after its
SHA-256 is checked against the track spec; its tokenizer is bytes (ids 0–255) plus BOS (256).

Evaluation rows (:func:`eval_rows`) are fixed per track and never repeat a piece of text:

- ``climbmix``: exactly upstream's ``evaluate_bpb`` rows, i.e. the first ``eval_tokens // T`` rows of
  upstream's ``make_dataloader(..., "val")`` (best fit from a buffer of ≥ 1000 documents refilled
  128 at a time, the *shortest* document cropped when none fits and its remainder dropped, epochs
  of the validation shard repeated as upstream does if it runs out): :func:`upstream_rows`.
- ``cpu``/``tiny``: the 27-document val split packed once, in file order, by :class:`BestFitPacker`
  without wrapping into a second epoch, then ``eval_tokens // T`` rows taken evenly spaced over the
  whole pass. Packing an endless stream (as before) let copies of the same document from later
  epochs sit in the buffer together and be cut the same way: 127 of the cpu track's 256 rows were
  duplicates, and the rows covered only the first half of each document.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import logging
import lzma
import random
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from autoresearch.protocol import TrackSpec

from . import tracks

_logger = logging.getLogger(__name__)

BYTES_BOS_ID = 256


class DataError(Exception):
    """Track data is missing or does not match the checksum pinned in the track spec."""


@dataclass(frozen=True)
class TokenizedCorpus:
    """A track's data, ready for packing.

    ``token_bytes[i]`` is the UTF-8 byte length of token ``i`` (0 for special tokens): the
    denominator of val_bpb. ``train_docs`` is an infinite-capable factory (see :meth:`train_stream`).
    """

    vocab_size: int
    bos_id: int
    token_bytes: np.ndarray  # (V,) int64
    train_docs: list[np.ndarray]
    val_docs: list[np.ndarray]

    def train_stream(self, seed: int) -> Iterator[tuple[np.ndarray, int]]:
        """Endless ``(doc, epoch)`` over the train split, reshuffled each epoch (epoch 1, 2, …)."""
        epoch = 1
        while True:
            order = list(range(len(self.train_docs)))
            random.Random(seed * 1_000_003 + epoch).shuffle(order)
            for i in order:
                yield self.train_docs[i], epoch
            epoch += 1

    def val_stream(self) -> Iterator[tuple[np.ndarray, int]]:
        """Endless ``(doc, epoch)`` over the val split in file order (deterministic)."""
        epoch = 1
        while True:
            for doc in self.val_docs:
                yield doc, epoch
            epoch += 1

    def val_doc_batches(self) -> Iterator[list[np.ndarray]] | None:
        """Upstream's view of the val split (endless batches of documents), or None when the track
        packs its evaluation rows from the in-memory split (:func:`eval_rows`)."""
        return None


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def encode_bytes(text: str) -> np.ndarray:
    """``[BOS, *utf8 bytes]`` as int64 token ids (the ``bytes+bos`` tokenizer)."""
    raw = np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int64)
    return np.concatenate([np.array([BYTES_BOS_ID], dtype=np.int64), raw])


def load_pycorpus(track: TrackSpec, path: Path | None = None) -> TokenizedCorpus:
    """Load and tokenize the shipped offline corpus after checking its SHA-256.

    Raises:
        DataError: the file is missing or its checksum differs from ``track.data_sha256``.
    """
    path = path or tracks.pycorpus_path()
    if not path.is_file():
        raise DataError(f"offline corpus {path} is missing (broken install?)")
    digest = sha256_file(path)
    if digest != track.data_sha256:
        raise DataError(f"offline corpus {path} has SHA-256 {digest}, track {track.id} expects {track.data_sha256}")
    train: list[np.ndarray] = []
    val: list[np.ndarray] = []
    with lzma.open(path, "rt", encoding="utf-8") as fh:
        for line in fh:
            doc = json.loads(line)
            (val if doc["split"] == "val" else train).append(encode_bytes(doc["text"]))
    token_bytes = np.ones(tracks.BYTES_VOCAB_SIZE, dtype=np.int64)
    token_bytes[BYTES_BOS_ID] = 0
    return TokenizedCorpus(tracks.BYTES_VOCAB_SIZE, BYTES_BOS_ID, token_bytes, train, val)


def load_corpus(track: TrackSpec) -> TokenizedCorpus:
    """The tokenized data of a track.

    Raises:
        DataError: the data is missing (run ``autoresearch prepare``) or fails its checksum.
    """
    if track.tokenizer == "bytes+bos":
        return load_pycorpus(track)
    if track.name == "climbmix":
        from .climbmix import load_climbmix

        return load_climbmix(track)
    raise DataError(f"track {track.id}: no loader for tokenizer {track.tokenizer!r}")


class BestFitPacker:
    """Packs ``[BOS, …]`` documents into rows of ``row_len`` tokens (see the module docstring).

    ``docs`` yields ``(tokens, epoch)``; each ``tokens`` must start with ``bos_id``. Buffered segments
    are indexed by length (for best fit) and by arrival (for cropping): when no segment fits, the
    oldest one is cropped and its remainder queued behind the others, so a long document is spread
    over many rows, round-robin with the rest of the buffer, instead of filling consecutive rows (which
    would make whole batches come from one document). A finite ``docs`` ends the rows when the buffer
    can no longer fill a whole row (at most ``row_len - 1`` text tokens are left unused then).
    ``epoch`` is the epoch of the newest document read.
    """

    def __init__(self, docs: Iterable[tuple[np.ndarray, int]], row_len: int, bos_id: int, buffer_size: int = 256) -> None:
        if row_len < 2:
            raise ValueError(f"row_len must be at least 2, got {row_len}")
        self._docs = iter(docs)
        self.row_len = row_len
        self.bos_id = bos_id
        self.buffer_size = buffer_size
        self.epoch = 0
        self._by_len: list[tuple[int, int]] = []  # sorted (length, id)
        self._segments: dict[int, np.ndarray] = {}  # id → segment
        self._arrival: deque[int] = deque()  # ids, oldest first (ids already used are skipped)
        self._next_id = 0
        self._buffered_tokens = 0
        self._exhausted = False

    def _push(self, seg: np.ndarray) -> None:
        sid = self._next_id
        self._next_id += 1
        bisect.insort(self._by_len, (len(seg), sid))
        self._segments[sid] = seg
        self._arrival.append(sid)
        self._buffered_tokens += len(seg)

    def _take(self, sid: int) -> np.ndarray:
        seg = self._segments.pop(sid)
        del self._by_len[bisect.bisect_left(self._by_len, (len(seg), sid))]
        self._buffered_tokens -= len(seg)
        return seg

    def _oldest(self) -> int:
        while self._arrival[0] not in self._segments:
            self._arrival.popleft()
        return self._arrival.popleft()

    def _refill(self) -> None:
        while not self._exhausted and len(self._segments) < self.buffer_size:
            try:
                doc, self.epoch = next(self._docs)
            except StopIteration:
                self._exhausted = True
                return
            if len(doc) and doc[0] != self.bos_id:
                raise ValueError("every document must start with BOS")
            if len(doc) >= 2:  # an empty document carries no text
                self._push(doc)

    def next_row(self) -> np.ndarray | None:
        """The next row, ``(row_len,)`` int64, or None when a finite stream cannot fill one."""
        self._refill()
        if self._exhausted and self._buffered_tokens < self.row_len:
            return None
        row = np.empty(self.row_len, dtype=np.int64)
        pos = 0
        while pos < self.row_len:
            self._refill()
            remaining = self.row_len - pos
            i = bisect.bisect_right(self._by_len, (remaining, self._next_id)) - 1  # largest that fits
            if i >= 0:
                seg = self._take(self._by_len[i][1])
                row[pos : pos + len(seg)] = seg
                pos += len(seg)
                continue
            if not self._segments:
                return None  # a finite stream ran dry mid-row: fewer than row_len tokens were left
            seg = self._take(self._oldest())  # none fits: crop the oldest to fill the row exactly
            row[pos:] = seg[:remaining]
            self._push(np.concatenate([np.array([self.bos_id], dtype=np.int64), seg[remaining:]]))
            pos = self.row_len
        return row

    def __iter__(self) -> Iterator[np.ndarray]:
        while (row := self.next_row()) is not None:
            yield row


def upstream_rows(doc_batches: Iterator[list[np.ndarray]], row_len: int, n_rows: int, buffer_size: int = 1000) -> np.ndarray:
    """The first ``n_rows`` rows of upstream's best-fit packing: ``(n_rows, row_len)`` int64.

    A transcription of the row loop of upstream karpathy/autoresearch ``prepare.py``
    ``make_dataloader`` (with its data, the validation rows of ``evaluate_bpb``): before each
    placement the buffer is topped up to ``buffer_size`` documents a batch at a time; the first
    (oldest) of the largest documents that fit the space left is placed whole; when none fits, the
    first of the shortest is cropped to fill the row and the rest of it is dropped. The lists
    upstream scans are replaced by a sorted index of ``(length, arrival)``, which picks the same
    documents. ``doc_batches`` yields lists of ``[BOS, *tokens]`` arrays (upstream: 128 documents of
    a parquet row group at a time, endless over epochs).
    """
    by_len: list[tuple[int, int]] = []  # sorted (length, arrival)
    docs: dict[int, np.ndarray] = {}
    arrival = 0
    out = np.empty((n_rows, row_len), dtype=np.int64)
    for r in range(n_rows):
        pos = 0
        while pos < row_len:
            while len(docs) < buffer_size:
                for doc in next(doc_batches):
                    bisect.insort(by_len, (len(doc), arrival))
                    docs[arrival] = doc
                    arrival += 1
            remaining = row_len - pos
            i = bisect.bisect_right(by_len, (remaining, arrival)) - 1  # the largest length that fits…
            if i >= 0:
                i = bisect.bisect_left(by_len, (by_len[i][0], -1))  # …its oldest document
                length, key = by_len.pop(i)
                out[r, pos : pos + length] = docs.pop(key)
                pos += length
            else:
                _, key = by_len.pop(0)  # the oldest of the shortest, cropped; the rest is dropped
                out[r, pos:] = docs.pop(key)[:remaining]
                pos = row_len
    return out


def eval_rows(corpus: TokenizedCorpus, max_seq_len: int, eval_tokens: int) -> np.ndarray:
    """The fixed evaluation rows: ``(eval_tokens // max_seq_len, max_seq_len + 1)`` int64.

    Upstream's rows where the corpus offers upstream's document stream (climbmix,
    :func:`upstream_rows`); otherwise the val split packed once, without wrapping into a second
    epoch, and the rows taken evenly spaced over that pass, so no piece of text is evaluated twice
    and every part of every document is represented (module docstring). The same rows come back for
    every run, whatever batch size evaluates them.

    Raises:
        DataError: the in-memory val split packs into fewer rows than the track asks for.
    """
    n_rows = max(1, eval_tokens // max_seq_len)
    batches = corpus.val_doc_batches()
    if batches is not None:
        return upstream_rows(batches, max_seq_len + 1, n_rows)
    packed = list(BestFitPacker(((doc, 1) for doc in corpus.val_docs), max_seq_len + 1, corpus.bos_id))
    if len(packed) < n_rows:
        raise DataError(f"the val split packs into {len(packed)} rows of {max_seq_len + 1} tokens; the track asks for {n_rows}")
    picked = (np.arange(n_rows) * len(packed)) // n_rows  # strictly increasing: len(packed) >= n_rows
    return np.stack([packed[i] for i in picked])
