"""A client that trusts no hub: `join`, `pull`, `findings`, `show` and the outbox against a hostile
hub (tests/client/hostile_hub.py: the real hub app behind an attacking ASGI layer, real uvicorn on
loopback, real keys). Each test states the attack and asserts its concrete outcome: one clear line,
no traceback, no hang, nothing run that does not match its signature, no record lost.

The total deadline of a hub request is set to 1 s here (``AUTORESEARCH_HUB_DEADLINE``) so a dripping
hub costs the tests seconds; nothing asserts how long anything took.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from cli_run import run_cli
from hostile_hub import HostileHub

from autoresearch.client.errors import BadHubResponse, HubUnavailable
from autoresearch.client.hubclient import HubClient
from autoresearch.client.hubhooks import HubHooks
from autoresearch.client.join import JoinOptions, join, register_key
from autoresearch.client.loop import HubContext, LoopStats
from autoresearch.client.outbox import Outbox
from autoresearch.client.workspace import Workspace
from autoresearch.protocol import (
    CalibrationPoint,
    CalibrationRecord,
    CurveFit,
    ExperimentRecord,
    ExperimentView,
    KeyPair,
    RunMetrics,
    SoftwareVersions,
    Suggestion,
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
BROKEN = ("nested", "drip", "huge", "wrong_schema", "not_json")
"""Answers no client may use: each must end in one clear line."""
EXPECTED = {
    "nested": "recursion limit",
    "drip": "deadline",
    "huge": "more than",
    "wrong_schema": "unexpected body",
    "not_json": "unexpected body",
}


def _set(source: str, name: str, value: str) -> str:
    changed, n = re.subn(rf"^{name} = [^#\n]*", f"{name} = {value}  ", source, count=1, flags=re.M)
    assert n == 1 and changed != source
    return changed


def _record(child: str, val_bpb: float, *, parent: str = REFERENCE, description: str = "test change") -> ExperimentRecord:
    return ExperimentRecord(
        track=TINY.id, parent_sha256=sha256_hex(parent), child_sha256=sha256_hex(child),
        parent_canonical_sha256=canonical_source_sha256(parent), child_canonical_sha256=canonical_source_sha256(child),
        diff=unified_diff(parent, child), description=description, outcome="ok", status="keep",
        metrics=RunMetrics(val_bpb=val_bpb), parent_val_bpb=4.6, hardware_class=HW,
        software=SoftwareVersions(python="3.11"), harness_version=TINY.harness_version, created_at=utc_now(),
    )  # fmt: skip


def _calibrate(hooks: HubHooks, machine: int) -> str:
    """Publish a calibration for ``hooks``' key on the curve ``bpb(t) = 2 + 1/t`` (σ 0.01; ``machine``
    shifts the points so two keys' calibrations differ). Returns its id."""
    points = [
        CalibrationPoint(budget_seconds=b, seed=seed, val_bpb=2.0 + 1.0 / b + machine * 1e-4, training_seconds=b,
                         num_steps=10, tokens_per_second=1000.0)
        for b, seed in [(1.0, 0), (2.0, 0), (4.0, 0), (4.0, 1), (8.0, 0)]
    ]  # fmt: skip
    cal = CalibrationRecord(
        track=TINY.id, hardware_class=HW, harness_version=TINY.harness_version, software=SoftwareVersions(python="3.11"),
        reference_sha256=TINY.reference_sha256, time_budget_seconds=TINY.time_budget, points=points,
        fit=CurveFit(a=1.0, b=1.0, c=2.0, rmse=0.001), sigma=0.01, min_budget_seconds=1.0, max_budget_seconds=8.0,
        tokens_per_second=1000.0, matmul_tflops=0.1, created_at=utc_now(),
    )  # fmt: skip
    hooks.outbox.enqueue("calibration", sign(cal, hooks.keys))
    report = hooks.outbox.send_pending(hooks.hub, force=True)
    assert report.pending == 0 and not report.rejected, report
    return record_id(cal)


def _calibrated(record: ExperimentRecord, calibration_id: str) -> ExperimentRecord:
    """``record`` measured against the calibrated parent (2.25 at the 4 s budget)."""
    return record.model_copy(update={"parent_val_bpb": 2.25, "calibration_id": calibration_id})


def _hooks(client: HubClient, tmp_path: Path, name: str, *, trust: bool = False) -> HubHooks:
    keys = KeyPair.generate()
    outbox = Outbox(tmp_path / f"{name}.sqlite")
    assert register_key(client, outbox, keys, name, HW)
    return HubHooks(
        hub=client, outbox=outbox, sender=None, keys=keys, track=TINY.id, time_budget=TINY.time_budget,
        hardware_class=HW, trust_community_best=trust,
    )  # fmt: skip


