"""``results.tsv`` in upstream autoresearch's format, and the compact results table proposers read.

``results.tsv`` has five tab-separated columns, ``commit val_bpb memory_gb status description``
(upstream ``program.md``): the short commit, val_bpb with 6 decimals, peak memory in GB with one
decimal, ``keep``/``discard``/``crash``, and a one-line description. A crash shows ``0.000000`` and
``0.0``. The loop rewrites the file atomically from its recorded experiments after every run, so the
file can never hold a row twice or miss one.
"""

from __future__ import annotations

import math
import os
import re
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from autoresearch.protocol import ExperimentRecord

HEADER = ("commit", "val_bpb", "memory_gb", "status", "description")


class ResultRow(BaseModel):
    """One row of ``results.tsv`` (values as written)."""

    model_config = ConfigDict(frozen=True)

    commit: str
    val_bpb: str
    memory_gb: str
    status: str
    description: str

    @classmethod
    def from_record(cls, commit: str, record: ExperimentRecord) -> ResultRow:
        """The row of a recorded experiment; ``commit`` is shortened to 7 hex characters."""
        ok = record.status != "crash" and record.metrics.val_bpb is not None
        val = record.metrics.val_bpb if ok else 0.0
        mem_mib = record.metrics.peak_vram_mib if ok and record.metrics.peak_vram_mib else 0.0
        return cls(
            commit=commit[:7],
            val_bpb=f"{val:.6f}",
            memory_gb=f"{mem_mib / 1024:.1f}",
            status=record.status,
            description=_one_line(record.description),
        )

    def as_line(self) -> str:
        return "\t".join((self.commit, self.val_bpb, self.memory_gb, self.status, self.description))


def _one_line(text: str) -> str:
    return " ".join(text.replace("\t", " ").split())


STATUSES = ("keep", "discard", "crash")
_COMMIT = re.compile(r"[0-9A-Za-z]{4,40}")  # upstream writes 7 characters; its own example has a "g"


def check_row(row: ResultRow) -> str | None:
    """What is wrong with a row in upstream's format (one phrase), or None.

    ``commit``: 4–40 letters or digits; ``val_bpb`` and ``memory_gb``: finite numbers ≥ 0;
    ``status``: ``keep``, ``discard`` or ``crash``; a ``keep`` or ``discard`` needs val_bpb > 0
    (upstream writes 0.000000 for crashes only).
    """
    if not _COMMIT.fullmatch(row.commit):
        return f"commit {row.commit!r} is not a git commit hash"
    values = {}
    for name in ("val_bpb", "memory_gb"):
        text = getattr(row, name)
        try:
            values[name] = float(text)
        except ValueError:
            return f"{name} {text!r} is not a number"
        if not math.isfinite(values[name]) or values[name] < 0:
            return f"{name} {text!r} is not a finite number ≥ 0"
    if row.status not in STATUSES:
        return f"status {row.status!r} is not one of {', '.join(STATUSES)}"
    if row.status != "crash" and values["val_bpb"] <= 0:
        return f"status {row.status} needs a val_bpb > 0, got {row.val_bpb!r}"
    return None


def read_results(path: Path) -> list[ResultRow]:
    """Rows of a ``results.tsv`` (header skipped; a missing file is empty), each checked by
    :func:`check_row`.

    Raises:
        ValueError: a row does not have five tab-separated columns or fails :func:`check_row`; one
            line, naming the file and line number, e.g. ``results.tsv:3: status 'kept' is not …``.
    """
    if not path.exists():
        return []
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip() or (number == 1 and line.split("\t")[0] == "commit"):
            continue
        cols = line.split("\t")
        if len(cols) != 5:
            raise ValueError(f"{path}:{number}: expected 5 tab-separated columns, got {len(cols)}")
        row = ResultRow(**dict(zip(HEADER, cols, strict=True)))
        problem = check_row(row)
        if problem is not None:
            raise ValueError(f"{path}:{number}: {problem}")
        rows.append(row)
    return rows


def write_results(path: Path, rows: Iterable[ResultRow]) -> None:
    """Write ``results.tsv`` atomically (temp file in the same folder, then rename)."""
    text = "\t".join(HEADER) + "\n" + "".join(row.as_line() + "\n" for row in rows)
    atomic_write_text(path, text)


def atomic_write_text(path: Path, text: str, *, mode: int | None = None) -> None:
    """Write a text file atomically: temp file beside it, fsync, ``os.replace``.

    The file keeps the mode of the one it replaces; a new file gets ``mode`` (default 0644, not
    the 0600 of a temp file: workspace files are ordinary files of the user's repository).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode is None:
        mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


PROVISIONAL_NOTE = "provisional: no calibration"


def is_provisional_keep(record: ExperimentRecord) -> bool:
    """A keep compared with a parent but made without a calibration: no z says it beats noise.

    The hub marks the same records ``provisional`` (no calibration it verified) and never makes them
    community best; the baseline (no parent, ``delta_val_bpb`` None) is a reference point, not a keep
    of a change.
    """
    return record.status == "keep" and record.calibration_id is None and record.normalised.delta_val_bpb is not None


def compact_table(records: Sequence[tuple[int, ExperimentRecord | ResultRow]], *, max_rows: int = 20) -> str:
    """The last ``max_rows`` experiments as a small fixed-width table for a proposer's prompt.

    Long runs must not fill an LLM's context, so older rows are summarised in one line.
    Columns: number, status, val_bpb, Δ vs parent (bits per byte), description. A provisional keep
    (:func:`is_provisional_keep`) shows as ``keep?``, explained in a last line. A bare
    :class:`ResultRow` (an adopted upstream row whose commit is gone) shows its status, val_bpb
    (``-`` for a crash) and description.
    """
    lines = ["#     status   val_bpb   delta     description"]
    hidden = len(records) - max_rows
    if hidden > 0:
        keeps = sum(1 for _, r in records[:hidden] if r.status == "keep")
        lines.append(f"(… {hidden} earlier experiments, {keeps} kept, not shown)")
    provisional = False
    for number, entry in records[-max_rows:]:
        if isinstance(entry, ResultRow):
            status, val, delta_s = entry.status, "-" if entry.status == "crash" else entry.val_bpb, "-"
        else:
            val = f"{entry.metrics.val_bpb:.6f}" if entry.metrics.val_bpb is not None else "-"
            delta = entry.normalised.delta_val_bpb
            delta_s = f"{delta:+.5f}" if delta is not None else "-"
            status = "keep?" if is_provisional_keep(entry) else entry.status
            provisional = provisional or status == "keep?"
        lines.append(f"{number:<5} {status:<8} {val:<9} {delta_s:<9} {_one_line(entry.description)[:120]}")
    if provisional:
        lines.append(f"(keep? = {PROVISIONAL_NOTE} on this machine, so the gain may be noise)")
    return "\n".join(lines)
