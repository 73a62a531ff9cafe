"""Private helpers shared by the store's modules: the dialect's INSERT, one ``UNION ALL`` of
limited selects, the numeric guards of served figures, and the database ping.

Hub side of the trust boundary; no module outside :mod:`autoresearch.hub.store` imports from here
(``ping`` is re-exported by the package).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Select, select, union_all
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from autoresearch.protocol.records import finite_or_none

UNION_BRANCHES = 250  # limited selects per UNION ALL statement (SQLite allows 500 compound terms)


def _insert(session: Session):  # type: ignore[no-untyped-def]
    """The dialect's INSERT (with ``on_conflict_do_*``): SQLite ≥ 3.24 and PostgreSQL both have it."""
    return postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert


def _union_all(branches: Sequence[Select[*tuple[Any, ...]]]) -> Select[*tuple[Any, ...]]:
    """One statement of ``branches``, each keeping its own ``ORDER BY … LIMIT`` (wrapped in a
    subquery, which SQLite needs), so every branch is a short index scan (per-group top-N on both
    engines without a window over whole groups). Row order across branches is not defined."""
    wrapped = [b.subquery().select() for b in branches]
    return wrapped[0] if len(wrapped) == 1 else union_all(*wrapped)  # type: ignore[return-value]


def _positive(value: float | None) -> float | None:
    """``value`` when it is a finite number > 0 (what the served models accept), else None."""
    value = finite_or_none(value)
    return value if value is not None and value > 0 else None


def _spread(mean_square: float, mean: float | None) -> float | None:
    """Population std from E[x²] and E[x]; None when either is not finite (a sum that overflowed)."""
    if mean is None or not math.isfinite(mean_square):
        return None
    std: float | None = finite_or_none(math.sqrt(max(0.0, mean_square - mean * mean)))
    return std


def ping(session: Session) -> None:
    """One trivial query; raises the driver's error when the database does not answer."""
    session.execute(select(1))
