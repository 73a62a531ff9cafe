"""climbmix downloads against a real HTTP server on loopback serving two small parquet files."""

from __future__ import annotations

import hashlib
import http.server
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from autoresearch.trainer import climbmix


@dataclass
class Served:
    files: dict[str, bytes]
    advertise: dict[str, str] = field(default_factory=dict)  # name → sha256 sent as X-Linked-Etag
    cut_first_get_at: dict[str, int] = field(default_factory=dict)  # name → bytes before a dropped connection
    requests: list[tuple[str, str | None]] = field(default_factory=list)  # (path, Range header)


def _parquet(tmp: Path, name: str, texts: list[str]) -> bytes:
    path = tmp / name
    pq.write_table(pa.table({"text": texts}), path, row_group_size=2)
    return path.read_bytes()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Served]]:
    served = Served(files={
        climbmix.shard_name(0): _parquet(tmp_path, "a.parquet", [f"training document {i} " * 50 for i in range(8)]),
        climbmix.shard_name(climbmix.VAL_SHARD): _parquet(tmp_path, "b.parquet", [f"validation text {i} " * 40 for i in range(6)]),
    })  # fmt: skip

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            name = self.path.rsplit("/", 1)[-1]
            served.requests.append((name, self.headers.get("Range")))
            body = served.files.get(name)
            if body is None:
                self.send_error(404)
                return
            start = 0
            if rng := self.headers.get("Range"):
                start = int(rng.removeprefix("bytes=").split("-")[0])
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            else:
                self.send_response(200)
            self.send_header("Content-Length", str(len(body) - start))
            if name in served.advertise:
                self.send_header("X-Linked-Etag", f'"{served.advertise[name]}"')
            self.end_headers()
            cut = served.cut_first_get_at.pop(name, None)
            self.wfile.write(body[start:cut] if cut is not None else body[start:])
            if cut is not None:
                self.wfile.flush()
                self.connection.shutdown(2)  # drop the connection mid-transfer

        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/resolve/main", served
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture(autouse=True)
def _no_upstream_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # upstream's ~/.cache/autoresearch: empty


def _prepare(url: str, root: Path, **kwargs: object) -> climbmix.PrepareSummary:
    with httpx.Client(timeout=10) as client:
        return climbmix.prepare(1, base_url=url, root=root, client=client, backoff_seconds=0.01, train_tokenizer_too=False, **kwargs)  # type: ignore[arg-type]


def test_downloads_training_and_pinned_validation_shard_with_checksums(server: tuple[str, Served], tmp_path: Path) -> None:
    url, served = server
    served.advertise = {n: hashlib.sha256(b).hexdigest() for n, b in served.files.items()}
    root = tmp_path / "cache"
    summary = _prepare(url, root)
    assert sorted(summary.downloaded) == sorted(served.files)
    for name, body in served.files.items():
        assert (root / "data" / name).read_bytes() == body
        assert not (root / "data" / (name + ".part")).exists()
    assert climbmix.read_manifest(root) == served.advertise
    served.requests.clear()
    again = _prepare(url, root)  # everything present: nothing is fetched
    assert again.downloaded == [] and sorted(again.reused) == sorted(served.files) and served.requests == []


def test_interrupted_transfer_resumes_with_a_range_request(server: tuple[str, Served], tmp_path: Path) -> None:
    url, served = server
    name = climbmix.shard_name(0)
    served.advertise = {name: hashlib.sha256(served.files[name]).hexdigest()}
    served.cut_first_get_at = {name: 700}
    root = tmp_path / "cache"
    _prepare(url, root)
    assert (root / "data" / name).read_bytes() == served.files[name]
    ranges = [r for n, r in served.requests if n == name]
    assert ranges[0] is None and ranges[1] == "bytes=700-"


def test_checksum_mismatch_is_rejected_and_leaves_no_file(server: tuple[str, Served], tmp_path: Path) -> None:
    url, served = server
    name = climbmix.shard_name(0)
    served.advertise = {name: "0" * 64}
    root = tmp_path / "cache"
    with pytest.raises(climbmix.PrepareError, match="does not match"):
        _prepare(url, root)
    assert not (root / "data" / name).exists() and not (root / "data" / (name + ".part")).exists()


def test_missing_file_fails_fast_with_a_clear_error(server: tuple[str, Served], tmp_path: Path) -> None:
    url, served = server
    del served.files[climbmix.shard_name(0)]
    with pytest.raises(climbmix.PrepareError, match="shard_00000.parquet: download failed"):
        _prepare(url, tmp_path / "cache")
    assert [n for n, _ in served.requests].count(climbmix.shard_name(0)) == 1  # a 404 is not retried


def test_a_corrupted_cached_shard_is_detected(server: tuple[str, Served], tmp_path: Path) -> None:
    url, served = server
    root = tmp_path / "cache"
    _prepare(url, root)
    shard = root / "data" / climbmix.shard_name(0)
    shard.write_bytes(shard.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(climbmix.PrepareError, match="no longer matches"):
        _prepare(url, root)


def test_upstream_cache_is_reused_without_download(server: tuple[str, Served], tmp_path: Path) -> None:
    url, served = server
    upstream = tmp_path / "home" / ".cache" / "autoresearch" / "data"
    upstream.mkdir(parents=True)
    for name, body in served.files.items():
        (upstream / name).write_bytes(body)
    summary = _prepare(url, tmp_path / "cache")
    assert summary.downloaded == [] and served.requests == []


def test_tokenizer_trained_in_process_and_streamed_documents_count_their_bytes(server: tuple[str, Served], tmp_path: Path) -> None:
    from autoresearch.protocol import TrackSpec
    from autoresearch.trainer import data, tracks
    from autoresearch.trainer.data import DataError

    url, served = server
    root = tmp_path / "cache"
    _prepare(url, root)
    climbmix.ensure_tokenizer(root, vocab_size=400)  # rustbpe stops early on this little text
    with pytest.raises(DataError, match="expects 8192"):
        climbmix.load_climbmix(tracks.get_track("climbmix"), root)
    import pickle

    n_vocab = pickle.loads((root / "tokenizer" / "tokenizer.pkl").read_bytes()).n_vocab
    fields = tracks.get_track("climbmix").model_dump(mode="json")
    spec = TrackSpec.build(**{**fields, "vocab_size": n_vocab, "max_seq_len": 64, "eval_tokens": 256})
    corpus = climbmix.load_climbmix(spec, root)
    texts = pq.read_table(root / "data" / climbmix.shard_name(climbmix.VAL_SHARD)).column("text").to_pylist()
    stream = corpus.val_stream()
    for text in texts:
        doc, epoch = next(stream)
        assert epoch == 1 and doc[0] == corpus.bos_id
        assert int(corpus.token_bytes[doc[1:]].sum()) == len(text.encode("utf-8"))  # bytes are exact
    assert next(stream)[1] == 2
    rows = data.eval_rows(corpus, spec.max_seq_len, spec.eval_tokens)
    assert rows.shape == (4, 65) and (rows[:, 0] == corpus.bos_id).all()
