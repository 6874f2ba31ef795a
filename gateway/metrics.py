"""Prometheus metrics of one gateway, on a registry of its own (no module globals)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from collections.abc import Iterator

    from gateway.context import Gateway


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.connections = Gauge("vybe_connections", "Open WebSocket connections", registry=r)
        self.subscriptions = Gauge("vybe_channels", "Channels this node subscribes upstream", registry=r)
        self.events_in = Gauge("vybe_events_in", "Events received from Redis (total)", registry=r)
        self.deliveries = Gauge("vybe_deliveries", "Events queued to sockets (total)", registry=r)
        self.slow_consumer_closes = Counter(
            "vybe_slow_consumer_closes", "Connections closed because their send queue overflowed", registry=r)
        self.redis_reconnects = Gauge("vybe_redis_reconnects", "Pub/sub reconnections (total)", registry=r)
        self.publish_latency = Histogram(
            "vybe_publish_to_fanout_seconds", "From publish to queued on this node's sockets", registry=r,
            buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5))
        self.errors = Counter("vybe_errors", "Error frames sent", ["code"], registry=r)

    def bind(self, gw: Gateway) -> None:
        """Read live figures from plain ints when scraped, not on the hot path."""
        self.registry.register(_HotPathCounters(gw))
        self.subscriptions.set_function(gw.hub.channel_count)
        self.events_in.set_function(lambda: gw.hub.events_in)
        self.deliveries.set_function(lambda: gw.hub.deliveries)
        self.redis_reconnects.set_function(lambda: gw.backend.reconnects)
        gw.hub.latency = self.publish_latency

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _HotPathCounters(Collector):
    """Counters kept as ints by the fan-out path (a prometheus Counter takes a lock per inc)."""

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        gw = self.gw
        yield CounterMetricFamily("vybe_frames_out", "Frames sent to clients", value=gw.frames_out)
        yield CounterMetricFamily("vybe_bytes_out", "Bytes sent to clients", value=gw.bytes_out)
        yield CounterMetricFamily("vybe_commands_in", "Client frames received", value=gw.commands_in)
        restarts = CounterMetricFamily("vybe_task_restarts", "Background loops restarted after a failure",
                                       labels=["task"])
        for name, count in gw.supervisor.restarts().items():
            restarts.add_metric([name], count)
        yield restarts
        yield CounterMetricFamily("vybe_outbox_published", "Outbox rows published (fast path and relay)",
                                  value=gw.relay.published)
        yield CounterMetricFamily("vybe_outbox_relayed", "Outbox rows published by the catch-up relay",
                                  value=gw.relay.relayed)
        yield GaugeMetricFamily("vybe_outbox_backlog", "Outbox rows committed here and waiting for the fast path",
                                value=gw.relay.backlog)
        if gw.job_backlog is not None:
            yield GaugeMetricFamily("vybe_moderation_jobs_waiting", "Moderation jobs not done yet (queued or being "
                                    "scored), all workers; the same on every node", value=gw.job_backlog.waiting)
            yield GaugeMetricFamily("vybe_moderation_oldest_job_seconds", "Age of the oldest moderation job not "
                                    "done yet (0: none): how late scoring runs now", value=gw.job_backlog.oldest_s)
        yield from _flag_stats(gw)


def _flag_stats(gw: Gateway) -> Iterator[GaugeMetricFamily]:
    """The model's flag precision and recall per label by moderators' decisions over 30 days (label
    ``any``: a flag of any label against harmful content). The same figure on every node: read one."""
    stats = gw.flag_stats
    if stats is None:
        return
    yield GaugeMetricFamily("vybe_moderation_decisions", "Moderator decisions in the window (30 days)",
                            value=stats.decisions)
    precision = GaugeMetricFamily("vybe_moderation_flag_precision",
                                  "Model flags moderators confirmed, per label (30 days)", labels=["label"])
    recall = GaugeMetricFamily("vybe_moderation_flag_recall",
                               "Harm moderators found that the model had flagged, per label (30 days)",
                               labels=["label"])
    for s in stats.labels:
        if s.precision is not None:
            precision.add_metric([s.label], s.precision)
        if s.recall is not None:
            recall.add_metric([s.label], s.recall)
    yield precision
    yield recall
