"""The ``climbmix`` track's data: download upstream's parquet shards, train its BPE tokenizer, stream
tokenized documents to the packer.

Source and layout follow upstream karpathy/autoresearch ``prepare.py``: shards
``shard_00000.parquet`` … ``shard_06542.parquet`` under :data:`tracks.CLIMBMIX_BASE_URL`, the last one
pinned as the validation shard, a ``text`` column per row group; BPE tokenizer with vocab 8192
trained by ``rustbpe`` on the training shards with upstream's split pattern and four reserved special
tokens (BOS = ``<|reserved_0|>``), saved as a pickled ``tiktoken.Encoding``.

Downloads (:func:`download_shard`): bounded retries with exponential back-off; bytes go to
``<name>.part`` and resume with an HTTP ``Range`` request after an interrupted transfer; the finished
file is checked (SHA-256 against the server's ``X-Linked-Etag``/``ETag`` when that is a SHA-256, as on
Hugging Face LFS files, and parquet footer readable) and then renamed into place, so a shard path
either does not exist or holds a complete, checked file. Each shard's SHA-256 is recorded in
``manifest.json`` and re-checked before use.

Caches: ``$AUTORESEARCH_CACHE`` (or the platform cache dir) ``/climbmix/{data,tokenizer}``; shards and
tokenizer already prepared by upstream under ``~/.cache/autoresearch/`` are used in place, never
downloaded again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import platformdirs

from autoresearch.protocol import TrackSpec

from . import tracks
from .data import DataError, TokenizedCorpus

_logger = logging.getLogger(__name__)

VAL_SHARD = tracks.CLIMBMIX_MAX_SHARD
SPLIT_PATTERN = r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,2}| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+"""
SPECIAL_TOKENS = [f"<|reserved_{i}|>" for i in range(4)]
BOS_TOKEN = SPECIAL_TOKENS[0]
TOKENIZER_MAX_CHARS = 1_000_000_000  # training text for the tokenizer, as upstream
TOKENIZER_DOC_CAP = 10_000  # characters per document used for tokenizer training, as upstream
CHUNK_BYTES = 1 << 20
UPSTREAM_DOC_BATCH = 128  # documents per tokenizer batch in upstream's dataloader (the eval rows depend on it)
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")

ProgressCallback = Callable[[str, int, int | None], None]
"""``(shard name, bytes done, bytes total or None)``, called as a download advances."""


class PrepareError(Exception):
    """Preparing climbmix data failed (network after all retries, checksum mismatch, bad file)."""


def cache_root() -> Path:
    """``$AUTORESEARCH_CACHE`` or the platform's user cache dir, plus ``climbmix``."""
    env = os.environ.get("AUTORESEARCH_CACHE")
    base = Path(env).expanduser() if env else Path(platformdirs.user_cache_dir("autoresearch-hub", appauthor=False))
    return base / "climbmix"


def upstream_root() -> Path:
    """Upstream autoresearch's cache, reused read-only when present."""
    return Path.home() / ".cache" / "autoresearch"


def shard_name(index: int) -> str:
    return f"shard_{index:05d}.parquet"


def find_shard(index: int, root: Path | None = None) -> Path | None:
    """A finished shard in our cache or upstream's, or None."""
    for base in ((root or cache_root()) / "data", upstream_root() / "data"):
        path = base / shard_name(index)
        if path.is_file():
            return path
    return None


# --------------------------------------------------------------------------------------------------
# Manifest of checksums


def _manifest_path(root: Path) -> Path:
    return root / "manifest.json"


def read_manifest(root: Path) -> dict[str, str]:
    """Shard name → hex SHA-256 of every shard this cache finished."""
    path = _manifest_path(root)
    if not path.is_file():
        return {}
    return {str(k): str(v) for k, v in json.loads(path.read_text(encoding="utf-8")).items()}


def _write_manifest(root: Path, manifest: dict[str, str]) -> None:
    path = _manifest_path(root)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True), encoding="utf-8")
    os.replace(tmp, path)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _advertised_sha256(response: httpx.Response) -> str | None:
    """The SHA-256 the server states for the file (HF LFS: ``X-Linked-Etag``), if any."""
    for resp in (*response.history, response):
        for header in ("x-linked-etag", "etag"):
            value: str = resp.headers.get(header, "").strip().strip('"').removeprefix("W/").strip('"').lower()
            if _SHA256_RE.match(value):
                return value
    return None


