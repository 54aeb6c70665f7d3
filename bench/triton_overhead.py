"""``make bench-overhead``: where a board's time goes between the client and the model, at
c=1 (issue 16: ``pcb_inspect`` within 1.15x the in-process pipeline).

Triton's own trace (``--trace-config level=TIMESTAMPS``, every request) gives each request's
REQUEST_START, QUEUE_START, COMPUTE_START, COMPUTE_INPUT_END, COMPUTE_OUTPUT_START and
COMPUTE_END on the host's monotonic clock, the one the client's ``time.monotonic_ns`` reads,
so one request splits into: client -> server, queue, input, the python model's execution
(its stub's hand-over both ways plus the model's own code), output, server -> client. Three
models, one request at a time, the contract's sync client (no answer parsing):

  noop          a python model that returns at once: the python backend's floor
  pcb_detector  the line's whole-side model, called directly
  pcb_inspect   the one-step ensemble over it, what the gateway calls

beside the same pipeline in-process (decode -> letterbox -> onnxruntime -> NMS), so the
model's execution minus the in-process time is the hand-over to and from the stub.
"""

from __future__ import annotations

import argparse
import collections
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from tritonclient.grpc import model_config_pb2 as mc

from bench.common import OUT, bench_images, git_rev, machine, write_section
from bench.inprocess import single_image
from bench.levers import NOW, build
from inference.sync import SyncTriton
from serving.cpu_server import TritonServer
from serving.repository import DETECTOR, write_config

NOOP = "noop"
NOOP_MODEL = """
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        return [pb_utils.InferenceResponse([pb_utils.Tensor("N", np.array([[1]], np.int32))]) for _ in requests]
"""
STAGES = (
    ("client -> server", "send", "REQUEST_START"),
    ("queue", "QUEUE_START", "COMPUTE_START"),
    ("input", "COMPUTE_START", "COMPUTE_INPUT_END"),
    ("python model execution", "COMPUTE_INPUT_END", "COMPUTE_OUTPUT_START"),
    ("output", "COMPUTE_OUTPUT_START", "COMPUTE_END"),
    ("server -> client", "COMPUTE_END", "received"),
    ("total", "send", "received"),
)


def add_noop(repo: Path) -> None:
    cfg = mc.ModelConfig(name=NOOP, backend="python", max_batch_size=16)
    cfg.input.add(name="IMAGE", data_type=mc.TYPE_UINT8, dims=[-1])
    cfg.output.add(name="N", data_type=mc.TYPE_INT32, dims=[1])
    cfg.instance_group.add(count=1, kind=mc.ModelInstanceGroup.KIND_CPU)
    cfg.dynamic_batching.max_queue_delay_microseconds = 0
    (repo / NOOP / "1").mkdir(parents=True, exist_ok=True)
    (repo / NOOP / "1" / "model.py").write_text(NOOP_MODEL)
    write_config(repo / NOOP, cfg)


def timed_requests(url: str, model: str, images: list[bytes], n: int,
                   local: Callable[[bytes], object] | None = None) -> tuple[list[tuple[int, int]], list[float]]:
    """(sent, received) monotonic ns per request, one at a time; with ``local``, the same
    image through it before each request (ms each), so the in-process reference sees the
    same moments of a shared machine as Triton does."""
    client = SyncTriton(url)
    out, local_ms = [], []
    try:
        for i in range(n):
            data = images[i % len(images)]
            if local is not None:
                t = time.perf_counter()
                local(data)
                local_ms.append((time.perf_counter() - t) * 1000)
            img = np.frombuffer(data, np.uint8)[None]
            t0 = time.monotonic_ns()
            client.infer_tensors(model, {"IMAGE": img})
            out.append((t0, time.monotonic_ns()))
    finally:
        client.reset()
    return out, local_ms


def read_trace(path: Path) -> dict[str, list[dict[str, int]]]:
    """Per model, each traced request's timestamps (a composing model's own trace is a
    child of its ensemble's; each is listed under its own model). Triton writes the file
    when it stops."""
    if not path.exists():
        raise RuntimeError(f"no trace at {path}: Triton did not stop cleanly (see triton_overhead.log)")
    names: dict[int, str] = {}
    stamps: dict[int, dict[str, int]] = collections.defaultdict(dict)
    for entry in json.loads(path.read_text()):
        if "model_name" in entry:
            names[entry["id"]] = entry["model_name"]
        for ts in entry.get("timestamps", []):
            stamps[entry["id"]][ts["name"]] = int(ts["ns"])
    by_model: dict[str, list[dict[str, int]]] = collections.defaultdict(list)
    for tid, s in stamps.items():
        if tid in names and "COMPUTE_END" in s:
            by_model[names[tid]].append(s)
    return by_model


