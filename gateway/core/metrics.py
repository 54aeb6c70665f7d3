"""Prometheus metrics of the gateway (served at ``/metrics``)."""

from __future__ import annotations

import asyncio
import time

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
# the durable write each answer waits for (group commit + fsync): a slow disk shows here
# before it shows in the line's latency
OUTBOX_WRITE = Histogram("gateway_outbox_write_seconds", "Time an inspection waits for its durable outbox write",
                         buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5), registry=REGISTRY)
PAIRING = Counter("gateway_pairing_total", "Pairing outcomes", ["outcome"], registry=REGISTRY)
TRITON_IN_FLIGHT = Gauge("gateway_triton_in_flight", "Line images this gateway process has in Triton now "
                         "(bounded by TRITON_MAX_IN_FLIGHT)", registry=REGISTRY)
OUTBOX_DEPTH = Gauge("gateway_outbox_depth", "Inspections waiting in the local outbox", registry=REGISTRY)
DB_WRITE_FAILURES = Counter("gateway_db_write_failures_total",
                            "Database writes that failed because the database was unavailable (rows kept)",
                            registry=REGISTRY)
OUTBOX_REJECTED = Counter("gateway_outbox_rejected_total", "Outbox rows the database refused (one attempt each)",
                          registry=REGISTRY)
OUTBOX_QUARANTINED = Gauge("gateway_outbox_quarantined", "Outbox rows set aside after repeated refusals (kept)",
                           registry=REGISTRY)
# background chores (housekeeping, the outbox drainer, ...): an error is counted and the loop
# goes on; a chore whose last success gets old is an alert (monitoring/rules)
CHORE_ERRORS = Counter("gateway_chore_errors_total", "Background chore runs that failed", ["chore"],
                       registry=REGISTRY)
CHORE_LAST_SUCCESS = Gauge("gateway_chore_last_success_timestamp_seconds", "When a chore last ran cleanly",
                           ["chore"], registry=REGISTRY)
# Operations (monitoring/): filled in at scrape time by the /metrics handler, from what this
# worker knows (device heartbeats, Triton's readiness as the gateway sees it).
EDGE_LAST_SEEN = Gauge("gateway_edge_last_seen_timestamp_seconds", "When an edge was last heard from (unix time)",
                       ["device", "side"], registry=REGISTRY)
EDGES_ONLINE = Gauge("gateway_edges_online", "Edges heard from within the online window", registry=REGISTRY)
EDGES_REGISTERED = Gauge("gateway_edges_registered", "Enabled edge devices", registry=REGISTRY)
TRITON_READY = Gauge("gateway_triton_ready", "1 when Triton answers ready to this gateway", registry=REGISTRY)
RATE_LIMITED = Counter("gateway_rate_limited_total", "Requests refused by the per-device rate limit", ["device"],
                       registry=REGISTRY)
# photo enhancement (gateway/services/enhance.py); Grafana dashboards use these names
ENHANCE_TASKS = Gauge("enhance_tasks", "Enhancement tasks held by the gateway, by state", ["state"], registry=REGISTRY)
ENHANCE_QUEUE_DEPTH = Gauge("enhance_queue_depth", "Photos waiting for an enhancement slot", registry=REGISTRY)
ENHANCE_DURATION = Histogram("enhance_duration_seconds", "Time to enhance one photo (Triton call)",
                             buckets=(0.1, 0.25, 0.5, 1, 2, 3, 5, 8, 13, 20, 30, 60, 120), registry=REGISTRY)
ENHANCE_FACES = Counter("enhance_faces_total", "Faces restored", registry=REGISTRY)


def observe_edges(devices, online_after_s: float) -> None:
    """Per-device last-seen times and the online count, from a ``DeviceRegistry``."""
    now = time.time()
    enabled = [d for d in devices.all() if d.enabled]
    EDGE_LAST_SEEN.clear()  # disabled or removed devices disappear
    online = 0
    for d in enabled:
        seen = devices.last_seen.get(d.id)
        if seen:  # never heard from: no series, rather than "offline since 1970"
            EDGE_LAST_SEEN.labels(d.id, d.side).set(seen)
            online += now - seen < online_after_s
    EDGES_ONLINE.set(online)
    EDGES_REGISTERED.set(len(enabled))


# batch engine (batch): job and item counts per state, from the database at scrape
# time (every gateway sees the same numbers); workers export their own on BATCH_METRICS_PORT
BATCH_JOBS = Gauge("batch_jobs", "Batch jobs by state", ["state"], registry=REGISTRY)
BATCH_ITEMS = Gauge("batch_items", "Batch items by state (pending = the backlog)", ["state"], registry=REGISTRY)
BATCH_JOB_STATES = ("running", "completed", "cancelled")
BATCH_ITEM_STATES = ("pending", "processing", "completed", "failed", "cancelled")


async def observe_batch(store) -> None:
    try:
        jobs, items = await asyncio.to_thread(store.totals)
    except Exception:  # noqa: BLE001 - database down: keep the last values, /metrics still answers
        return
    for state in BATCH_JOB_STATES:
        BATCH_JOBS.labels(state).set(jobs.get(state, 0))
    for state in BATCH_ITEM_STATES:
        BATCH_ITEMS.labels(state).set(items.get(state, 0))