# --------------------------------------------------------------------------------------------------
# Download


def download_shard(
    client: httpx.Client,
    url: str,
    dest: Path,
    *,
    retries: int = 5,
    backoff_seconds: float = 2.0,
    on_progress: ProgressCallback | None = None,
) -> str:
    """Download ``url`` to ``dest`` resumably and atomically; returns the file's hex SHA-256.

    Partial bytes live in ``dest.part``; each attempt continues from its size with a ``Range``
    request (a server that ignores the range answers 200 and the transfer restarts). At most
    ``retries`` attempts, sleeping ``backoff_seconds × 2^(attempt-1)`` between them.

    Raises:
        PrepareError: every attempt failed, or the finished file's SHA-256 differs from the one the
            server advertised (the partial file is deleted then, so the next try starts clean), or
            the file is not a readable parquet file.
    """
    import pyarrow.parquet as pq

    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    expected: str | None = None
    last_error: Exception | None = None
    completed = False
    for attempt in range(1, retries + 1):
        offset = part.stat().st_size if part.exists() else 0
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        try:
            with client.stream("GET", url, headers=headers) as response:
                if response.status_code == 416:  # range past the end: the part is complete already
                    pass
                else:
                    response.raise_for_status()
                    expected = _advertised_sha256(response) or expected
                    resumed = response.status_code == 206
                    length = response.headers.get("content-length")
                    total = (offset if resumed else 0) + int(length) if length else None
                    mode = "ab" if resumed else "wb"
                    done = offset if resumed else 0
                    with part.open(mode) as fh:
                        for chunk in response.iter_bytes():  # as received, so a dropped connection keeps its bytes
                            fh.write(chunk)
                            done += len(chunk)
                            if on_progress:
                                on_progress(dest.name, done, total)
                    if total is not None and done < total:
                        raise httpx.ReadError(f"connection closed after {done} of {total} bytes")
            completed = True
            break
        except (httpx.HTTPError, OSError) as exc:
            last_error = exc
            status = exc.response.status_code if isinstance(exc, httpx.HTTPStatusError) else None
            _logger.warning("%s: attempt %d/%d failed: %s", dest.name, attempt, retries, exc)
            if status is not None and 400 <= status < 500 and status not in (408, 429):
                break  # not found / forbidden: retrying will not help
            if attempt < retries:
                time.sleep(backoff_seconds * 2 ** (attempt - 1))
    if not completed or not part.exists():
        raise PrepareError(f"{dest.name}: download failed after {attempt} attempt(s): {last_error}")
    digest = _sha256(part)
    if expected is not None and digest != expected:
        part.unlink()
        raise PrepareError(f"{dest.name}: SHA-256 {digest} does not match the server's {expected}; partial file removed")
    try:
        pq.ParquetFile(part)
    except Exception as exc:  # pyarrow raises ArrowInvalid/OSError subclasses for a torn file
        part.unlink()
        raise PrepareError(f"{dest.name}: not a readable parquet file ({exc}); removed") from exc
    os.replace(part, dest)
    return digest


@dataclass
class PrepareSummary:
    """What :func:`prepare` did: shards downloaded, reused, and where the tokenizer is."""

    downloaded: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    tokenizer: Path | None = None

    def __str__(self) -> str:
        return (
            f"climbmix: {len(self.downloaded)} shards downloaded, {len(self.reused)} already present; "
            f"tokenizer {self.tokenizer}"
        )


