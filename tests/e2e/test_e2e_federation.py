"""Federation end to end: real hub on loopback, real keys, real CPU training on ``tiny``."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from e2e_support import MAIN, Volunteer, hub_experiments

from autoresearch.client.demo import HubServer
from autoresearch.client.display import VolunteerStatus
from autoresearch.client.errors import ProposerError
from autoresearch.client.hubclient import HubClient
from autoresearch.client.hubhooks import HubHooks
from autoresearch.client.join import register_key
from autoresearch.client.loop import AgentLoop, LoopOptions
from autoresearch.client.outbox import Outbox
from autoresearch.client.proposers import Proposal, ProposalContext
from autoresearch.client.workspace import Workspace
from autoresearch.protocol import CalibrationRecord, KeyPair, record_id, sha256_hex, sign
from autoresearch.trainer import tracks
from autoresearch.trainer.run import run_training

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
    joined = alice.join(hub.url, 2, "--status-file", str(tmp_path / "alice.status.json"))  # as under the demo's table
    bob.join(hub.url, 2)
    snap = VolunteerStatus.read(tmp_path / "alice.status.json")
    assert snap is not None and (snap.phase, snap.of) == ("done", 2) and snap.keeps + snap.discards + snap.crashes == 2
    assert not re.search(r"\] step \d+ loss", joined.stderr)  # progress is the watcher's, not quarter lines

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


def test_private_hub_needs_an_enrollment_token(tmp_path: Path, volunteers: dict[str, Volunteer]) -> None:
    alice = volunteers["alice"]
    with HubServer(f"sqlite:///{tmp_path / 'private.db'}", private=True) as server:
        refused = alice.join(server.url, 0, check=False)
        assert refused.returncode == 1
        assert "token_required" in refused.stderr and "--token" in refused.stderr
        token = alice.cli("hub", "admin", "tokens", "create", "--kind", "enroll", "--db", server.db_url).stdout.strip()
        alice.join(server.url, 0, "--token", token)
        with HubClient(server.url, token=token) as client:
            assert client.client(alice.keys.key_id).display_name == "alice"
        assert "bad_token" in alice.join(server.url, 0, "--token", "wrong", check=False).stderr


def _calibration(keys: KeyPair, hardware_class: str) -> CalibrationRecord:
    """A plausible signed calibration of tiny on this machine (bpb(t) = 4.3 + 0.7·t^-0.5)."""
    from autoresearch.protocol import CalibrationPoint, CurveFit, SoftwareVersions, utc_now

    budgets = [1.0, 2.0, 4.0, 8.0, 4.0]
    points = [
        CalibrationPoint(
            budget_seconds=t, seed=i, val_bpb=4.3 + 0.7 * t**-0.5 + (0.01 if i == 4 else 0.0),
            training_seconds=t, num_steps=10, tokens_per_second=1000.0,
        )  # fmt: skip
        for i, t in enumerate(budgets)
    ]
    return CalibrationRecord(
        track=TINY.id, hardware_class=hardware_class, harness_version=TINY.harness_version,
        software=SoftwareVersions(python="3.11"), reference_sha256=sha256_hex(tracks.reference_source(TINY)),
        time_budget_seconds=TINY.time_budget, points=points, fit=CurveFit(a=0.7, b=0.5, c=4.3, rmse=0.003),
        sigma=0.007, min_budget_seconds=1.0, max_budget_seconds=8.0, tokens_per_second=1000.0,
        matmul_tflops=0.05, created_at=utc_now(),
    )  # fmt: skip


def test_join_reuses_the_cached_calibration_and_publishes_it(
    hub: HubServer, volunteers: dict[str, Volunteer], monkeypatch: pytest.MonkeyPatch
) -> None:
    from autoresearch.client import calibration
    from autoresearch.trainer.hardware import hardware_class_for

    alice = volunteers["alice"]
    keys = KeyPair.generate()
    keys.save(alice.home / "keys" / "ed25519.pem")
    monkeypatch.setenv("AUTORESEARCH_HOME", str(alice.home))
    cal = _calibration(keys, hardware_class_for(TINY.device))
    path = calibration.cache_path(TINY, cal.hardware_class)
    path.parent.mkdir(parents=True)
    path.write_text(sign(cal, keys).to_json())
    assert calibration.load_cached(TINY, cal.hardware_class) == cal

    alice.cli(*[a for a in alice.join_args(hub.url, 1) if a != "--no-calibrate"])
    (on_hub,) = hub_experiments(hub.url, TINY.id, keys.key_id)
    assert on_hub.record.calibration_id == record_id(cal)
    assert on_hub.record.normalised.sigma == cal.sigma
    sent = Outbox.for_workspace(alice.workspace).items(("sent",))
    assert [i.kind for i in sent] == ["calibration", "experiment"]


@pytest.mark.parametrize(("track", "hardware_class"), [("climbmix", "NVIDIA H100 80GB HBM3"), ("cpu", "cpu:unseen-test-class")])
def test_calibration_is_not_started_unattended_without_yes(tmp_path: Path, track: str, hardware_class: str) -> None:
    """GPU and CPU tracks alike: without --yes and without a terminal to ask on, nothing runs."""
    from autoresearch.client.commands.federation import ask
    from autoresearch.client.errors import UsageError
    from autoresearch.client.join import ensure_calibration

    outbox = Outbox(tmp_path / "o")
    with pytest.raises(UsageError, match="minutes") as info:
        ensure_calibration(tracks.get_track(track), hardware_class, KeyPair.generate(), outbox, confirm=ask)
    assert info.value.hint and "--yes" in info.value.hint
    assert outbox.items() == []
