"""Federation end to end: real hub on loopback, real keys, real CPU training on ``tiny``."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from autoresearch.client.demo import HubServer
from autoresearch.client.errors import ProposerError
from autoresearch.client.federation import HubHooks, register_key
from autoresearch.client.hubclient import HubClient
from autoresearch.client.loop import AgentLoop, LoopOptions
from autoresearch.client.outbox import Outbox
from autoresearch.client.proposers import Proposal, ProposalContext
from autoresearch.client.workspace import Workspace
from autoresearch.protocol import KeyPair, record_id, sign
from autoresearch.trainer import tracks
from autoresearch.trainer.run import run_training
from conftest import MAIN, Volunteer, hub_experiments

pytestmark = pytest.mark.slow
TINY = tracks.get_track("tiny")


class _Scripted:
    """Proposes the given sources in turn, then stops the loop."""

    name = "scripted"
    can_repair = False

    def __init__(self, sources: list[str]) -> None:
        self.sources = list(sources)
        self.loop: AgentLoop | None = None

    def propose(self, ctx: ProposalContext) -> Proposal:
        if not self.sources:
            assert self.loop is not None
            self.loop.request_stop()
            raise ProposerError("script finished")
        return Proposal(source=self.sources.pop(0), description="replay alice's experiment")


def _candidate(v: Volunteer) -> tuple[str, str, str]:
    """(parent source, child source, hub id) of the volunteer's first non-baseline run."""
    ws = v.ws
    exp = next((e for e in ws.experiments() if e.kind == "run" and e.number > 1), None)
    assert exp is not None, f"{v.name} ran no candidate after the baseline (did the baseline crash? see run.log)"
    assert exp.record is not None and exp.run_dir is not None
    child = (ws.root / exp.run_dir / "train.py").read_text()
    return ws.source_at(exp.parent_commit), child, record_id(exp.record)