def prepare(
    num_shards: int = 10,
    *,
    base_url: str = tracks.CLIMBMIX_BASE_URL,
    root: Path | None = None,
    client: httpx.Client | None = None,
    retries: int = 5,
    backoff_seconds: float = 2.0,
    on_progress: ProgressCallback | None = None,
    train_tokenizer_too: bool = True,
) -> PrepareSummary:
    """Download ``num_shards`` training shards plus the pinned validation shard, then the tokenizer.

    Shards present (ours or upstream's) are reused; ours are re-checked against the manifest.

    Raises:
        PrepareError: a download or checksum failed, or a cached shard no longer matches the manifest.
    """
    root = root or cache_root()
    (root / "data").mkdir(parents=True, exist_ok=True)
    manifest = read_manifest(root)
    ids = [*range(min(num_shards, VAL_SHARD)), VAL_SHARD]
    summary = PrepareSummary()
    owns_client = client is None
    client = client or httpx.Client(follow_redirects=True, timeout=httpx.Timeout(30.0, read=120.0))
    try:
        for index in ids:
            name = shard_name(index)
            existing = find_shard(index, root)
            if existing is not None:
                if existing.parent == root / "data" and name in manifest and _sha256(existing) != manifest[name]:
                    raise PrepareError(f"{existing} no longer matches its recorded SHA-256; delete it and re-run prepare")
                summary.reused.append(name)
                continue
            digest = download_shard(client, f"{base_url}/{name}", root / "data" / name, retries=retries,
                                    backoff_seconds=backoff_seconds, on_progress=on_progress)  # fmt: skip
            manifest[name] = digest
            _write_manifest(root, manifest)
            summary.downloaded.append(name)
    finally:
        if owns_client:
            client.close()
    if train_tokenizer_too:
        summary.tokenizer = ensure_tokenizer(root)
    return summary


# --------------------------------------------------------------------------------------------------
# Tokenizer


def _tokenizer_dir(root: Path) -> Path:
    upstream = upstream_root() / "tokenizer"
    if (upstream / "tokenizer.pkl").is_file():
        return upstream
    return root / "tokenizer"


def _train_shards(root: Path) -> list[Path]:
    paths = {p.name: p for base in (upstream_root() / "data", root / "data") if base.is_dir() for p in base.glob("shard_*.parquet")}
    return [paths[n] for n in sorted(paths) if n != shard_name(VAL_SHARD)]


def _text_iterator(paths: list[Path]) -> Iterator[str]:
    import pyarrow.parquet as pq

    chars = 0
    for path in paths:
        pf = pq.ParquetFile(path)
        for rg in range(pf.num_row_groups):
            for text in pf.read_row_group(rg, columns=["text"]).column("text").to_pylist():
                doc = text[:TOKENIZER_DOC_CAP]
                chars += len(doc)
                yield doc
                if chars >= TOKENIZER_MAX_CHARS:
                    return


def ensure_tokenizer(root: Path | None = None, vocab_size: int = tracks.CLIMBMIX_VOCAB_SIZE) -> Path:
    """Train the BPE tokenizer (``vocab_size`` tokens including the 4 specials; rustbpe stops early
    on too little text) unless ours or upstream's exists; returns its directory.

    Raises:
        PrepareError: no training shard, or ``rustbpe`` is not installed.
    """
    root = root or cache_root()
    directory = _tokenizer_dir(root)
    if (directory / "tokenizer.pkl").is_file():
        return directory
    shards = _train_shards(root)
    if not shards:
        raise PrepareError("no climbmix training shard to train the tokenizer on; run prepare with --num-shards ≥ 1")
    _train_tokenizer(shards, directory, vocab_size)
    return directory


def _train_tokenizer(shards: list[Path], directory: Path, vocab_size: int = tracks.CLIMBMIX_VOCAB_SIZE) -> None:
    """Upstream's recipe: rustbpe on the shards' text, then a pickled ``tiktoken.Encoding``."""
    try:
        import rustbpe
        import tiktoken
    except ImportError as exc:
        raise PrepareError(f"training the climbmix tokenizer needs rustbpe and tiktoken ({exc})") from exc
    _logger.info("training BPE tokenizer (vocab %d) on %d shards", vocab_size, len(shards))
    tok = rustbpe.Tokenizer()
    tok.train_from_iterator(_text_iterator(shards), vocab_size - len(SPECIAL_TOKENS), pattern=SPLIT_PATTERN)
    ranks = {bytes(k): v for k, v in tok.get_mergeable_ranks()}
    specials = {name: len(ranks) + i for i, name in enumerate(SPECIAL_TOKENS)}
    enc = tiktoken.Encoding(name="rustbpe", pat_str=tok.get_pattern(), mergeable_ranks=ranks, special_tokens=specials)
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / "tokenizer.pkl.tmp"
    tmp.write_bytes(pickle.dumps(enc))
    os.replace(tmp, directory / "tokenizer.pkl")


