"""Prometheus metrics of one hub process, on its own registry (nothing global at import time).

- ``autoresearch_hub_requests_total{method, route, status}``
- ``autoresearch_hub_request_seconds{method, route}`` (histogram)
- ``autoresearch_hub_verification_failures_total{reason}``: rejected submissions by error code
- ``autoresearch_hub_records_total{kind, outcome}``: stored records (experiments by harness outcome;
  ``created`` or ``duplicate`` for the other kinds)
"""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest


@dataclass
class HubMetrics:
    """The counters of one app instance."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        self.requests = Counter(
            "autoresearch_hub_requests", "HTTP requests served", ["method", "route", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "autoresearch_hub_request_seconds", "HTTP request latency, seconds", ["method", "route"], registry=self.registry
        )
        self.verification_failures = Counter(
            "autoresearch_hub_verification_failures", "submissions rejected, by reason", ["reason"], registry=self.registry
        )
        self.records = Counter(
            "autoresearch_hub_records", "records stored, by kind and outcome", ["kind", "outcome"], registry=self.registry
        )

    def exposition(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)