def _publish(hooks: HubHooks, record: ExperimentRecord) -> str:
    hooks.publish(record)
    report = hooks.outbox.send_pending(hooks.hub, force=True)
    assert report.pending == 0 and not report.rejected, report
    return record_id(record)


def _one_error(err: str) -> str:
    """The ``error:`` line of a CLI failure, after checking it is one line (plus a hint) and no traceback."""
    assert "Traceback" not in err and "RecursionError" not in err, err
    lines = [line for line in err.splitlines() if line.startswith(("error:", "hint:"))]
    assert [line.split(":")[0] for line in lines] in (["error"], ["error", "hint"]), err
    return lines[0]


@pytest.fixture(autouse=True)
def short_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTORESEARCH_HUB_DEADLINE", "8")  # short for the drip tests; long enough for a loaded CI machine


@pytest.fixture()
def hub(tmp_path: Path) -> Iterator[HostileHub]:
    with HostileHub(f"sqlite:///{tmp_path / 'hub.db'}") as server:
        yield server


@pytest.fixture()
def alice(hub: HostileHub, tmp_path: Path) -> Iterator[tuple[HubHooks, str, str]]:
    """Alice published one kept experiment (honestly): her hooks, its id and its child train.py."""
    child = _set(REFERENCE, "MATRIX_LR", "0.13")
    with HubClient(hub.url) as client:
        hooks = _hooks(client, tmp_path, "alice")
        yield hooks, _publish(hooks, _record(child, 4.25)), child


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    return lambda *args: run_cli(capsys, monkeypatch, *args)


# --------------------------------------------------------------------------------------------------
# findings and show


@pytest.mark.parametrize("attack", BROKEN)
def test_findings_and_show_end_in_one_line_on_each_broken_answer(cli, hub: HostileHub, alice, attack: str) -> None:  # type: ignore[no-untyped-def]
    _, rid, _ = alice
    hub.attack(r"^GET /api/v1/(tracks/[^/]+/leaderboard|experiments/[0-9a-f]{64})$", attack)
    for args in (("findings", "--hub", hub.url, "--track", "tiny"), ("show", rid, "--hub", hub.url)):
        result = cli(*args)
        assert result.code == 1, result
        assert EXPECTED[attack] in _one_error(result.err)
    assert hub.hits[attack] == 2