# --------------------------------------------------------------------------------------------------
# Loading for the harness


@dataclass(frozen=True)
class StreamingCorpus(TokenizedCorpus):
    """climbmix as a stream: documents are read from parquet and tokenized on the fly."""

    encoding: object = None
    train_paths: tuple[Path, ...] = ()
    val_path: Path | None = None

    def _stream(self, paths: tuple[Path, ...]) -> Iterator[tuple[np.ndarray, int]]:
        import pyarrow.parquet as pq

        epoch = 1
        while True:
            for path in paths:
                pf = pq.ParquetFile(path)
                for rg in range(pf.num_row_groups):
                    texts = pf.read_row_group(rg, columns=["text"]).column("text").to_pylist()
                    for ids in self.encoding.encode_ordinary_batch(texts):  # type: ignore[attr-defined]
                        yield np.array([self.bos_id, *ids], dtype=np.int64), epoch
            epoch += 1

    def train_stream(self, seed: int) -> Iterator[tuple[np.ndarray, int]]:
        """Endless ``(doc, epoch)`` over the training shards in order (the shards are pre-shuffled)."""
        return self._stream(self.train_paths)

    def val_stream(self) -> Iterator[tuple[np.ndarray, int]]:
        """Endless ``(doc, epoch)`` over the pinned validation shard."""
        assert self.val_path is not None
        return self._stream((self.val_path,))

    def val_doc_batches(self) -> Iterator[list[np.ndarray]]:
        """Endless batches of ``[BOS, *tokens]`` documents from the validation shard, cut as upstream's
        ``_document_batches``: :data:`UPSTREAM_DOC_BATCH` documents at a time within each row group,
        epochs repeated (the stream :func:`autoresearch.trainer.data.upstream_rows` packs)."""
        import pyarrow.parquet as pq

        assert self.val_path is not None
        while True:
            pf = pq.ParquetFile(self.val_path)
            for rg in range(pf.num_row_groups):
                texts = pf.read_row_group(rg, columns=["text"]).column("text").to_pylist()
                for start in range(0, len(texts), UPSTREAM_DOC_BATCH):
                    ids = self.encoding.encode_ordinary_batch(texts[start : start + UPSTREAM_DOC_BATCH])  # type: ignore[attr-defined]
                    yield [np.array([self.bos_id, *doc], dtype=np.int64) for doc in ids]


def upstream_token_bytes(enc: object) -> np.ndarray:
    """``(V,)`` int64 bytes per token as upstream's ``prepare.py`` counts them for val_bpb.

    Upstream decodes each token on its own to ``str`` and counts the UTF-8 bytes of that string
    (special tokens: 0). A token that ends or starts inside a multi-byte character decodes to
    U+FFFD replacement characters, 3 bytes each, so it counts 3 where its raw bytes are 1 or 2: the
    byte total of a text is then slightly above its UTF-8 length and val_bpb slightly below the
    exact figure (docs/trainer.md has the size of the effect). The climbmix track counts as
    upstream does, so its val_bpb compares with upstream's numbers.
    """
    specials = set(enc._special_tokens.values())  # type: ignore[attr-defined]
    return np.array([0 if i in specials else len(enc.decode([i]).encode("utf-8")) for i in range(enc.n_vocab)], dtype=np.int64)  # type: ignore[attr-defined]


def exact_token_bytes(enc: object) -> np.ndarray:
    """``(V,)`` int64 raw byte length of each token (special tokens: 0): exact UTF-8 counting."""
    specials = set(enc._special_tokens.values())  # type: ignore[attr-defined]
    return np.array([0 if i in specials else len(enc.decode_single_token_bytes(i)) for i in range(enc.n_vocab)], dtype=np.int64)  # type: ignore[attr-defined]


