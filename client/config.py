"""Where the client keeps its state: ``$AUTORESEARCH_HOME`` or the platform's user config dir.

Layout under the home::

    keys/ed25519.pem        private key (mode 0600); keys/ed25519.pub beside it
    trusted_keys.txt        key ids whose code `pull` applies without asking, one per line
    calibrations/           cached calibration records (see client/calibration.py)

``AUTORESEARCH_HUB_DEADLINE`` (seconds) overrides the total deadline of one hub request
(client/hubclient.py); a bad value raises :class:`~autoresearch.client.errors.UsageError`.
"""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

from .errors import UsageError


def home() -> Path:
    """The client's config dir: ``$AUTORESEARCH_HOME`` if set, else the platform's user config dir."""
    env = os.environ.get("AUTORESEARCH_HOME")
    if env:
        return Path(env).expanduser()
    return Path(platformdirs.user_config_dir("autoresearch", appauthor=False))


def key_path() -> Path:
    """Path of the private key file."""
    return home() / "keys" / "ed25519.pem"


def trusted_keys_path() -> Path:
    return home() / "trusted_keys.txt"


def trusted_key_ids() -> set[str]:
    """Key ids the user trusts (lines of ``trusted_keys.txt``; ``#`` starts a comment)."""
    path = trusted_keys_path()
    if not path.exists():
        return set()
    ids = set()
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            ids.add(line.lower())
    return ids


def cache_dir() -> Path:
    """Data cache: ``$AUTORESEARCH_CACHE`` or the platform's user cache dir (prepared track data)."""
    env = os.environ.get("AUTORESEARCH_CACHE")
    if env:
        return Path(env).expanduser()
    return Path(platformdirs.user_cache_dir("autoresearch-hub", appauthor=False))


def hub_deadline_seconds(default: float) -> float:
    """The total deadline of one hub request, seconds: ``$AUTORESEARCH_HUB_DEADLINE`` or ``default``.

    Raises:
        UsageError: the variable is set but not a positive number.
    """
    value = os.environ.get("AUTORESEARCH_HUB_DEADLINE")
    if not value:
        return default
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not 0 < seconds < float("inf"):
        raise UsageError(f"AUTORESEARCH_HUB_DEADLINE={value!r} is not a positive number of seconds")
    return seconds