def test_hostile_text_is_shown_as_text_in_findings_and_show(cli, hub: HostileHub, alice, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    """Attack: descriptions, names and directions carrying a window-title OSC, a screen clear, an OSC 8
    hyperlink, a bidi override, an 8-bit CSI and rich markup (`[/]` used to make these exit 1)."""
    _, rid, _ = alice
    from autoresearch.client import console

    monkeypatch.setenv("COLUMNS", "2000")  # no cell wrapping, so each field reads in one piece
    monkeypatch.setattr(console, "_stdout", None)
    hub.attack(r"^(GET|POST) /api/v1/", "hostile_text")
    for args in (("findings", "--hub", hub.url, "--track", "tiny"), ("show", rid, "--hub", hub.url)):
        result = cli(*args)
        assert result.code == 0, result.err
        for raw in ("\x1b", "\x07", "\x9b", "\u202e"):
            assert raw not in result.out + result.err
        assert "\\x1b]0;pwned\\x07" in result.out and "[/][bold red]x[/]" in result.out  # shown, not obeyed
        assert "\\u202e" in result.out


# --------------------------------------------------------------------------------------------------
# pull


def _bob_workspace(tmp_path: Path) -> Workspace:
    return Workspace.init(tmp_path / "bob", track="tiny", reference_source=REFERENCE, program_md="# research\n")


@pytest.mark.parametrize(
    ("attack", "expected"),
    [
        ("tampered_code", "does not hash to the signed child_sha256"),
        ("nested_code", "nests too deeply"),
        ("lying_signer", "but its envelope is signed by"),
        *[(a, EXPECTED[a]) for a in BROKEN],
    ],
)
def test_pull_refuses_what_does_not_match_its_signature(  # type: ignore[no-untyped-def]
    cli, hub: HostileHub, alice, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, attack: str, expected: str
) -> None:
    """Attack: the hub swaps the code under a signed record, serves code nested past the parser's
    recursion, or says the code is another key's; or breaks the answer. `pull --yes` must refuse and
    leave train.py and the branch as they were."""
    _, rid, _ = alice
    ws = _bob_workspace(tmp_path)
    head = ws.head()
    hub.lie_key_id = KeyPair.generate().key_id
    hub.attack(r"^GET /api/v1/experiments/[0-9a-f]{64}$", attack)
    monkeypatch.chdir(ws.root)
    result = cli("pull", rid, "--yes", "--hub", hub.url)
    assert result.code == 1, result
    assert expected in _one_error(result.err)
    assert ws.train_py.read_text() == REFERENCE and ws.head() == head


# --------------------------------------------------------------------------------------------------
# adoption and suggestions inside join's hooks


@pytest.mark.parametrize(("attack", "expected"), [("tampered_code", "does not hash"), ("lying_signer", "signed by")])
def test_adoption_runs_no_code_that_its_signature_does_not_name(  # type: ignore[no-untyped-def]
    hub: HostileHub, alice, tmp_path: Path, clean_env: Path, caplog: pytest.LogCaptureFixture, attack: str, expected: str
) -> None:
    """Attack: bob trusts alice. Mallory publishes a better train.py; the hub serves it as the community
    best with alice's key id (lying signer), or serves alice's best with the code swapped."""
    alice_hooks, _, child = alice
    (clean_env / "trusted_keys.txt").write_text(alice_hooks.keys.key_id + "\n")
    with HubClient(hub.url) as client:  # a community best needs calibrated runs that qualify (protocol.best)
        _publish(alice_hooks, _calibrated(_record(child, 2.20), _calibrate(alice_hooks, 1)))  # z = 5
        mallory = _hooks(client, tmp_path, "mallory")
        if attack == "lying_signer":
            cal = _calibrate(mallory, 2)
            _publish(mallory, _calibrated(_record(_set(REFERENCE, "EMBEDDING_LR", "0.7"), 2.19), cal))  # z = 6
            hub.lie_key_id = alice_hooks.keys.key_id
        bob = _hooks(client, tmp_path, "bob")
        hub.attack(r"^GET /api/v1/tracks/[^/]+/best$", attack)
        with caplog.at_level(logging.WARNING):
            assert bob.adopt(4.5) is None
    assert "not adopting the community best" in caplog.text and expected in caplog.text


def test_suggestions_with_deeply_nested_code_or_hostile_text_reach_no_proposer(  # type: ignore[no-untyped-def]
    hub: HostileHub, alice, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Attack: a suggestion whose train_py nests 5 000 levels (it crashed `join` with a RecursionError)
    and suggestions whose text carries escape sequences into the LLM prompt and the terminal."""
    from autoresearch.client.proposers import ProposalContext
    from autoresearch.client.proposers.anthropic_api import AnthropicProposer

    with HubClient(hub.url) as client:
        bob = _hooks(client, tmp_path, "bob", trust=True)
        sugg = bob.suggestions()
        assert sugg is not None and sugg.items, "the honest hub suggests something after alice's keep"
        hub.attack(r"/suggestions$", "hostile_text")
        ctx = bob.context()
        hub.calm()
        hub.attack(r"/suggestions$", "nested_code").attack(r"/best$", "nested_code")
        with caplog.at_level(logging.WARNING):
            nested = bob.context()
    assert isinstance(ctx, HubContext) and ctx.suggestions
    for s in ctx.suggestions:
        assert "\x1b" not in s.direction + s.rationale and "\\x1b]0;pwned" in s.rationale
    prompt = AnthropicProposer._user_content(ProposalContext(program_md="", train_py=REFERENCE, suggestions=ctx.suggestions))
    assert "\x1b" not in str(prompt) and "\\x1b]0;pwned" in str(prompt)
    assert nested.community_best is None  # refused (logged once as a hub failure)
    assert all(s.train_py is None for s in nested.suggestions)
    assert "nests too deeply" in caplog.text or "nests" in caplog.text


def test_replicate_suggestion_code_is_kept_only_when_its_signed_record_names_it(  # type: ignore[no-untyped-def]
    hub: HostileHub, alice, tmp_path: Path
) -> None:
    _, rid, child = alice
    with HubClient(hub.url) as client:
        bob = _hooks(client, tmp_path, "bob", trust=True)
        honest = Suggestion(kind="replicate", direction="MATRIX_LR ↑", rationale="confirm", experiment_id=rid, train_py=child)
        swapped = honest.model_copy(update={"train_py": child + "\nEVIL = 1\n"})
        assert bob._check_code(honest) is None
        problem = bob._check_code(swapped)
    assert problem is not None and "does not hash to the signed child_sha256" in problem


def test_a_claim_answered_done_with_an_unrelated_experiment_is_not_believed(  # type: ignore[no-untyped-def]
    hub: HostileHub, alice, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Attack: the hub answers every claim `done` with some other experiment, so the loop would skip
    every run and never train. The hooks must treat it as a hub failure and run solo."""
    _, rid, _ = alice
    with HubClient(hub.url) as client:
        hub.done_with = client.experiment(rid).model_dump(mode="json", by_alias=True, include=set(ExperimentView.model_fields))
        bob = _hooks(client, tmp_path, "bob")
        hub.attack(r"^POST /api/v1/claims$", "done_lie")
        with caplog.at_level(logging.WARNING):
            answer = bob.claim(REFERENCE, _set(REFERENCE, "MATRIX_LR", "0.51"), "MATRIX_LR 0.04 → 0.51")
    assert answer is None  # proceed solo: run it
    assert "carrying on solo" in caplog.text and "unrelated experiment" in caplog.text


# --------------------------------------------------------------------------------------------------
# join: carries on solo with one line, loses nothing


def _scripted_loop(ws: Workspace, spec: tracks.TrackSpec, hooks: HubHooks) -> LoopStats:
    """What the loop asks of its hooks in two experiments, without training."""
    child = _set(REFERENCE, "MATRIX_LR", "0.21")
    stats = LoopStats()
    for _ in range(3):
        hooks.context()
    hooks.claim(REFERENCE, child, "MATRIX_LR 0.04 → 0.21")
    hooks.publish(_record(child, 4.4))
    hooks.publish(_record(_set(REFERENCE, "MATRIX_LR", "0.22"), 4.5, description="MATRIX_LR 0.04 → 0.22"))
    hooks.adopt(4.4)
    stats.runs = 2
    return stats


@pytest.mark.parametrize("attack", BROKEN)
def test_join_carries_on_solo_with_one_line_and_loses_no_record(
    hub: HostileHub, tmp_path: Path, caplog: pytest.LogCaptureFixture, attack: str
) -> None:
    """Attack: every answer of the hub is broken in one way (drip, huge, nested, wrong schema, not
    JSON). `join` must run its loop, say once why it is solo, and keep every record for later."""
    hub.attack(r"^(GET|POST|PUT) /api/v1/", attack)
    opts = JoinOptions(hub_url=hub.url, init=tmp_path / "ws", track="tiny", display_name="bob", yes=True, calibrate=False)
    with caplog.at_level(logging.INFO):
        stats = join(opts, _scripted_loop)
    assert stats.runs == 2
    solo = [r for r in caplog.records if "carrying on solo" in r.getMessage()]
    assert len(solo) == 1 and EXPECTED[attack] in solo[0].getMessage(), [r.getMessage() for r in solo]
    outbox = Outbox.for_workspace(tmp_path / "ws")
    assert outbox.counts() == {"pending": 3, "sent": 0, "rejected": 0}  # registration + 2 experiments

    hub.calm()  # the hub recovers: everything goes out, once
    with HubClient(hub.url) as client:
        report = outbox.send_pending(client, force=True)
        assert (report.sent, report.pending, report.rejected) == (3, 0, [])
        assert len(list(client.iter_experiments(track=TINY.id))) == 2


def test_join_survives_a_hub_whose_answers_carry_hostile_code(hub: HostileHub, alice, tmp_path: Path) -> None:
    hub.attack(r"/(suggestions|best)$", "nested_code")
    opts = JoinOptions(hub_url=hub.url, init=tmp_path / "ws", track="tiny", display_name="bob", yes=True, calibrate=False)
    assert join(opts, _scripted_loop).runs == 2
    hub.calm()
    with HubClient(hub.url) as client:
        assert Outbox.for_workspace(tmp_path / "ws").send_pending(client, force=True).pending == 0


# --------------------------------------------------------------------------------------------------
# the outbox under attack


@pytest.mark.parametrize("attack", BROKEN)
def test_outbox_keeps_records_pending_through_each_broken_answer(hub: HostileHub, tmp_path: Path, attack: str) -> None:
    """Attack: the hub breaks its answer to the submission itself. The record may or may not have
    been stored; the outbox must keep it pending (never rejected, never lost) and resend it."""
    with HubClient(hub.url) as client:
        alice = _hooks(client, tmp_path, "alice")
        hub.attack(r"^POST /api/v1/experiments$", attack)
        alice.publish(_record(_set(REFERENCE, "MATRIX_LR", "0.31"), 4.4))
        alice.publish(_record(_set(REFERENCE, "MATRIX_LR", "0.32"), 4.5))
        report = alice.outbox.send_pending(client, force=True)
        assert (report.pending, report.rejected, report.sent) == (2, [], 0)
        assert EXPECTED[attack] in (report.unavailable or "")
        hub.calm()
        report = alice.outbox.send_pending(client, force=True)
        assert report.pending == 0 and report.sent + report.already_there == 2
        assert len(list(client.iter_experiments(track=TINY.id))) == 2


def test_outbox_send_command_is_one_line_on_a_dripping_hub(cli, hub: HostileHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    opts = JoinOptions(hub_url=hub.url, init=tmp_path / "ws", track="tiny", display_name="bob", yes=True, calibrate=False)
    hub.attack(r"^(GET|POST) /api/v1/", "drip")
    join(opts, _scripted_loop)
    result = cli("outbox", "--send", "--dir", str(tmp_path / "ws"))
    assert result.code == 0 and "Traceback" not in result.err
    assert "pending 3" in result.err and "deadline" in result.err


# --------------------------------------------------------------------------------------------------
# clock skew


def test_a_fast_clock_is_warned_once_claims_are_restamped_and_records_wait_not_rejected(
    hub: HostileHub, alice, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Attack (of circumstance): this machine's clock is 10 minutes ahead of the hub's. Before, every
    record was refused as future and the process exited 0 with nothing on the hub and no warning."""
    from autoresearch.hub.routes import claims, experiments

    with HubClient(hub.url) as client:
        bob = _hooks(client, tmp_path, "bob")
        hub.clock_offset_seconds = -600.0
        for module in (claims, experiments):
            monkeypatch.setattr(module, "utc_now", lambda: utc_now() - timedelta(seconds=600))
        child = _set(REFERENCE, "MATRIX_LR", "0.41")
        with caplog.at_level(logging.WARNING):
            answer = bob.claim(REFERENCE, child, "MATRIX_LR 0.04 → 0.41")  # signed with this machine's time
            bob.claim(REFERENCE, _set(REFERENCE, "MATRIX_LR", "0.42"), "another")
        assert answer is not None and answer.status == "granted"  # re-stamped in the hub's time
        assert client.clock_skew_seconds is not None and 590 < client.clock_skew_seconds < 610
        assert caplog.text.count("ahead of the hub's") == 1

        bob.publish(_record(child, 4.4))
        report = bob.outbox.send_pending(client, force=True)
        assert (report.pending, report.rejected, report.future) == (1, [], 1)
        item = bob.outbox.items(("pending",))[0]
        assert item.reason == "future_timestamp" and item.state == "pending"

        hub.clock_offset_seconds = 0.0  # the hub's clock catches up (or this one is fixed)
        monkeypatch.undo()
        report = bob.outbox.send_pending(client, force=True)
        assert (report.pending, report.sent, report.future) == (0, 1, 0)


def test_a_cli_run_never_shows_a_recursion_error_or_traceback_for_nested_envelopes(  # type: ignore[no-untyped-def]
    cli, hub: HostileHub, alice, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, rid, _ = alice
    ws = _bob_workspace(tmp_path)
    hub.attack(r"/envelope$", "nested")
    monkeypatch.chdir(ws.root)
    result = cli("pull", rid, "--yes", "--hub", hub.url)
    assert result.code == 1 and "recursion limit" in _one_error(result.err)


def test_hub_client_errors_are_typed(hub: HostileHub, alice) -> None:  # type: ignore[no-untyped-def]
    _, rid, _ = alice
    with HubClient(hub.url) as client:
        hub.attack("/leaderboard$", "drip")
        with pytest.raises(HubUnavailable, match="deadline"):
            client.leaderboard(TINY.id)
        hub.calm()
        hub.attack("/leaderboard$", "huge")
        with pytest.raises(BadHubResponse, match="more than"):
            client.leaderboard(TINY.id)
        hub.calm()
        assert client.leaderboard(TINY.id).track == TINY.id  # the same client still works


def test_interrupt_ends_a_request_that_a_dripping_hub_holds(hub: HostileHub, monkeypatch: pytest.MonkeyPatch) -> None:
    """What lets `join` exit promptly: the outbox sender's request in flight is interrupted."""
    monkeypatch.setenv("AUTORESEARCH_HUB_DEADLINE", "600")
    hub.attack("/leaderboard$", "drip")
    errors: list[Exception] = []
    with HubClient(hub.url) as client:

        def call() -> None:
            try:
                client.leaderboard(TINY.id)
            except HubUnavailable as exc:
                errors.append(exc)

        thread = threading.Thread(target=call)
        thread.start()
        while not hub.hits["drip"]:
            time.sleep(0.05)
        client.interrupt()
        thread.join(timeout=120)
    assert not thread.is_alive() and len(errors) == 1 and "interrupted" in str(errors[0])


@pytest.mark.slow
def test_a_real_join_on_a_dripping_hub_trains_solo_and_delivers_later(hub: HostileHub, tmp_path: Path) -> None:
    """Attack: every API answer drips one byte every 2 s. Before, `join` froze with the CPU/GPU idle.
    The real `autoresearch join` (tiny track, real training) must say once that it is solo, train,
    exit 0, and keep its records; once the hub is honest, `outbox --send` delivers them."""
    hub.drip_interval, hub.drip_seconds = 2.0, 600.0
    hub.attack(r"^(GET|POST|PUT) /api/v1/", "drip")
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTORESEARCH_")}
    env.update(AUTORESEARCH_HOME=str(home), NO_COLOR="1", COLUMNS="200")  # the default deadlines
    main = "from autoresearch.client.cli import main; main()"
    ws = tmp_path / "ws"
    args = [
        "join", hub.url, "--init", str(ws), "--track", "tiny", "--name", "bob", "--yes", "--no-calibrate",
        "--proposer", "offline", "--max-experiments", "1", "--adopt-every", "0",
    ]  # fmt: skip
    proc = subprocess.run([sys.executable, "-c", main, *args], env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert proc.stderr.count("carrying on solo") == 1 and "deadline" in proc.stderr
    local = [e for e in Workspace.open(ws).experiments() if e.kind == "run"]
    assert len(local) == 1
    hub.calm()
    send = subprocess.run([sys.executable, "-c", main, "outbox", "--send", "--dir", str(ws)], env=env, capture_output=True, text=True, timeout=300)
    assert send.returncode == 0, send.stderr
    assert Outbox.for_workspace(ws).counts()["pending"] == 0
    with HubClient(hub.url) as client:
        assert [v.id for v in client.iter_experiments(track=TINY.id)] == [record_id(local[0].record)]


def test_combine_code_is_rederived_from_the_signed_experiments(  # type: ignore[no-untyped-def]
    hub: HostileHub, alice, tmp_path: Path, clean_env: Path
) -> None:
    """Attack: a combine suggestion is made by the hub and signed by nobody, so a hub could slip any
    code into "the merge of A and B". The client redoes the merge from A's and B's signed records and
    runs the hub's file only when it is that merge, byte for byte, and both signers are trusted."""
    from autoresearch.client.hubtrust import derive_combined
    from autoresearch.protocol.source import merge_three_way

    alice_hooks, a_id, a_child = alice
    with HubClient(hub.url) as client:
        carol = _hooks(client, tmp_path, "carol")
        b_child = _set(REFERENCE, "EMBEDDING_LR", "0.7")
        b_id = _publish(carol, _record(b_child, 4.3))
        merged = merge_three_way(REFERENCE, a_child, b_child)
        honest = Suggestion(kind="combine", direction="EMBEDDING_LR ↑ + MATRIX_LR ↑", rationale="merge",
                            evidence=[a_id, b_id], parent_sha256=sha256_hex(REFERENCE), train_py=merged)  # fmt: skip
        assert derive_combined(client, honest) == (merged, [alice_hooks.keys.key_id, carol.keys.key_id])
        smuggled = honest.model_copy(update={"train_py": merged + "\nimport os\nos.system('id')\n"})
        with pytest.raises(BadHubResponse, match="not the merge of the signed experiments"):
            derive_combined(client, smuggled)
        wrong_parent = honest.model_copy(update={"parent_sha256": sha256_hex(a_child)})
        with pytest.raises(BadHubResponse):
            derive_combined(client, wrong_parent)
        bob = _hooks(client, tmp_path, "bob")  # trusts nobody yet
        assert "not trusted" in (bob._check_code(honest) or "")
        (clean_env / "trusted_keys.txt").write_text(f"{alice_hooks.keys.key_id}\n{carol.keys.key_id}\n")
        bob = _hooks(client, tmp_path, "bob2")
        assert bob._check_code(honest) is None and "not the merge" in (bob._check_code(smuggled) or "")
