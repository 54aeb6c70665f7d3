"""Writes the Grafana dashboards (monitoring/grafana/dashboards/*.json) from one short list of
panels per dashboard, so a query is written once and the JSON stays consistent.

    python monitoring/grafana/build_dashboards.py          # rewrite the JSON files
    python monitoring/grafana/build_dashboards.py --check  # exit 1 if they are out of date

tests/test_monitoring.py runs every panel's query against a real Prometheus scraping the real
gateway and Triton (template variables substituted as ``SUBSTITUTE`` says).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

OUT = Path(__file__).resolve().parent / "dashboards"
DATASOURCE = {"type": "prometheus", "uid": "prometheus"}  # provisioning/datasources/prometheus.yml
ENSEMBLES = "pcb_inspect|pcb_dual_inspect"  # the requests a board makes; the rest are their steps
# the batch lane (serving/batch_lane.py): batch work only, queued behind the line by design;
# never a board's step, so left out wherever the steps are summed per board
LANE = "pcb_detector_batch|pcb_inspect_batch"
BUDGET_S = 0.3  # the seed's line budget: a board's verdict in < 300 ms end to end
R = "[$__rate_interval]"

# what the test puts in place of Grafana's variables
SUBSTITUTE = {"$__rate_interval": "1m", "$__range": "5m", "$model": ".*", "$ensembles": ENSEMBLES}


@dataclass
class Panel:
    title: str
    queries: list[tuple[str, str]]  # (PromQL, legend)
    unit: str = "short"
    kind: str = "timeseries"  # timeseries, stat, table, bargauge
    width: int = 12
    stack: bool = False
    thresholds: list[tuple[float, str]] = field(default_factory=list)
    description: str = ""


@dataclass
class Row:
    title: str


def avg(metric: str, sel: str = "") -> str:
    """Mean of a histogram or summary over the rate window: sum/count."""
    return f"sum(rate({metric}_sum{sel}{R})) / sum(rate({metric}_count{sel}{R}))"


STEP_SEL = '{model!~"$ensembles|' + LANE + '"}'
ENS_SEL = '{model=~"$ensembles"}'
MODEL_SEL = '{model=~"$model"}'
PER_BOARD = f"sum(rate(nv_inference_request_success{ENS_SEL}{R}))"
QUEUE = f"sum(rate(nv_inference_queue_duration_us{STEP_SEL}{R})) / 1e6 / {PER_BOARD}"


def compute_us(sel: str, by: str = "") -> str:
    """Triton's compute time (input + infer + output); a name regex cannot do it, as rate()
    drops the names and the three series would collide."""
    return "(" + " + ".join(f"sum{by} (rate(nv_inference_compute_{part}_duration_us{sel}{R}))"
                            for part in ("input", "infer", "output")) + ")"


COMPUTE = f"{compute_us(STEP_SEL)} / 1e6 / {PER_BOARD}"
TRITON_CALL = avg("gateway_triton_duration_seconds")
BOARD = avg("gateway_inspection_duration_seconds")

LINE = [
    Row("Line"),
    Panel("Boards per second by verdict", [(f"sum by (verdict) (rate(gateway_verdicts_total{R}))", "{{verdict}}")],
          unit="reqps", stack=True),
    Panel("Defect rate", [(f'sum(rate(gateway_verdicts_total{{verdict!="normal"}}{R})) '
                           f"/ sum(rate(gateway_verdicts_total{R}))", "defects")],
          unit="percentunit", kind="stat", width=4, thresholds=[(0.1, "orange"), (0.2, "red")]),
    Panel("Verdicts in range", [("sum by (verdict) (increase(gateway_verdicts_total[$__range]))", "{{verdict}}")],
          kind="bargauge", width=8),
    Panel("Pairing outcomes", [(f"sum by (outcome) (rate(gateway_pairing_total{R}))", "{{outcome}}")],
          unit="reqps", stack=True,
          description="partial = decided from one side after PAIRING_WINDOW_MS; late = a side after that"),
    Panel("Edges online", [("max(gateway_edges_online)", "online"), ("max(gateway_edges_registered)", "registered")],
          kind="stat", width=4),
    Panel("Seconds since each edge was heard from",
          [("time() - max by (device, side) (gateway_edge_last_seen_timestamp_seconds)", "{{device}} ({{side}})")],
          unit="s", kind="bargauge", width=8, thresholds=[(30, "orange"), (60, "red")]),
    Panel("Triton ready (gateway's view) and scraped", [("min(gateway_triton_ready)", "ready"),
                                                        ('min(up{job="triton"})', "scraped")],
          kind="stat", width=6, thresholds=[(0, "red"), (1, "green")]),
    Panel("Outbox depth (rows waiting for the database)", [("sum by (instance) (gateway_outbox_depth)", "{{instance}}")],
          width=6, thresholds=[(100, "orange")]),
    Row("Latency"),
    Panel("Board latency quantiles (gateway, end to end)",
          [(f"histogram_quantile({q}, sum by (le) (rate(gateway_inspection_duration_seconds_bucket{R})))", f"p{p}")
           for q, p in ((0.5, 50), (0.95, 95), (0.99, 99))],
          unit="s", thresholds=[(BUDGET_S, "red")], description="red line: the line's 300 ms budget"),
    Panel("Where a board's time goes (mean per request)", [
        (f"{BOARD} - {TRITON_CALL}", "gateway (HTTP, pairing wait, outbox)"),
        (f"{TRITON_CALL} - {QUEUE} - {COMPUTE}", "Triton transport and ensemble scheduling"),
        (QUEUE, "Triton queue (all steps)"),
        (COMPUTE, "Triton compute (all steps)"),
    ], unit="s", stack=True),
    Panel("Triton queue time per request, by model",
          [(f'sum by (model) (rate(nv_inference_queue_duration_us{{model=~"$model"}}{R})) / 1e6 '
            f'/ sum by (model) (rate(nv_inference_request_success{{model=~"$model"}}{R}))', "{{model}}")], unit="s"),
    Panel("Triton compute time per request, by model",
          [(f'{compute_us(MODEL_SEL, " by (model)")} / 1e6 '
            f"/ sum by (model) (rate(nv_inference_request_success{MODEL_SEL}{R}))", "{{model}}")], unit="s"),
    Panel("Durable outbox write before each answer (p50, p99)",
          [(f"histogram_quantile({q}, sum by (le) (rate(gateway_outbox_write_seconds_bucket{R})))", f"p{p}")
           for q, p in ((0.5, 50), (0.99, 99))],
          unit="s", description="group commit + fsync of the local outbox: a slow disk shows here first"),
    Panel("Line images in Triton, per gateway process",
          [("gateway_triton_in_flight", "{{instance}}")],
          description="bounded by TRITON_MAX_IN_FLIGHT; at the bound boards get 503 inference_overloaded "
                      "(\"Failures: Triton and the gateway's calls\", code inference_overloaded)"),
    Panel("Gateway request latency p99, by route",
          [(f"histogram_quantile(0.99, sum by (le, route) (rate(gateway_request_duration_seconds_bucket{R})))",
            "{{route}}")], unit="s"),
    Row("Triton and batching"),
    Panel("Inference requests per second, by model",
          [(f'sum by (model) (rate(nv_inference_request_success{{model=~"$model"}}{R}))', "{{model}}")], unit="reqps"),
    Panel("Batching efficiency: inferences per execution", [
        (f'sum by (model) (rate(nv_inference_count{{model=~"$model", model!~"$ensembles|{LANE}"}}{R})) '
         f'/ sum by (model) (rate(nv_inference_exec_count{{model=~"$model", model!~"$ensembles|{LANE}"}}{R}))', "{{model}}"),
    ], description="1 = no batching; up to max_batch_size when the dynamic batcher fills batches"),
    Panel("Requests waiting in Triton, by model",
          [('sum by (model) (nv_inference_pending_request_count{model=~"$model"})', "{{model}}")]),
    Panel("Failures: Triton and the gateway's calls", [
        (f'sum by (model, reason) (rate(nv_inference_request_failure{{model=~"$model"}}{R}))', "{{model}} {{reason}}"),
        (f"sum by (model, code) (rate(gateway_triton_errors_total{R}))", "gateway: {{model}} {{code}}"),
        (f"sum by (status) (rate(gateway_requests_total{R}))", "HTTP {{status}}"),
    ], unit="reqps"),
    Panel("Triton process: CPU and memory", [("avg(nv_cpu_utilization)", "CPU"),
                                             ("sum(nv_cpu_memory_used_bytes) / sum(nv_cpu_memory_total_bytes)", "memory")],
          unit="percentunit"),
    Panel("GPU utilisation and memory (GPU box only)", [
        ("avg by (gpu_uuid) (nv_gpu_utilization)", "util {{gpu_uuid}}"),
        ("sum by (gpu_uuid) (nv_gpu_memory_used_bytes) / sum by (gpu_uuid) (nv_gpu_memory_total_bytes)",
         "memory {{gpu_uuid}}"),
    ], unit="percentunit"),
]

QUEUES = [
    Row("Batch engine"),
    Panel("Batch jobs by state", [("sum by (state) (batch_jobs)", "{{state}}")], stack=True),
    Panel("Batch items by state", [("sum by (state) (batch_items)", "{{state}}")], stack=True),
    Panel("Worker throughput (items/s)", [(f"sum by (outcome) (rate(batch_worker_items_total{R}))", "{{outcome}}")],
          unit="reqps", stack=True),
    Panel("Backlog ETA at the current speed",
          [(f'sum(batch_items{{state="pending"}}) / sum(rate(batch_worker_items_total{R}))', "ETA")],
          unit="s", kind="stat", width=6),
    Panel("Worker batch size and concurrency (auto-tuned)", [
        ("avg by (instance) (batch_worker_batch_size)", "batch size {{instance}}"),
        ("sum by (instance) (batch_worker_concurrency)", "concurrency {{instance}}"),
    ], width=6),
    Row("Photo enhancement"),
    Panel("Enhancement tasks by state", [("sum by (state) (enhance_tasks)", "{{state}}")], stack=True),
    Panel("Enhancement queue depth", [("max(enhance_queue_depth)", "queued")], kind="stat", width=6,
          thresholds=[(50, "orange")]),
    Panel("Faces restored per second", [(f"sum(rate(enhance_faces_total{R}))", "faces/s")], width=6),
    Panel("Enhancement duration quantiles", [
        (f"histogram_quantile({q}, sum by (le) (rate(enhance_duration_seconds_bucket{R})))", f"p{p}")
        for q, p in ((0.5, 50), (0.95, 95))], unit="s"),
]

DASHBOARDS = {
    "pcb-line": ("PCB line: throughput, verdicts, latency, Triton", LINE),
    "pcb-queues": ("PCB queues: batch engine and photo enhancement", QUEUES),
}


def _variables(uid: str) -> list[dict]:
    if uid != "pcb-line":
        return []
    return [
        {"name": "model", "label": "Triton model", "type": "query", "datasource": DATASOURCE,
         "query": {"query": "label_values(nv_inference_request_success, model)", "refId": "models"},
         "definition": "label_values(nv_inference_request_success, model)", "refresh": 2,
         "includeAll": True, "multi": True, "allValue": ".*",
         "current": {"selected": True, "text": ["All"], "value": ["$__all"]}},
        {"name": "ensembles", "type": "constant", "hide": 2, "query": ENSEMBLES},
    ]


def _panel(p: Panel, pid: int, x: int, y: int) -> dict:
    steps = [{"color": "green", "value": None}] + [{"color": c, "value": v} for v, c in p.thresholds]
    custom = {"stacking": {"mode": "normal" if p.stack else "none"}, "fillOpacity": 20 if p.stack else 0}
    if p.thresholds and p.kind == "timeseries":
        custom["thresholdsStyle"] = {"mode": "line"}
    return {
        "id": pid, "type": p.kind, "title": p.title, "description": p.description, "datasource": DATASOURCE,
        "gridPos": {"x": x, "y": y, "w": p.width, "h": 8},
        "targets": [{"refId": chr(65 + i), "datasource": DATASOURCE, "expr": expr, "legendFormat": legend}
                    for i, (expr, legend) in enumerate(p.queries)],
        "fieldConfig": {"defaults": {"unit": p.unit, "thresholds": {"mode": "absolute", "steps": steps},
                                     **({"custom": custom} if p.kind == "timeseries" else {})},
                        "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}} if p.kind == "timeseries" else {},
    }


def build(uid: str) -> dict:
    title, items = DASHBOARDS[uid]
    panels, x, y = [], 0, 0
    for pid, item in enumerate(items, start=1):
        if isinstance(item, Row):
            y += 8 if x else 0
            panels.append({"id": pid, "type": "row", "title": item.title, "collapsed": False,
                           "gridPos": {"x": 0, "y": y, "w": 24, "h": 1}, "panels": []})
            x, y = 0, y + 1
            continue
        if x + item.width > 24:
            x, y = 0, y + 8
        panels.append(_panel(item, pid, x, y))
        x += item.width
    return {"uid": uid, "title": title, "tags": ["pcb"], "timezone": "browser", "schemaVersion": 39,
            "version": 1, "editable": False, "refresh": "10s", "time": {"from": "now-1h", "to": "now"},
            "templating": {"list": _variables(uid)}, "annotations": {"list": []}, "panels": panels}


def queries(dashboard: dict) -> list[tuple[str, str]]:
    """(panel title, PromQL with Grafana's variables substituted) for every target."""
    out = []
    for p in dashboard["panels"]:
        for t in p.get("targets", []):
            expr = t["expr"]
            for var, value in SUBSTITUTE.items():
                expr = expr.replace(var, value)
            out.append((p["title"], expr))
    return out


def render(uid: str) -> str:
    return json.dumps(build(uid), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str]) -> int:
    stale = []
    for uid in DASHBOARDS:
        path = OUT / f"{uid}.json"
        text = render(uid)
        if "--check" in argv:
            if not path.exists() or path.read_text() != text:
                stale.append(path.name)
        else:
            path.write_text(text)
    if stale:
        print("out of date (run python monitoring/grafana/build_dashboards.py):", ", ".join(stale))
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
