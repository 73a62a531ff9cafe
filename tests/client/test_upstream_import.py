"""Adopting an upstream checkout imports its results.tsv rows as records (client/upstream.py):
outcomes, parents and numbers, the agent's prompt, a malformed row's one-line error, and the hub
(the real app, served on loopback) storing the imported records with their outcomes."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from autoresearch.client.demo import HubServer
from autoresearch.client.errors import WorkspaceError
from autoresearch.client.hubclient import HubClient
from autoresearch.client.loop import AgentLoop, HubContext, LoopOptions
from autoresearch.client.proposers.offline import OfflineProposer
from autoresearch.client.results import read_results
from autoresearch.client.upstream import UPSTREAM_HARNESS
from autoresearch.client.workspace import Workspace
from autoresearch.protocol import ClaimAnswer, ExperimentRecord, KeyPair, sign
from autoresearch.protocol.source import source_sha256
from autoresearch.trainer import tracks

V0 = "LR = 0.04\n\n\ndef train(h):\n    return None\n"
V1 = V0.replace("LR = 0.04", "LR = 0.06")  # kept
V2 = V1.replace("LR = 0.06", "LR = 0.08")  # discarded, then `git reset` back to V1
V3 = V1 + "\nWIDTH = 10 ** 9\n"  # crashed (OOM), reset


def git(root: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, check=True).stdout.strip()


def _commit(root: Path, source: str, message: str) -> str:
    (root / "train.py").write_text(source)
    git(root, "add", "train.py")
    git(root, "-c", "user.name=u", "-c", "user.email=u@example.invalid", "commit", "-q", "-m", message)
    return git(root, "rev-parse", "--short=7", "HEAD")


@pytest.fixture
def upstream(tmp_path: Path) -> tuple[Path, list[str]]:
    """An upstream checkout as its loop leaves it: baseline, a keep, a reset discard and crash, and
    a row whose commit is gone (its example's ``d4e5f6g``)."""
    root = tmp_path / "upstream"
    root.mkdir()
    git(root, "init", "-q", "-b", "autoresearch/mar5")
    base = _commit(root, V0, "baseline")
    keep = _commit(root, V1, "LR 0.04 → 0.06")
    discard = _commit(root, V2, "LR 0.06 → 0.08")
    git(root, "reset", "-q", "--hard", keep)
    crash = _commit(root, V3, "huge width")
    git(root, "reset", "-q", "--hard", keep)
    (root / "results.tsv").write_text(
        "commit\tval_bpb\tmemory_gb\tstatus\tdescription\n"
        f"{base}\t0.997900\t44.0\tkeep\tbaseline\n"
        f"{keep}\t0.993200\t44.2\tkeep\tincrease LR to 0.06\n"
        f"{discard}\t1.005000\t44.0\tdiscard\tLR to 0.08\n"
        f"{crash}\t0.000000\t0.0\tcrash\tdouble model width (OOM)\n"
        "d4e5f6g\t0.990000\t44.0\tdiscard\tits commit was garbage-collected\n"
    )
    return root, [base, keep, discard, crash]


def _adopt(root: Path) -> Workspace:
    return Workspace.init(root, track="tiny", reference_source="unused\n", program_md="P\n", adopt=True)


def test_each_row_becomes_an_experiment_with_its_outcome(upstream: tuple[Path, list[str]]) -> None:
    root, (base, keep, discard, crash) = upstream
    ws = _adopt(root)
    exps = ws.experiments()
    assert [(e.number, e.kind, e.tag, e.description) for e in exps] == [
        (1, "imported", "upstream", "baseline"), (2, "imported", "upstream", "increase LR to 0.06"),
        (3, "imported", "upstream", "LR to 0.08"), (4, "imported", "upstream", "double model width (OOM)"),
        (5, "imported", "upstream", "its commit was garbage-collected"),
    ]  # fmt: skip
    records = [e.record for e in exps]
    r_base, r_keep, r_discard, r_crash, r_gone = records
    assert r_base is not None and r_keep is not None and r_discard is not None and r_crash is not None
    assert r_gone is None and exps[4].imported_row is not None and exps[4].imported_row.commit == "d4e5f6g"
    spec = tracks.get_track("tiny")
    for r in (r_base, r_keep, r_discard, r_crash):
        assert r.track == spec.id and r.harness_version == UPSTREAM_HARNESS and r.isolation == "none"
        assert r.calibration_id is None and r.description.startswith("upstream: ")
    # the baseline is its own parent; the others' parent is the keep they were committed on
    assert r_base.parent_sha256 == r_base.child_sha256 == source_sha256(V0) and r_base.parent_val_bpb is None
    assert (r_keep.parent_sha256, r_keep.child_sha256) == (source_sha256(V0), source_sha256(V1))
    assert (r_discard.parent_sha256, r_discard.child_sha256) == (source_sha256(V1), source_sha256(V2))
    assert r_discard.parent_val_bpb == pytest.approx(0.9932)
    assert r_discard.normalised.delta_val_bpb == pytest.approx(1.005 - 0.9932)
    # outcomes: keep/discard ran (ok, val_bpb and memory as given); the crash row has no val_bpb
    assert (r_keep.outcome, r_keep.status, r_keep.metrics.val_bpb) == ("ok", "keep", pytest.approx(0.9932))
    assert r_keep.metrics.peak_vram_mib == pytest.approx(44.2 * 1024)
    assert (r_discard.outcome, r_discard.status) == ("ok", "discard")
    assert (r_crash.outcome, r_crash.status, r_crash.metrics.val_bpb) == ("crash", "crash", None)
    assert "WIDTH = 10 ** 9" in r_crash.diff
    assert git(root, "rev-parse", "--short=7", exps[2].commit or "") == discard  # found after the reset
    # results.tsv stays upstream's rows, and the loop's own experiments are numbered after them
    assert [r.commit for r in read_results(root / "results.tsv")] == [base, keep, discard, crash, "d4e5f6g"]
    assert ws.next_number() == 6
    # the parent source of an imported record is found for the federation's upload
    assert ws.source_by_sha256(source_sha256(V1)) == V1


def test_the_agents_prompt_lists_the_imported_history(upstream: tuple[Path, list[str]]) -> None:
    root, _ = upstream
    ws = _adopt(root)
    git(root, "add", "train.py")
    loop = AgentLoop(ws, tracks.get_track("tiny"), OfflineProposer(seed=1), LoopOptions(tag="t"))
    table = loop._context(None).results_table
    lines = table.splitlines()
    assert lines[1].split()[:3] == ["1", "keep", "0.997900"]
    assert lines[3].split()[:4] == ["3", "discard", "1.005000", "+0.01180"]
    assert lines[4].split()[:3] == ["4", "crash", "-"] and "double model width (OOM)" in lines[4]
    assert lines[5].split()[:3] == ["5", "discard", "0.990000"]  # no record, still shown


def test_a_malformed_row_is_one_line_naming_it_and_nothing_is_adopted(upstream: tuple[Path, list[str]]) -> None:
    root, _ = upstream
    text = (root / "results.tsv").read_text().splitlines()
    text[3] = text[3].replace("\tdiscard\t", "\tdiscarded\t")
    (root / "results.tsv").write_text("\n".join(text) + "\n")
    with pytest.raises(WorkspaceError) as info:
        _adopt(root)
    message = str(info.value)
    assert "\n" not in message
    assert message == f"cannot adopt: {root / 'results.tsv'}:4: status 'discarded' is not one of keep, discard, crash"
    assert not (root / ".autoresearch").exists() and not (root / "program.md").exists()


@pytest.mark.parametrize(
    ("row", "problem"),
    [("a1b2c3d\tabc\t1.0\tkeep\tx", "val_bpb 'abc' is not a number"),
     ("a1b2c3d\t0.000000\t0.0\tkeep\tx", "status keep needs a val_bpb > 0, got '0.000000'"),
     ("a1b2c3d\tnan\t1.0\tdiscard\tx", "val_bpb 'nan' is not a finite number ≥ 0"),
     ("not a hash!\t0.9\t1.0\tkeep\tx", "commit 'not a hash!' is not a git commit hash"),
     ("a1b2c3d\t0.9\t1.0\tkeep", "expected 5 tab-separated columns, got 4")],
)  # fmt: skip
def test_row_checks(tmp_path: Path, row: str, problem: str) -> None:
    path = tmp_path / "results.tsv"
    path.write_text(f"commit\tval_bpb\tmemory_gb\tstatus\tdescription\n{row}\n")
    with pytest.raises(ValueError) as info:
        read_results(path)
    assert str(info.value) == f"{path}:2: {problem}"


class _Publish:
    """LoopHooks that hand records straight to a real hub (register, upload the parent, submit)."""

    def __init__(self, hub: HubClient, ws: Workspace, keys: KeyPair) -> None:
        self.hub, self.ws, self.keys = hub, ws, keys
        self.published: list[ExperimentRecord] = []

    def context(self) -> HubContext:
        return HubContext()

    def claim(self, parent_source: str, child_source: str, description: str) -> ClaimAnswer | None:
        return None

    def publish(self, record: ExperimentRecord) -> None:
        parent = self.ws.source_by_sha256(record.parent_sha256)
        assert parent is not None
        self.hub.put_source(record.parent_sha256, parent)
        self.hub.submit_experiment(sign(record, self.keys))
        self.published.append(record)

    def adopt(self, best_val_bpb: float | None) -> None:
        return None


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[HubServer]:
    server = HubServer(f"sqlite:///{tmp_path / 'hub.db'}")
    server.start()
    yield server
    server.stop()


def test_imported_records_reach_the_hub_once_with_their_outcomes(upstream: tuple[Path, list[str]], hub: HubServer) -> None:
    from fed_fakes import registration

    root, _ = upstream
    ws = _adopt(root)
    keys = KeyPair.generate()
    spec = tracks.get_track("tiny")
    with HubClient(hub.url) as client:
        client.register(registration(keys))
        hooks = _Publish(client, ws, keys)
        loop = AgentLoop(ws, spec, OfflineProposer(seed=1), LoopOptions(tag="t"), hooks=hooks)
        loop._publish_imported()
        loop._publish_imported()  # a second `run`: nothing again
        assert [r.description for r in hooks.published] == [
            "upstream: baseline", "upstream: increase LR to 0.06", "upstream: LR to 0.08", "upstream: double model width (OOM)"]  # fmt: skip
        assert all(e.published_at is not None for e in ws.experiments() if e.record is not None)
        on_hub = {v.record.description: v.record for v in client.iter_experiments(track=spec.id)}
    assert set(on_hub) == {r.description for r in hooks.published}
    crash = on_hub["upstream: double model width (OOM)"]
    assert (crash.outcome, crash.status, crash.metrics.val_bpb) == ("crash", "crash", None)
    assert on_hub["upstream: LR to 0.08"].metrics.val_bpb == pytest.approx(1.005)
