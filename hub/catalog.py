"""The tracks a hub knows: their specs and reference ``train.py`` sources.

By default the built-in tracks of :mod:`autoresearch.trainer.tracks` (torch-free), imported lazily.
A hub knows a track by its full id or its short name; a derived track (a ``time_budget`` override,
which has its own id) is unknown to the hub until it is added to the catalog. Tests pass their own
:class:`TrackCatalog`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from autoresearch.protocol import TrackSpec

from .errors import NotFound

_logger = logging.getLogger(__name__)


@dataclass
class TrackCatalog:
    """Track specs by id, each with a callable giving its reference ``train.py`` text."""

    _specs: dict[str, TrackSpec] = field(default_factory=dict)
    _sources: dict[str, Callable[[], str]] = field(default_factory=dict)

    @classmethod
    def of(cls, tracks: Iterable[tuple[TrackSpec, Callable[[], str]]]) -> TrackCatalog:
        """A catalog of ``(spec, reference_source_loader)`` pairs."""
        catalog = cls()
        for spec, loader in tracks:
            catalog._specs[spec.id] = spec
            catalog._sources[spec.id] = loader
        return catalog

    @classmethod
    def builtin(cls) -> TrackCatalog:
        """The built-in tracks of ``autoresearch.trainer.tracks``."""
        from autoresearch.trainer import tracks  # torch-free by contract (docs/architecture.md)

        return cls.of((spec, _loader(tracks.reference_source, spec)) for spec in tracks.builtin_tracks())

    def all(self) -> list[TrackSpec]:
        """Every spec, by name."""
        return sorted(self._specs.values(), key=lambda s: (s.name, s.id))

    def get(self, name_or_id: str) -> TrackSpec:
        """The spec with this id, or the single built-in one with this short name.

        Raises:
            NotFound: ``unknown_track``, naming the known tracks.
        """
        spec = self._specs.get(name_or_id)
        if spec is None:
            by_name = [s for s in self._specs.values() if s.name == name_or_id]
            spec = by_name[0] if len(by_name) == 1 else None
        if spec is None:
            known = ", ".join(f"{s.name} ({s.id})" for s in self.all()) or "none"
            raise NotFound(f"unknown track {name_or_id!r}; this hub knows: {known}", code="unknown_track")
        return spec

    def get_by_id(self, track_id: str) -> TrackSpec:
        """The spec with exactly this id (what signed records name).

        Raises:
            NotFound: ``unknown_track``.
        """
        spec = self._specs.get(track_id)
        if spec is None:
            known = ", ".join(s.id for s in self.all()) or "none"
            raise NotFound(f"unknown track id {track_id!r}; this hub knows: {known}", code="unknown_track")
        return spec

    def reference_by_sha256(self, sha256: str) -> str | None:
        """The reference ``train.py`` of the track whose reference hashes to ``sha256``, or None."""
        for spec in self._specs.values():
            if spec.reference_sha256 == sha256:
                return self.reference_source(spec)
        return None

    def reference_source(self, spec: TrackSpec | str) -> str:
        """The reference ``train.py`` of a track (a spec or a track id).

        Raises:
            NotFound: ``unknown_track``.
        """
        track_id = spec if isinstance(spec, str) else spec.id
        if track_id not in self._sources:
            self.get_by_id(track_id)
        return self._sources[track_id]()


def _loader(fn: Callable[[TrackSpec], str], spec: TrackSpec) -> Callable[[], str]:
    return lambda: fn(spec)