def test_two_volunteers_publish_claims_are_answered_and_pull_applies(
    hub: HubServer, volunteers: dict[str, Volunteer], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice, bob = volunteers["alice"], volunteers["bob"]
    alice.join(hub.url, 2)
    bob.join(hub.url, 2)

    # both publish (any outcome); the hub holds exactly each volunteer's runs
    total = 0
    for v in (alice, bob):
        on_hub = hub_experiments(hub.url, TINY.id, v.keys.key_id)
        assert len(on_hub) >= 1 and {x.client_name for x in on_hub} == {v.name}
        assert sorted(x.id for x in on_hub) == sorted(v.local_record_ids())
        total += len(on_hub)
    assert len(hub_experiments(hub.url, TINY.id)) == total

    # a claim for alice's experiment is answered `done` from the hub, and the loop skips training
    parent, child, alice_id = _candidate(alice)
    carol_keys = KeyPair.generate()
    ws = Workspace.init(tmp_path / "carol", track="tiny", reference_source=parent, program_md="test\n")
    runs: list[Path] = []

    def runner(train_py: Path, *args: object, **kwargs: object):  # type: ignore[no-untyped-def]
        runs.append(train_py)
        return run_training(train_py, *args, **kwargs)  # type: ignore[arg-type]

    with HubClient(hub.url) as client:
        outbox = Outbox.for_workspace(ws.root)
        assert register_key(client, outbox, carol_keys, "carol", "cpu:test:2")
        hooks = HubHooks(
            hub=client, outbox=outbox, sender=None, keys=carol_keys, track=TINY.id,
            time_budget=TINY.time_budget, hardware_class="cpu:test:2",
        )  # fmt: skip
        answer = hooks.claim(parent, child, "replay")
        assert answer is not None and answer.status == "done"
        assert answer.experiment is not None and answer.experiment.id == alice_id
        proposer = _Scripted([child])
        loop = AgentLoop(ws, TINY, proposer, LoopOptions(tag="t", max_experiments=3, prefetch=False), hooks=hooks, runner=runner)
        proposer.loop = loop
        stats = loop.run()
    assert len(runs) == 1  # the baseline only: alice's experiment was not trained again
    assert stats.skipped == 1
    done = [e for e in ws.experiments() if e.kind == "hub_done"]
    assert len(done) == 1 and done[0].hub_experiment_id == alice_id

    # bob pulls alice's best: refused without confirmation, applied with --yes, equal to alice's kept file
    alice_best = min(
        (e for e in alice.ws.experiments() if e.kind == "run" and e.record and e.record.status == "keep"),
        key=lambda e: e.record.metrics.val_bpb,  # type: ignore[union-attr]
        default=alice.ws.experiments()[-1],  # no keep (a crashed baseline): pull her last run
    )
    assert alice_best.commit is not None and alice_best.record is not None
    alice_source = alice.ws.source_at(alice_best.commit)
    bob.ws.commit_train_py(bob.ws.train_py.read_text() + "\n# local edit\n", "local edit")
    refused = bob.cli("pull", record_id(alice_best.record), "--dir", str(bob.workspace), check=False)
    assert refused.returncode == 1 and "untrusted key" in refused.stderr
    assert bob.ws.train_py.read_text() != alice_source
    bob.cli("pull", record_id(alice_best.record), "--dir", str(bob.workspace), "--yes")
    assert bob.ws.train_py.read_text() == alice_source
    assert record_id(alice_best.record) in bob.ws.git("log", "-1", "--format=%B")

    # a trusted signer needs no --yes
    bob.ws.commit_train_py(alice_source + "\n# again\n", "local edit 2")
    (bob.home / "trusted_keys.txt").write_text(f"# alice\n{alice.keys.key_id}\n")
    bob.cli("pull", record_id(alice_best.record), "--dir", str(bob.workspace))
    assert bob.ws.train_py.read_text() == alice_source


def test_hub_down_records_wait_in_the_outbox_and_arrive_exactly_once(
    hub: HubServer, volunteers: dict[str, Volunteer]
) -> None:
    alice = volunteers["alice"]
    proc = subprocess.Popen(
        [sys.executable, "-c", MAIN, *alice.join_args(hub.url, 3)],
        env=alice.env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        while not hub_experiments(hub.url, TINY.id):
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "no experiment reached the hub"
            time.sleep(0.2)
        hub.stop()  # the baseline arrived; the next runs happen with the hub down
        _, stderr = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr[-4000:]
    local = alice.local_record_ids()
    assert len(local) == 3
    outbox = Outbox.for_workspace(alice.workspace)
    assert outbox.counts()["pending"] >= 2  # the runs made while the hub was down
    assert outbox.counts()["rejected"] == 0

    hub.start()  # same database, same port
    status = alice.cli("outbox", "--dir", str(alice.workspace), "--send")
    assert "pending 0" in status.stdout
    on_hub = [x.id for x in hub_experiments(hub.url, TINY.id, alice.keys.key_id)]
    assert sorted(on_hub) == sorted(local)  # nothing lost, nothing twice
    # sending again changes nothing
    alice.cli("outbox", "--dir", str(alice.workspace), "--send", "--all")
    assert len(hub_experiments(hub.url, TINY.id)) == 3


def test_revoked_key_is_refused_clearly_and_records_stay_local(
    hub: HubServer, volunteers: dict[str, Volunteer]
) -> None:
    alice = volunteers["alice"]
    alice.join(hub.url, 1)
    alice.cli("hub", "admin", "revoke", alice.keys.key_id, "--db", hub.db_url)

    again = alice.join(hub.url, 1, check=False)
    assert again.returncode == 1
    assert "revoked" in again.stderr and "hint:" in again.stderr
    assert len(alice.local_record_ids()) == 1  # nothing was run, nothing was lost

    # a record made after the revocation is refused and stays in the outbox, listed by `outbox`
    exp = alice.ws.experiments()[0]
    assert exp.record is not None
    late = exp.record.model_copy(update={"description": "after revocation"})
    outbox = Outbox.for_workspace(alice.workspace)
    rid = outbox.enqueue("experiment", sign(late, alice.keys))
    with HubClient(hub.url) as client:
        report = outbox.send_pending(client)
    assert [i.record_id for i in report.rejected] == [rid] and report.rejected[0].reason == "key_revoked"
    listing = alice.cli("outbox", "--dir", str(alice.workspace), "--json")
    assert '"key_revoked"' in listing.stdout and rid in listing.stdout
    assert rid not in {x.id for x in hub_experiments(hub.url, TINY.id)}
