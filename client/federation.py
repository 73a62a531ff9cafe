"""What a workspace joined to a hub remembers (``.autoresearch/federation.json``), and whom it trusts.

The rest of federation lives beside it: :mod:`.hubhooks` (the loop's hooks when joined),
:mod:`.pull` (someone else's ``train.py``, checked against its signed record) and :mod:`.join`
(``autoresearch join``: key, registration, track check, calibration, then the loop).
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from autoresearch.protocol import TrackSpec

from . import config
from .results import atomic_write_text
from .workspace import read_state

FEDERATION_FILE = "federation.json"


class FederationConfig(BaseModel):
    """What ``autoresearch join`` stores in ``.autoresearch/federation.json`` (no secrets: the token
    comes from ``--token`` / ``AUTORESEARCH_HUB_TOKEN`` each time)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    hub_url: str
    track: str = Field(description="full track id")
    key_id: str
    display_name: str
    joined_at: datetime


def federation_path(root: Path) -> Path:
    return root / ".autoresearch" / FEDERATION_FILE


def load_federation(root: Path) -> FederationConfig | None:
    """The workspace's federation settings, or None when it never joined a hub.

    Raises:
        StateFileError: the file exists but is not valid.
    """
    path = federation_path(root)
    if not path.exists():
        return None
    return read_state(path, FederationConfig, hint=f"remove it (rm {path}) and run `autoresearch join HUB_URL` again")


def save_federation(root: Path, fed: FederationConfig) -> None:
    """Write ``.autoresearch/federation.json`` atomically."""
    atomic_write_text(federation_path(root), fed.model_dump_json(indent=2) + "\n")


def is_trusted(key_id: str) -> bool:
    """Whether ``key_id`` is listed in ``$AUTORESEARCH_HOME/trusted_keys.txt``."""
    return key_id.lower() in config.trusted_key_ids()


def dump_json(model: BaseModel) -> object:
    """A model as plain JSON data (for ``--json`` output)."""
    return json.loads(model.model_dump_json(by_alias=True))


def local_hardware_class(track: TrackSpec) -> str:
    """This machine's hardware class for ``track`` (the CPU class on CPU tracks, even with a GPU)."""
    from autoresearch.trainer.hardware import hardware_class_for

    hardware_class: str = hardware_class_for(track.device)
    return hardware_class