def split(traced: list[dict[str, int]], sent: list[tuple[int, int]], skip: int) -> dict[str, float]:
    """p50 ms of every stage over the requests after the first ``skip``."""
    rows = []
    for t0, t1 in sent[skip:]:
        match = [s for s in traced if t0 <= s["REQUEST_START"] and s["COMPUTE_END"] <= t1]
        if len(match) == 1:
            rows.append(match[0] | {"send": t0, "received": t1})
    if not rows:
        raise RuntimeError("no traced request matched a client's request: is Triton's trace on?")
    return {name: float(np.median([(r[b] - r[a]) / 1e6 for r in rows])) for name, a, b in STAGES} | {"n": len(rows)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.triton_overhead")
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--no-write", action="store_true", help="print, do not touch docs/")
    args = ap.parse_args(argv)
    started = time.strftime("%Y-%m-%d %H:%M")
    images = bench_images(16)
    repo = build(NOW, OUT / "overhead_repository")
    add_noop(repo)
    onnx = repo / DETECTOR / "1" / "model.onnx"
    trace = OUT / "overhead_trace.json"
    trace.unlink(missing_ok=True)
    flags = ["--trace-config=mode=triton", f"--trace-config=triton,file={trace}", "--trace-config=level=TIMESTAMPS",
             "--trace-config=rate=1"]
    local = single_image(onnx, rect=True, threads=1)
    sent, local_ms = {}, []
    with TritonServer(repository=repo, log_file=OUT / "triton_overhead.log", extra_args=flags,
                      load=[NOOP, "pcb_inspect"]) as srv:
        for model in (NOOP, DETECTOR, "pcb_inspect"):
            sent[model], ms = timed_requests(srv.grpc_url, model, images, args.requests + 20,
                                             local if model == DETECTOR else None)
            local_ms += ms[20:]
    inproc = float(np.median(local_ms))
    traced = read_trace(trace)
    # an ensemble computes nothing itself: its request's stages are those of its step's
    # trace (a child of the ensemble's), matched by time like the rest; so for pcb_inspect
    # "client -> server" and "server -> client" include the ensemble's hand-over to its step
    result = {NOOP: split(traced[NOOP], sent[NOOP], 20), DETECTOR: split(traced[DETECTOR], sent[DETECTOR], 20),
              "pcb_inspect": split(traced[DETECTOR], sent["pcb_inspect"], 20)}
    body = report(result, inproc, started)
    print(body)
    if not args.no_write:
        write_section("overhead", body)
    return 0


def report(result: dict[str, dict[str, float]], inproc: float, started: str) -> str:
    models = list(result)
    lines = [
        "## Where the c=1 time goes (`make bench-overhead`)",
        "",
        f"Command: `make bench-overhead` (= `python -m bench.triton_overhead`), run {started}, commit {git_rev()}.",
        f"Machine: {machine()}. One request at a time over gRPC (the contract's sync client, no answer parsing), "
        "Triton's trace on every request, p50 ms per stage "
        f"(over {min(int(r['n']) for r in result.values())}+ requests per model); the same 640x480 boards "
        f"in-process, timed before each `pcb_detector` request: **{inproc:.1f} ms**.",
        "",
        "| stage | " + " | ".join(models) + " |",
        "|---|" + "---:|" * len(models),
    ]
    for name, _, _ in STAGES:
        lines.append(f"| {name} | " + " | ".join(f"{result[m][name]:.2f}" for m in models) + " |")
    det = result[DETECTOR]
    hand_over = det["python model execution"] - inproc
    outside = det["total"] - det["python model execution"]
    lines += [
        "",
        f"- `pcb_detector` directly: {det['total']:.1f} ms = {det['total'] / inproc:.2f}x in-process; "
        f"{outside:.2f} ms outside the python model's execution (gRPC both ways, queue, tensors), "
        f"and the execution itself {hand_over:+.2f} ms against the in-process pipeline "
        "(the stub's hand-over both ways and the model's own code around the pipeline).",
        f"- `pcb_inspect` (the ensemble; its gRPC stages include the hand-over to its step): "
        f"{result['pcb_inspect']['total']:.1f} ms = "
        f"{result['pcb_inspect']['total'] / inproc:.2f}x in-process, "
        f"{result['pcb_inspect']['total'] - det['total']:+.2f} ms over calling the detector directly.",
        f"- The python backend's floor (`noop`): {result[NOOP]['total']:.2f} ms per request.",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
