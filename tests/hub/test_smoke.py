from __future__ import annotations

from . import factory
from .conftest import Hub


def test_register_submit_and_read_back(hub: Hub) -> None:
    assert hub.register("alice").status_code == 201
    child = factory.with_constant(factory.REFERENCE, "MATRIX_LR", 0.05)
    record = factory.experiment(hub.track, factory.REFERENCE, child)
    r = hub.post("experiments", record, "alice")
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["created"] is True
    r = hub.client.get(f"/api/v1/experiments/{body['id']}")
    assert r.status_code == 200, r.text
    assert r.json()["directions"] == ["MATRIX_LR ↑"]
