"""The server's Prometheus metrics (GET /metrics), in a registry of its own per server, so several
servers (the tests, `voco bench-serve`'s modes) can live in one process.

Where vLLM has a metric of the same meaning, it is also exported under vLLM's name (a dashboard
made for vLLM reads them): vllm:num_requests_running, vllm:num_requests_waiting,
vllm:request_queue_time_seconds, vllm:e2e_request_latency_seconds, vllm:time_to_first_token_seconds,
vllm:time_per_output_token_seconds, vllm:prompt_tokens_total, vllm:generation_tokens_total."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

disable_created_metrics()  # the `_created` timestamp series double every counter for nothing a dashboard reads

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
REQUEST_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


class _Twin:
    """A metric and its vLLM-named alias, updated together."""

    def __init__(self, *metrics):
        self.metrics = metrics

    def observe(self, value: float) -> None:
        for m in self.metrics:
            m.observe(value)

    def inc(self, value: float = 1) -> None:
        for m in self.metrics:
            m.inc(value)


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
        counter = lambda name, text: _Twin(*(Counter(p + name, text, registry=registry) for p in ("voco_", "vllm:")))
        self.prompt_tokens = counter("prompt_tokens", "Prompt tokens answered (text + K per image)")
        self.completion_tokens = _Twin(
            Counter("voco_completion_tokens", "Tokens generated", registry=registry),
            Counter("vllm:generation_tokens", "Tokens generated", registry=registry),
        )
        histogram = lambda name, text, buckets: _Twin(
            *(Histogram(p + name, text, buckets=buckets, registry=registry) for p in ("voco_", "vllm:"))
        )
        self.ttft = histogram(
            "time_to_first_token_seconds", "From a request's arrival to its first generated token", LATENCY_BUCKETS
        )
        self.tpot = histogram("time_per_output_token_seconds", "Per generated token after the first", LATENCY_BUCKETS)
        self.queue_time = histogram(
            "request_queue_time_seconds",
            "From a request's arrival to its admission to the running batch",
            REQUEST_BUCKETS,
        )
        self.e2e = histogram(
            "e2e_request_latency_seconds", "From a request's arrival to its last generated token", REQUEST_BUCKETS
        )
        self.batch_size = Histogram(
            "voco_batch_size",
            "Answers decoded together, per decode step (continuous batching)",
            buckets=(1, 2, 4, 8, 16, 32, 64),
            registry=registry,
        )
        self.rejected = Counter(
            "voco_requests_rejected", "Requests answered 503: the queue was full (--max-queue)", registry=registry
        )
        self.cancelled = Counter(
            "voco_requests_cancelled", "Requests dropped because their client disconnected", registry=registry
        )
        Gauge("voco_cache_resident_bytes", "Bytes of caches in memory", registry=registry).set_function(
            lambda: store.resident_bytes
        )
        Gauge("voco_cache_resident_entries", "Images and videos cached in memory", registry=registry).set_function(
            lambda: store.resident_count
        )
        registry.register(_StoreCounters(store))

    def watch(self, engine, inflight) -> None:
        """Gauges read from the engine and the app at scrape time."""
        gauges = (
            ("num_requests_running", "Requests with an answer in the running batch", lambda: engine.running),
            ("num_requests_waiting", "Requests queued for the running batch", lambda: len(engine.waiting)),
        )
        for name, text, read in gauges:
            for prefix in ("voco_", "vllm:"):
                Gauge(prefix + name, text, registry=self.registry).set_function(read)
        Gauge(
            "voco_inflight_request_bytes", "Bytes of requests in flight (--max-inflight-bytes)", registry=self.registry
        ).set_function(lambda: inflight.bytes)

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
        yield CounterMetricFamily(
            "voco_cache_file_evictions", "Cache files removed (--cache-dir-size)", value=self.store.disk_evictions
        )
        yield GaugeMetricFamily(
            "voco_cache_file_bytes", "Bytes of cache files in --cache-dir", value=self.store.file_bytes
        )
