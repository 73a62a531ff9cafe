"""Upstream history becomes records: the rows of an adopted checkout's ``results.tsv``.

``autoresearch init DIR --adopt`` (:meth:`Workspace.init`) keeps an upstream autoresearch
checkout's branch, history and ``results.tsv``. :func:`import_rows` turns each row into a
:class:`~autoresearch.client.workspace.LocalExperiment` of kind ``imported`` (numbered first, in
file order, so the loop's own experiments follow them), which the agent's prompt lists
(:func:`~autoresearch.client.results.compact_table`) and the loop publishes once when joined to a
hub (docs/loop.md, "Adopting an upstream checkout").

A row ``commit val_bpb memory_gb status description`` (upstream ``program.md``) becomes:

- outcome ``ok`` with that val_bpb and peak memory (GB × 1024 MiB) for ``keep``/``discard``;
  outcome ``crash`` with val_bpb null for ``crash`` (upstream's ``0.000000`` means "none");
- a record (``autoresearch/experiment/v1``) when the commit and its ``train.py`` are in the
  repository: the child is ``train.py`` at that commit, the parent ``train.py`` at its first git
  parent (upstream commits each experiment on top of the last keep; without a git parent, the
  last ``keep`` row's), and ``parent_val_bpb`` the val_bpb of the row of that parent commit (else
  of the last keep row). The first row is the baseline: its own parent. Discarded commits are
  usually still there (``git reset`` leaves them to the reflog). Without the commit the row is
  kept for the prompt (``imported_row``) but no record can be made, and the log says so.

What a record says of numbers it did not measure: ``harness_version`` is
:data:`UPSTREAM_HARNESS` (upstream's ``prepare.py``/``train.py`` measured them, not our harness),
``isolation`` ``none``, no calibration (so the hub shows them provisional and never makes them
community best), ``hardware_class`` and software of the machine adopting the checkout (assumed to
be where it ran), ``created_at`` the commit's time, and the description prefixed ``upstream:``.
The numbers are the checkout owner's claim, as any self-reported record is.
"""

from __future__ import annotations

import logging
import subprocess
from datetime import UTC, datetime

from autoresearch.protocol import (
    ExperimentRecord,
    Normalised,
    RunMetrics,
    SoftwareVersions,
    TrackSpec,
    utc_now,
)
from autoresearch.protocol.source import (
    canonical_sha256_or_none,
    diff_too_large,
    source_sha256,
    unified_diff,
)

from .results import ResultRow
from .workspace import NO_HOOKS, LocalExperiment, Workspace

_logger = logging.getLogger(__name__)

UPSTREAM_HARNESS = "upstream"
"""``harness_version`` of an imported record: measured by upstream autoresearch, not this harness."""
UPSTREAM_TAG = "upstream"  # the tag of imported experiments (the loop's own use autoresearch/<tag>)
UPSTREAM_PROPOSER = "upstream"


def _git(ws: Workspace, *args: str) -> str | None:
    proc = subprocess.run(["git", *NO_HOOKS, "-C", str(ws.root), *args], capture_output=True, text=True, check=False)
    return proc.stdout if proc.returncode == 0 else None


def _resolve(ws: Workspace, commit: str) -> tuple[str, str, datetime] | None:
    """(full hash, ``train.py`` at it, commit time in UTC) of a (short) hash, or None when the
    commit or its ``train.py`` is not in the repository."""
    full = _git(ws, "rev-parse", "--verify", "-q", f"{commit}^{{commit}}")
    if full is None:
        return None
    full = full.strip()
    source = _git(ws, "show", f"{full}:train.py")
    when = _git(ws, "show", "-s", "--format=%cI", full)
    if source is None or when is None:
        return None
    return full, source, min(datetime.fromisoformat(when.strip()).astimezone(UTC), utc_now())


