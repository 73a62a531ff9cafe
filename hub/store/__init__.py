"""The hub's store: the only package that writes SQL. It takes a :class:`~sqlalchemy.orm.Session` and
returns protocol models (``autoresearch.protocol.api``), never ORM rows (MLflow's row → entity
boundary).

Modules, one resource each (the package re-exports every public name, so callers write
``from autoresearch.hub import store; store.add_experiment(...)``):

- :mod:`.clients`: keys and tokens; :mod:`.sources`: ``train.py`` texts;
- :mod:`.experiments`: ingest and the one row builder shared with :mod:`.bulk`;
- :mod:`.verdicts`: the community-best rule applied to stored runs and the ``best`` rows;
- :mod:`.calibrations`, :mod:`.claims`, :mod:`.quotas` (usage reads and writes);
- :mod:`.listing`: experiments as served; :mod:`.replications`: per-experiment running sums;
- :mod:`.tracks`: leaderboards, ``/best``, track counts; :mod:`.directions`: direction sums and stats;
- :mod:`.bulk`: bulk load and rederive; :mod:`._common`: private helpers shared by these.

Write functions run inside the caller's transaction (the route's session commits once); each starts
it as a write transaction (:func:`autoresearch.hub.db.begin_write`). Races between hub processes are
settled by the database: unique constraints plus ``INSERT … ON CONFLICT`` and conditional
``UPDATE … WHERE`` (claims, best rows, direction aggregates), so nothing here holds a Python lock.

Rules kept here (docs/hub.md, "Rules"):

- Replications: runs with the same (track, parent canonical, child canonical) are one experiment;
  views show n, mean and std of val_bpb over the ``ok`` runs and their hardware classes.
- The hub's own figures: z, ECM and gain of every run come from the signer's calibration the hub
  verified (same key, track and hardware class; :func:`.verdicts._verified_calibration`), computed by
  :func:`autoresearch.protocol.best.normalise`, never from the record's claim.
- One community-best rule (:mod:`autoresearch.protocol.best`): every run that may rank (kept ``ok``,
  changes something beyond seeding, key not revoked) carries the rule's verdict, recomputed for the
  whole experiment (all runs of the same track, parent and child canonical hashes) whenever one of
  its runs, a calibration of one of its runs or a revocation arrives (:func:`.verdicts._reassess`). The
  ``best`` rows hold the rule's pick among ``qualified`` runs, so leaderboards, ``/best``, the
  pages and the suggestion engine read one answer. ``needs_replication`` is the verdict of the
  same name.
- Seed-only and empty changes are stored but never rank, and add no gain or z to the statistics.
- Experiments of revoked keys stay, marked ``revoked``, and leave the leaderboards and bests.
"""

from __future__ import annotations

from ._common import UNION_BRANCHES, ping
from .bulk import bulk_load, rederive
from .calibrations import add_calibration, calibrations_of
from .claims import claim, live_claims
from .clients import (
    TokenInfo,
    create_token,
    enrolled_by,
    get_client,
    list_clients,
    list_tokens,
    register_client,
    resolve_client,
    revoke_token,
    set_client_status,
    token_id,
    token_kind,
)
from .directions import EVIDENCE_PER_DIRECTION, direction_stats
from .experiments import NEAR_DUPLICATE_CANDIDATES, DedupSettings, add_experiment, experiment_exists
from .listing import (
    LINEAGE_DEPTH,
    PENDING_FOR_SUGGESTIONS,
    ExperimentFilter,
    activity,
    decode_cursor,
    encode_cursor,
    get_envelope,
    get_experiment,
    get_experiment_view,
    list_experiments,
    progress,
    recent_kept,
)
from .quotas import quota_charge, quota_charge_many, quota_used, quota_used_many
from .replications import REPLICATION_IDS
from .sources import SOURCES_PER_INSERT, get_source, get_sources, put_source, put_sources
from .tracks import (
    LEADERBOARD_SIZE,
    best_experiment_id,
    candidates,
    community_best,
    leaderboard,
    track_view,
    track_views,
)
from .verdicts import ECM_SCOPE

__all__ = [
    "DedupSettings",
    "ECM_SCOPE",
    "EVIDENCE_PER_DIRECTION",
    "ExperimentFilter",
    "LEADERBOARD_SIZE",
    "LINEAGE_DEPTH",
    "NEAR_DUPLICATE_CANDIDATES",
    "PENDING_FOR_SUGGESTIONS",
    "REPLICATION_IDS",
    "SOURCES_PER_INSERT",
    "TokenInfo",
    "UNION_BRANCHES",
    "activity",
    "add_calibration",
    "add_experiment",
    "best_experiment_id",
    "bulk_load",
    "calibrations_of",
    "candidates",
    "claim",
    "community_best",
    "create_token",
    "decode_cursor",
    "direction_stats",
    "encode_cursor",
    "enrolled_by",
    "experiment_exists",
    "get_client",
    "get_envelope",
    "get_experiment",
    "get_experiment_view",
    "get_source",
    "get_sources",
    "leaderboard",
    "list_clients",
    "list_experiments",
    "list_tokens",
    "live_claims",
    "ping",
    "progress",
    "put_source",
    "put_sources",
    "quota_charge",
    "quota_charge_many",
    "quota_used",
    "quota_used_many",
    "recent_kept",
    "rederive",
    "register_client",
    "resolve_client",
    "revoke_token",
    "set_client_status",
    "token_id",
    "token_kind",
    "track_view",
    "track_views",
]
