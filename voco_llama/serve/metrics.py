"""The server's Prometheus metrics (GET /metrics), in a registry of its own per server, so several
servers (the tests, `voco bench-serve`'s modes) can live in one process."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest
from prometheus_client.core import CounterMetricFamily

disable_created_metrics()  # the `_created` timestamp series double every counter for nothing a dashboard reads

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    def __init__(self, store):
        self.registry = registry = CollectorRegistry()
        self.requests = Counter(
            "voco_requests",
            "HTTP requests answered, by endpoint and status code",
            ["endpoint", "status"],
            registry=registry,
        )
        self.errors = Counter(
            "voco_request_errors",
            "Requests answered with an error (status >= 400)",
            ["endpoint", "status"],
            registry=registry,
        )
        self.prompt_tokens = Counter(
            "voco_prompt_tokens", "Prompt tokens answered (text + K per image)", registry=registry
        )
        self.completion_tokens = Counter("voco_completion_tokens", "Tokens generated", registry=registry)
        self.ttft = Histogram(
            "voco_time_to_first_token_seconds",
            "From a request's arrival to its first generated token",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.tpot = Histogram(
            "voco_time_per_output_token_seconds",
            "Per generated token after the first",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.batch_size = Histogram(
            "voco_batch_size", "Requests served by one model call", buckets=(1, 2, 4, 8, 16, 32, 64), registry=registry
        )
        Gauge("voco_cache_resident_bytes", "Bytes of caches in memory", registry=registry).set_function(
            lambda: store.resident_bytes
        )
        Gauge("voco_cache_resident_entries", "Images and videos cached in memory", registry=registry).set_function(
            lambda: store.resident_count
        )
        registry.register(_StoreCounters(store))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _StoreCounters:
    """The store's own counters, read at scrape time (the store stays free of metrics code)."""

    def __init__(self, store):
        self.store = store

    def collect(self):
        hits = CounterMetricFamily("voco_cache_hits", "Cache lookups answered, by tier", labels=["tier"])
        for tier, count in self.store.hits.items():
            hits.add_metric([tier], count)
        yield hits
        yield CounterMetricFamily("voco_cache_misses", "Lookups that found no cache", value=self.store.misses)
        yield CounterMetricFamily("voco_cache_evictions", "Caches dropped from memory", value=self.store.evictions)
        yield CounterMetricFamily(
            "voco_cache_rejected", "Cache files refused (corrupt, or made by another model)", value=self.store.rejected
        )
        yield CounterMetricFamily("voco_cache_written", "Cache files written to --cache-dir", value=self.store.written)
