"""An app factory for hub processes started by tests (``uvicorn --factory tests.hub.testserver:build``):
the hub on ``AUTORESEARCH_HUB_DB_URL`` with the test track of :mod:`tests.hub.factory`."""

from __future__ import annotations

from fastapi import FastAPI

from autoresearch.hub.app import create_app
from autoresearch.hub.catalog import TrackCatalog
from autoresearch.hub.settings import HubSettings

from . import factory


def build() -> FastAPI:
    track = factory.make_track()
    return create_app(HubSettings(), catalog=TrackCatalog.of([(track, lambda: factory.REFERENCE)]), pages=False)
