"""Prometheus metrics of the gateway (served at ``/metrics``)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.5, 5.0)

REQUESTS = Counter("gateway_requests_total", "HTTP requests", ["route", "method", "status"], registry=REGISTRY)
REQUEST_LATENCY = Histogram("gateway_request_duration_seconds", "HTTP request latency", ["route", "method"],
                            buckets=LATENCY_BUCKETS, registry=REGISTRY)
VERDICTS = Counter("gateway_verdicts_total", "Inspection verdicts answered", ["route", "verdict"], registry=REGISTRY)
INSPECTION_LATENCY = Histogram("gateway_inspection_duration_seconds", "End-to-end inspection latency",
                               ["route", "verdict"], buckets=LATENCY_BUCKETS, registry=REGISTRY)
TRITON_LATENCY = Histogram("gateway_triton_duration_seconds", "Triton call latency", ["model"],
                           buckets=LATENCY_BUCKETS, registry=REGISTRY)
TRITON_ERRORS = Counter("gateway_triton_errors_total", "Triton calls that failed", ["model", "code"],
                        registry=REGISTRY)
PAIRING = Counter("gateway_pairing_total", "Pairing outcomes", ["outcome"], registry=REGISTRY)
OUTBOX_DEPTH = Gauge("gateway_outbox_depth", "Inspections waiting in the local outbox", registry=REGISTRY)
DB_WRITE_FAILURES = Counter("gateway_db_write_failures_total", "Failed database writes (rows kept in the outbox)",
                            registry=REGISTRY)
RATE_LIMITED = Counter("gateway_rate_limited_total", "Requests refused by the per-device rate limit", ["device"],
                       registry=REGISTRY)
