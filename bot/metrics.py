"""Prometheus metrics, one registry per process, served on /metrics by the web side."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from services.monitoring.polling import CheckResult, Claimed


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.checks = Counter(
            "keysentry_checks", "Health checks by exchange and verdict", ["exchange", "verdict"], registry=r
        )
        self.checks_deferred = Counter(
            "keysentry_checks_deferred",
            "Checks put off because the route's budget share had no room (nothing was sent)",
            ["exchange"],
            registry=r,
        )
        self.probe_latency = Histogram(
            "keysentry_probe_seconds",
            "Probe latency",
            ["exchange"],
            registry=r,
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.alert_delay = Histogram(
            "keysentry_alert_delay_seconds",
            "From state change to delivered message",
            registry=r,
            buckets=(1, 5, 15, 30, 60, 120, 300, 900, 3600),
        )
        self.telegram_429 = Counter("keysentry_telegram_429", "Telegram 429 answers", registry=r)
        self.messages_sent = Counter("keysentry_messages_sent", "Messages Telegram accepted", registry=r)
        self.outbox_depth = Gauge("keysentry_outbox_depth", "Messages waiting in the outbox", registry=r)
        self.leases_held = Gauge("keysentry_leases_held", "Connections leased by this worker", registry=r)
        self.interval_stretch = Gauge(
            "keysentry_interval_stretch_ratio",
            "Poll interval stretch forced by an exchange budget",
            ["exchange"],
            registry=r,
        )
        self.connections = Gauge("keysentry_connections", "Connections by state", ["state"], registry=r)
        self.users = Gauge("keysentry_users", "Users by status", ["status"], registry=r)
        self.block_waves = Counter(
            "keysentry_block_waves",
            "Waves of identical key errors treated as a service blocking our IP",
            ["service"],
            registry=r,
        )
        self.vault_failures = Counter(
            "keysentry_vault_failures",
            "Stored credentials the configured VAULT_KEY could not open at run time",
            ["where"],
            registry=r,
        )


METRICS = Metrics()


def observe_check(claimed: Claimed, result: CheckResult, seconds: float) -> None:
    """The poller's hook: one check done (or put off)."""
    if result.deferred_s is not None:
        METRICS.checks_deferred.labels(claimed.exchange).inc()
        return
    METRICS.checks.labels(claimed.exchange, result.verdict.value).inc()
    METRICS.probe_latency.labels(claimed.exchange).observe(seconds)
