"""Claims (granted / held / done, lease takeover), replications and near-duplicates."""

from __future__ import annotations

import time

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from autoresearch.hub.db import normalise_url
from autoresearch.hub.models import Experiment
from autoresearch.hub.store import replications
from autoresearch.protocol import ClaimAnswer, ExperimentDetail, sha256_hex

from . import factory
from .conftest import Hub

REF = factory.REFERENCE


def lr(value: float) -> str:
    return factory.with_constant(REF, "MATRIX_LR", value)


def answer(hub: Hub, who: str, child: str, lease: int = 60) -> ClaimAnswer:
    response = hub.post("claims", factory.claim(hub.track, REF, child, lease_seconds=lease), who)
    assert response.status_code == 200, response.text
    return ClaimAnswer.model_validate_json(response.content)


@pytest.fixture
def two(hub: Hub) -> Hub:
    assert hub.register("alice").status_code == 201
    assert hub.register("bob").status_code == 201
    return hub


def test_claim_granted_held_renewed_then_done(two: Hub) -> None:
    hub = two
    child = lr(0.05)
    first = answer(hub, "alice", child)
    assert first.status == "granted"
    assert first.holder_key_id == hub.key("alice").key_id
    held = answer(hub, "bob", child)
    assert held.status == "held"
    assert held.holder_key_id == hub.key("alice").key_id
    assert held.lease_expires_at == first.lease_expires_at
    assert answer(hub, "alice", child).status == "granted"  # the holder renews its own lease
    stored = hub.post("experiments", factory.experiment(hub.track, REF, child), "alice").json()["id"]
    done = answer(hub, "bob", child)
    assert done.status == "done"
    assert done.experiment is not None and done.experiment.id == stored
    assert hub.counts()["claims"] == 1


def test_expired_lease_is_taken_over(two: Hub) -> None:
    hub = two
    child = lr(0.06)
    assert answer(hub, "alice", child, lease=1).status == "granted"
    time.sleep(1.5)
    taken = answer(hub, "bob", child)
    assert taken.status == "granted"
    assert taken.holder_key_id == hub.key("bob").key_id
    assert answer(hub, "alice", child).status == "held"


def test_replications_show_n_mean_std_and_classes(two: Hub) -> None:
    hub = two
    child = lr(0.05)
    a = hub.post("experiments", factory.experiment(hub.track, REF, child, val_bpb=1.50), "alice").json()["id"]
    b = hub.post(
        "experiments", factory.experiment(hub.track, REF, child + "\n# bob's copy\n", val_bpb=1.54, hardware_class="gpu:y"), "bob"
    ).json()["id"]
    detail = ExperimentDetail.model_validate_json(hub.client.get(f"/api/v1/experiments/{a}").content)
    reps = detail.replications
    assert reps.n == 2
    assert reps.experiment_ids == [a, b]
    assert reps.val_bpb_mean == pytest.approx(1.52)
    assert reps.val_bpb_std == pytest.approx(0.02)
    assert reps.hardware_classes == [factory.HARDWARE, "gpu:y"]


def test_replications_across_statement_chunks(two: Hub, monkeypatch: pytest.MonkeyPatch) -> None:
    """Groups split over several prepared statements (chunks of 4, the last padded to a power of
    two) give each group exactly its own runs, in order, as one statement for all of them does."""
    hub = two
    ids: dict[float, list[str]] = {}
    for i in range(7):
        value = round(0.05 + 0.01 * i, 2)
        for signer, bpb in [("alice", 1.5 + i / 100), ("bob", 1.6 + i / 100)][: 1 + i % 2]:
            record = factory.experiment(hub.track, REF, lr(value) + f"\n# {signer}\n", val_bpb=bpb)
            ids.setdefault(value, []).append(hub.post("experiments", record, signer).json()["id"])
    engine = sa.create_engine(normalise_url(hub.db_url))
    try:
        with Session(engine) as session:
            rows = session.scalars(sa.select(Experiment)).all()
            groups = {(r.track, r.parent_canonical_sha256, r.child_canonical_sha256) for r in rows}
            assert len(groups) == 7
            whole = replications._replications(session, groups)
            monkeypatch.setattr(replications, "GROUP_CHUNK", 4)  # chunks of 4 and 3 (padded to 4)
            chunked = replications._replications(session, groups)
            chunked_six = replications._replications(session, set(sorted(groups)[:6]))  # 4 and 2: no padding
    finally:
        engine.dispose()
    assert chunked == whole
    assert all(chunked_six[g] == whole[g] for g in sorted(groups)[:6])
    by_ids = {tuple(r.experiment_ids): r for r in whole.values()}
    assert sorted(by_ids) == sorted(tuple(v) for v in ids.values())
    assert [r.n for r in whole.values()].count(2) == 3
    for i, value in enumerate(sorted(ids)):
        reps = by_ids[tuple(ids[value])]
        assert reps.val_bpb_mean == pytest.approx(1.5 + i / 100 if i % 2 == 0 else 1.55 + i / 100)


def test_near_duplicate_constants_are_linked(two: Hub) -> None:
    hub = two
    first = hub.post("experiments", factory.experiment(hub.track, REF, lr(0.05)), "alice").json()["id"]
    close = hub.post("experiments", factory.experiment(hub.track, REF, lr(0.0501)), "bob").json()["id"]
    far = hub.post("experiments", factory.experiment(hub.track, REF, lr(0.08)), "bob").json()["id"]

    def near(eid: str) -> str | None:
        return ExperimentDetail.model_validate_json(hub.client.get(f"/api/v1/experiments/{eid}").content).near_duplicate_of

    assert near(first) is None
    assert near(close) == first
    assert near(far) is None


BLOCK = "\n\ndef schedule(step):\n" + "".join(f"    w{i} = step * {i} + MATRIX_LR * {i}\n" for i in range(30)) + "    return w0 + {last}\n"


def test_near_duplicate_by_minhash_and_claim_answered_done(two: Hub) -> None:
    hub = two
    mine = REF + BLOCK.format(last="1")
    theirs = REF + BLOCK.format(last="2")
    first = hub.post("experiments", factory.experiment(hub.track, REF, mine), "alice").json()["id"]
    # bob uploads his child before claiming, so the hub can compare it
    assert hub.client.put(f"/api/v1/sources/{sha256_hex(theirs)}", content=theirs.encode()).status_code == 201
    claimed = answer(hub, "bob", theirs)
    assert claimed.status == "done"
    assert claimed.near_duplicate_of == first
    assert claimed.experiment is not None and claimed.experiment.id == first
    unrelated = REF + "\n\ndef other():\n    return 1\n"
    assert hub.client.put(f"/api/v1/sources/{sha256_hex(unrelated)}", content=unrelated.encode()).status_code == 201
    assert answer(hub, "bob", unrelated).status == "granted"
