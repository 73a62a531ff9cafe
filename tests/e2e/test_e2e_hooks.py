"""HubHooks against the real hub (uvicorn on loopback, SQLite, real keys), without training: signed
records are built directly from sources so each rule can be checked exactly."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest
from e2e_support import run_cli_inprocess

from autoresearch.client.demo import HubServer
from autoresearch.client.hubclient import HubClient
from autoresearch.client.hubhooks import HubHooks
from autoresearch.client.join import check_track, register_key
from autoresearch.client.loop import HubContext
from autoresearch.client.outbox import Outbox
from autoresearch.protocol import (
    CalibrationPoint,
    CalibrationRecord,
    CurveFit,
    ExperimentRecord,
    KeyPair,
    RunMetrics,
    SoftwareVersions,
    canonical_source_sha256,
    record_id,
    sha256_hex,
    sign,
    utc_now,
)
from autoresearch.protocol.source import unified_diff
from autoresearch.trainer import tracks

TINY = tracks.get_track("tiny")
REFERENCE = tracks.reference_source(TINY)
HW = "cpu:test-model:2"


def _set(source: str, name: str, value: str) -> str:
    """``source`` with the module constant ``name`` set to ``value`` (must change something)."""
    changed, n = re.subn(rf"^{name} = [^#\n]*", f"{name} = {value}  ", source, count=1, flags=re.M)
    assert n == 1 and changed != source
    return changed


def _calibrated(hooks: HubHooks, val_bpb: float, parent_val_bpb: float = 4.6) -> str:
    """Sign and submit a calibration of ``hooks``' own machine whose σ makes the run
    parent → ``val_bpb`` a z = 5 result (significant and plausible: the hub qualifies it alone).
    Curve: ``4 + 0.6·(T/t)`` (4.6 at the budget T, asymptote 4.0). Returns its id."""
    budget = TINY.time_budget
    machine = int(hooks.keys.key_id[:6], 16) * 1e-9  # each machine measures its own points
    points = [
        CalibrationPoint(budget_seconds=f * budget, seed=seed, val_bpb=4.0 + 0.6 / f + machine, training_seconds=f * budget,
                         num_steps=10, tokens_per_second=100.0)
        for f, seed in ((0.25, 0), (0.5, 0), (1.0, 0), (1.0, 1), (2.0, 0))
    ]
    cal = CalibrationRecord(
        track=TINY.id, hardware_class=HW, harness_version=TINY.harness_version, software=SoftwareVersions(python="3.11"),
        reference_sha256=sha256_hex(REFERENCE), time_budget_seconds=budget, points=points,
        fit=CurveFit(a=0.6 * budget, b=1.0, c=4.0, rmse=0.0), sigma=(parent_val_bpb - val_bpb) / 5,
        min_budget_seconds=0.25 * budget, max_budget_seconds=2 * budget, tokens_per_second=100.0, matmul_tflops=0.01,
        created_at=utc_now(),
    )
    hooks.hub.submit_calibration(sign(cal, hooks.keys))
    return record_id(cal)


def _calibrated_record(hooks: HubHooks, child: str, val_bpb: float, parent: str = REFERENCE) -> ExperimentRecord:
    """A kept run the hub can check (and so may make community best): on its own calibration."""
    return _record(child, val_bpb, parent).model_copy(update={"calibration_id": _calibrated(hooks, val_bpb)})


def _record(child: str, val_bpb: float, parent: str = REFERENCE) -> ExperimentRecord:
    return ExperimentRecord(
        track=TINY.id,
        parent_sha256=sha256_hex(parent),
        child_sha256=sha256_hex(child),
        parent_canonical_sha256=canonical_source_sha256(parent),
        child_canonical_sha256=canonical_source_sha256(child),
        diff=unified_diff(parent, child),
        description="test change",
        outcome="ok",
        status="keep",
        metrics=RunMetrics(val_bpb=val_bpb),
        parent_val_bpb=4.6,
        hardware_class=HW,
        software=SoftwareVersions(python="3.11"),
        harness_version=TINY.harness_version,
        created_at=utc_now(),
    )


def _hooks(client: HubClient, tmp_path: Path, name: str, *, trust: bool = False) -> HubHooks:
    keys = KeyPair.generate()
    outbox = Outbox(tmp_path / f"{name}.sqlite")
    register_key(client, outbox, keys, name, HW)
    return HubHooks(
        hub=client, outbox=outbox, sender=None, keys=keys, track=TINY.id, time_budget=TINY.time_budget,
        hardware_class=HW, trust_community_best=trust,
    )  # fmt: skip


def _publish(hooks: HubHooks, record: ExperimentRecord) -> str:
    hooks.publish(record)
    report = hooks.outbox.send_pending(hooks.hub, force=True)
    assert report.pending == 0 and not report.rejected, report
    return record_id(record)


@pytest.fixture()
def server(tmp_path: Path):  # type: ignore[no-untyped-def]
    with HubServer(f"sqlite:///{tmp_path / 'hub.db'}") as srv:
        yield srv


def test_track_check_accepts_the_local_track_and_refuses_another_harness(server: HubServer) -> None:
    from autoresearch.client.errors import UsageError

    with HubClient(server.url) as client:
        check_track(client, TINY)
        other = TINY.build(**{**TINY.model_dump(mode="json"), "harness_version": "0.9"})
        with pytest.raises(UsageError, match="harness version"):
            check_track(client, other.model_copy(update={"id": TINY.id}))


def test_claims_publish_and_context(server: HubServer, tmp_path: Path) -> None:
    child = _set(REFERENCE, "MATRIX_LR", "0.11")
    with HubClient(server.url) as client:
        alice, bob = _hooks(client, tmp_path, "alice"), _hooks(client, tmp_path, "bob")
        first = alice.claim(REFERENCE, child, "WARMUP_RATIO 0.02 → 0.03")
        assert first is not None and first.status == "granted"
        held = bob.claim(REFERENCE, child, "same idea")
        assert held is not None and held.status == "held" and held.holder_key_id == alice.keys.key_id
        # the lease covers the budget plus a margin
        assert first.lease_expires_at is not None

        rid = _publish(alice, _calibrated_record(alice, child, 4.5))
        done = bob.claim(REFERENCE, child, "same idea")
        assert done is not None and done.status == "done"
        assert done.experiment is not None and done.experiment.id == rid

        # a replicate suggestion turns "done by someone else" into a run of our own
        from autoresearch.protocol import Suggestion

        bob.expect_replications([Suggestion(kind="replicate", direction="MATRIX_LR ↑", rationale="confirm", train_py=child)])
        again = bob.claim(REFERENCE, child, "same idea")
        assert again is not None and again.status == "granted"
        # …but a client never replicates its own result
        alice.expect_replications([Suggestion(kind="replicate", direction="MATRIX_LR ↑", rationale="confirm", train_py=child)])
        own = alice.claim(REFERENCE, child, "my own result")
        assert own is not None and own.status == "done"

        ctx = bob.context()
        assert isinstance(ctx, HubContext)
        assert ctx.community_best is not None and ctx.community_best.experiment is not None
        assert ctx.community_best.experiment.id == rid and ctx.community_best.train_py == child


def test_publish_uploads_an_unknown_parent(server: HubServer, tmp_path: Path) -> None:
    parent = _set(REFERENCE, "MATRIX_LR", "0.12")
    child = _set(parent, "SCALAR_LR", "0.6")
    with HubClient(server.url) as client:
        alice = _hooks(client, tmp_path, "alice")
        alice.remember_source(parent)  # what claim() does for every candidate
        rid = _publish(alice, _record(child, 4.4, parent=parent))
        assert client.source(sha256_hex(parent)) == parent
        assert client.experiment(rid).child_source == child


def test_adopt_follows_the_trust_rule_and_the_policy(
    server: HubServer, tmp_path: Path, clean_env: Path, caplog: pytest.LogCaptureFixture
) -> None:
    better = _set(REFERENCE, "EMBEDDING_LR", "0.7")
    with HubClient(server.url) as client:
        alice = _hooks(client, tmp_path, "alice")
        bob = _hooks(client, tmp_path, "bob")
        trusting = _hooks(client, tmp_path, "carol", trust=True)
        rid = _publish(alice, _calibrated_record(alice, better, 4.3))

        assert alice.adopt(4.5) is None  # her own
        assert bob.adopt(4.2) is None  # ours is better
        with caplog.at_level(logging.INFO):
            assert bob.adopt(4.5) is None  # not trusted
        assert "not trusted" in caplog.text
        adoption = trusting.adopt(4.5)
        assert adoption is not None and adoption.source == better and adoption.experiment_id == rid
        assert adoption.description == f"adopt community best (val_bpb=4.300000 from {alice.keys.key_id[:16]})"
        assert trusting.adopt(4.5) is None  # offered once
        (clean_env / "trusted_keys.txt").write_text(alice.keys.key_id + "\n")
        assert bob.adopt(4.5) is not None

        hostile = REFERENCE + "\nimport socket\n"
        _publish(bob, _calibrated_record(bob, hostile, 4.1))
        with caplog.at_level(logging.WARNING):
            assert _hooks(client, tmp_path, "dave", trust=True).adopt(4.5) is None  # the policy refuses it
        assert "fails the policy check" in caplog.text


def test_a_down_hub_gives_an_empty_context_logged_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    keys = KeyPair.generate()
    with HubClient(f"http://127.0.0.1:{port}", timeout=2.0) as client:
        hooks = HubHooks(
            hub=client, outbox=Outbox(tmp_path / "o.sqlite"), sender=None, keys=keys, track=TINY.id,
            time_budget=TINY.time_budget, hardware_class=HW,
        )  # fmt: skip
        with caplog.at_level(logging.WARNING):
            assert hooks.context() == HubContext()
            assert hooks.claim(REFERENCE, REFERENCE + "\n", "x") is None
            assert hooks.adopt(4.0) is None
        hooks.publish(_record(_set(REFERENCE, "MATRIX_LR", "0.11"), 4.5))
    assert caplog.text.count("hub unavailable") == 1
    assert hooks.outbox.counts()["pending"] == 1


def test_findings_and_show_read_what_was_published(
    server: HubServer, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    child = _set(REFERENCE, "MATRIX_LR", "0.25")  # the tiny reference has 0.2: MATRIX_LR ↑
    with HubClient(server.url) as client:
        rid = _publish(_hooks(client, tmp_path, "alice"), _record(child, 4.25))
    code, out, err = run_cli_inprocess(capsys, monkeypatch, "findings", "--hub", server.url, "--track", "tiny", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert [e["experiment_id"] for e in data["leaderboard"][HW]] == [rid]
    assert [v["id"] for v in data["recent_keeps"]] == [rid]
    assert any(d["direction"] == "MATRIX_LR ↑" for d in data["directions"]), data["directions"]
    code, out, err = run_cli_inprocess(capsys, monkeypatch, "findings", "--hub", server.url, "--track", "tiny")
    assert code == 0 and "leaderboard — " + HW in out and "alice" in out and "MATRIX_LR ↑" in out

    code, out, err = run_cli_inprocess(capsys, monkeypatch, "show", rid, "--hub", server.url)
    assert code == 0, err
    assert "test change" in out and "+MATRIX_LR = 0.25" in out and "4.250000" in out
    code, out, err = run_cli_inprocess(capsys, monkeypatch, "show", "f" * 64, "--hub", server.url)
    assert code == 1 and "404" in err


def test_read_commands_need_a_hub(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli_inprocess(capsys, monkeypatch, "findings")
    assert code == 1 and "no hub given" in err and "hint:" in err


def test_pull_verifies_the_served_source_against_the_signed_record(server: HubServer, tmp_path: Path) -> None:
    import httpx

    from autoresearch.client.errors import HubError
    from autoresearch.client.pull import fetch_pull

    child = _set(REFERENCE, "MATRIX_LR", "0.14")
    with HubClient(server.url) as client:
        alice = _hooks(client, tmp_path, "alice")
        rid = _publish(alice, _calibrated_record(alice, child, 4.2))
        pulled = fetch_pull(client, TINY.id, experiment_id=rid)
        assert (pulled.source, pulled.key_id, pulled.record_id) == (child, alice.keys.key_id, rid)
        best = fetch_pull(client, TINY.id, hardware_class=HW)
        assert best.record_id == rid

    real = httpx.Client()

    def tampering(request: httpx.Request) -> httpx.Response:
        answer = real.send(httpx.Request(request.method, request.url, headers=request.headers, content=request.content))
        if request.url.path == f"/api/v1/experiments/{rid}":
            body = answer.json()
            body["child_source"] = child + "\nimport os\n"
            return httpx.Response(200, json=body)
        return httpx.Response(answer.status_code, content=answer.content, headers=answer.headers)

    with HubClient(server.url, http=httpx.Client(transport=httpx.MockTransport(tampering))) as lying:
        with pytest.raises(HubError, match="does not hash to the signed child_sha256"):
            fetch_pull(lying, TINY.id, experiment_id=rid)
    real.close()