def import_rows(ws: Workspace, rows: list[ResultRow], spec: TrackSpec) -> list[LocalExperiment]:
    """Save one ``imported`` experiment per row of an adopted ``results.tsv`` (see the module
    docstring) and return them. The rows were checked by ``results.read_results``.

    Trust: runs nothing; reads git objects of the adopted repository and the row's numbers as
    given (the checkout owner's claim, never verified here).
    """
    from autoresearch.trainer import hardware

    hw = hardware.hardware_class_for(spec.device)
    software = hardware.software_versions("cpu" if spec.device == "cpu" else "auto")
    head = ws.head()
    last_keep: tuple[str, str, float | None] | None = None  # (commit, train.py, val_bpb) of the last keep row
    val_of: dict[str, float | None] = {}  # full commit → val_bpb of its row
    out = []
    missing = 0
    for index, row in enumerate(rows):
        number = ws.next_number()
        resolved = _resolve(ws, row.commit)
        crash = row.status == "crash"
        val = None if crash else float(row.val_bpb)
        mem = None if crash else float(row.memory_gb) * 1024
        record = None
        when = utc_now()
        commit = None
        parent_commit = last_keep[0] if last_keep else head
        if resolved is None:
            missing += 1
        else:
            commit, child, when = resolved
            base = _parent(ws, commit, last_keep, val_of) if index > 0 else (commit, child, None)
            if base is None:  # no git parent and no keep row before it: a baseline of its own
                base = (commit, child, None)
            parent_commit = base[0]
            record = _record(row, spec, base[1], child, base[2], val, mem, hw, software, when)
            val_of[commit] = val
        exp = LocalExperiment(
            number=number, tag=UPSTREAM_TAG, track=spec.id, kind="imported", commit=commit, parent_commit=parent_commit,
            description=row.description, proposer=UPSTREAM_PROPOSER,
            child_sha256=record.child_sha256 if record else "", child_canonical_sha256=record.child_canonical_sha256 if record else None,
            record=record, imported_row=row, started_at=when, finished_at=when,
        )  # fmt: skip
        ws.save_experiment(exp)
        out.append(exp)
        if row.status == "keep" and resolved is not None:
            last_keep = (resolved[0], resolved[1], val)
    if missing:
        _logger.warning("%d of %d results.tsv rows name a commit that is not in %s: imported for the prompt, "
                        "without a record for the hub", missing, len(rows), ws.root)  # fmt: skip
    return out


def _parent(
    ws: Workspace, commit: str, last_keep: tuple[str, str, float | None] | None, val_of: dict[str, float | None]
) -> tuple[str, str, float | None] | None:
    """(commit, train.py, val_bpb) of the experiment's parent: its first git parent (val_bpb from
    that commit's row, else the last keep row's), else the last keep row, else None."""
    first = _git(ws, "rev-parse", "--verify", "-q", f"{commit}^1")
    source = _git(ws, "show", f"{first.strip()}:train.py") if first else None
    if first is not None and source is not None:
        full = first.strip()
        return full, source, val_of.get(full, last_keep[2] if last_keep else None)
    return last_keep


def _record(
    row: ResultRow,
    spec: TrackSpec,
    parent: str,
    child: str,
    parent_val: float | None,
    val: float | None,
    mem: float | None,
    hw: str,
    software: SoftwareVersions,
    when: datetime,
) -> ExperimentRecord | None:
    """The record of a row whose sources are known; None when a source does not parse or the diff
    is too large for the protocol (logged)."""
    parent_canonical, child_canonical = canonical_sha256_or_none(parent), canonical_sha256_or_none(child)
    if parent_canonical is None or child_canonical is None or diff_too_large(parent, child):
        _logger.warning("results.tsv row %s: train.py does not parse or its diff is too large; no record", row.commit)
        return None
    delta = val - parent_val if val is not None and parent_val is not None else None
    return ExperimentRecord.model_validate({
        "track": spec.id, "parent_sha256": source_sha256(parent), "child_sha256": source_sha256(child),
        "parent_canonical_sha256": parent_canonical, "child_canonical_sha256": child_canonical,
        "diff": unified_diff(parent, child), "description": f"upstream: {' '.join(row.description.split())}"[:500],
        "outcome": "crash" if row.status == "crash" else "ok", "status": row.status,
        "metrics": RunMetrics(val_bpb=val, peak_vram_mib=mem), "parent_val_bpb": parent_val,
        "normalised": Normalised(delta_val_bpb=delta), "hardware_class": hw[:200], "software": software,
        "harness_version": UPSTREAM_HARNESS, "isolation": "none", "created_at": when,
    })  # fmt: skip