def load_climbmix(track: TrackSpec, root: Path | None = None) -> StreamingCorpus:
    """The prepared climbmix data for the harness.

    Raises:
        DataError: shards or tokenizer missing (run ``autoresearch prepare --track climbmix``).
    """
    root = root or cache_root()
    val = find_shard(VAL_SHARD, root)
    train = _train_shards(root)
    pkl = _tokenizer_dir(root) / "tokenizer.pkl"
    if val is None or not train or not pkl.is_file():
        raise DataError("climbmix data is not prepared; run `autoresearch prepare --track climbmix`")
    enc = pickle.loads(pkl.read_bytes())  # the user's own cache, in upstream's format
    if enc.n_vocab != track.vocab_size:
        raise DataError(f"climbmix tokenizer has {enc.n_vocab} tokens, track {track.id} expects {track.vocab_size}")
    token_bytes = upstream_token_bytes(enc)
    return StreamingCorpus(
        vocab_size=enc.n_vocab, bos_id=enc.encode_single_token(BOS_TOKEN), token_bytes=token_bytes,
        train_docs=[], val_docs=[], encoding=enc, train_paths=tuple(train), val_path=val,
    )  # fmt: skip


# --------------------------------------------------------------------------------------------------
# An offline cache in upstream's layout (for GPU checks on machines without internet)

OFFLINE_TRAIN_SHARDS = 2  # training shards the offline cache splits the shipped corpus into
OFFLINE_ROW_GROUP = 64  # documents per parquet row group in the offline cache


def build_offline_cache(root: Path, *, train_shards: int = OFFLINE_TRAIN_SHARDS) -> Path:
    """Write a small climbmix cache in upstream's exact layout under ``root``; returns ``root``.

    ``root/data/shard_00000.parquet`` … (the shipped corpus's train documents, in file order, split
    over ``train_shards`` shards) and ``root/data/shard_06542.parquet`` (its val documents), each a
    parquet file with one ``text`` column in row groups of :data:`OFFLINE_ROW_GROUP` documents; then
    ``root/tokenizer/tokenizer.pkl`` trained by upstream's recipe (:func:`ensure_tokenizer`: rustbpe,
    upstream's split pattern, 8188 merges + 4 specials) and, when torch is installed,
    ``root/tokenizer/token_bytes.pt`` as upstream's ``prepare.py`` writes it. ``root`` can serve as
    upstream's ``~/.cache/autoresearch`` (``$HOME/.cache/autoresearch``) or as our cache
    (``$AUTORESEARCH_CACHE/climbmix``). The text is the offline corpus (``trainer/corpus/``, checked
    against the ``cpu`` track's SHA-256), so this needs no network; it is not climbmix, and val_bpb
    on it says nothing about climbmix, but shapes, layout, tokenizer and throughput are upstream's.

    Raises:
        DataError: the shipped corpus is missing or fails its checksum.
        PrepareError: rustbpe or tiktoken is not installed.
    """
    import lzma

    import pyarrow as pa
    import pyarrow.parquet as pq

    from .data import sha256_file

    corpus = tracks.pycorpus_path()
    if not corpus.is_file() or sha256_file(corpus) != tracks.PYCORPUS_SHA256:
        raise DataError(f"offline corpus {corpus} is missing or fails its checksum")
    train: list[str] = []
    val: list[str] = []
    with lzma.open(corpus, "rt", encoding="utf-8") as fh:
        for line in fh:
            doc = json.loads(line)
            (val if doc["split"] == "val" else train).append(doc["text"])
    data_dir = root / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    per_shard = -(-len(train) // train_shards)
    shards = {shard_name(i): train[i * per_shard : (i + 1) * per_shard] for i in range(train_shards)}
    shards[shard_name(VAL_SHARD)] = val
    for name, texts in shards.items():
        tmp = data_dir / (name + ".tmp")
        pq.write_table(pa.table({"text": texts}), tmp, row_group_size=OFFLINE_ROW_GROUP)
        os.replace(tmp, data_dir / name)
    directory = root / "tokenizer"
    if not (directory / "tokenizer.pkl").is_file():
        _train_tokenizer(sorted(p for p in data_dir.glob("shard_*.parquet") if p.name != shard_name(VAL_SHARD)), directory)
    try:
        import torch
    except ImportError:
        return root
    enc = pickle.loads((directory / "tokenizer.pkl").read_bytes())
    tmp = directory / "token_bytes.pt.tmp"
    torch.save(torch.tensor(upstream_token_bytes(enc), dtype=torch.int32), tmp)
    os.replace(tmp, directory / "token_bytes.pt")
    return root
