"""``make bench-levers``: what each latency lever of the Triton path buys, one by one, in one
run (issue 16). Each layout is its own repository and its own Triton start; perf_analyzer
drives ``pcb_inspect`` with the same 640x480 JPEG boards.

  split, square      the pipeline as it was: pcb_preprocess -> pcb_detector -> pcb_postprocess,
                     320x320 letterbox
  split, rect        lever 1 alone: 320x256 letterbox (ultralytics' predict form)
  fused, square      lever 2 alone: the whole side in one python model
  fused, rect, prio  both, with the priority levels and queue bound the detector had before
                     (they switch off Triton's prefetching: export/detector_config.py)
  fused, rect        both (the CPU layout now)
  fused, rect, 2 thr the same with two onnxruntime threads per instance

Against the in-process pipeline (decode -> letterbox -> onnxruntime -> NMS, one image at a
time, one Python process, the same onnxruntime threads).
"""

from __future__ import annotations

import argparse
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.common import OUT, ROOT, WEIGHTS, bench_images, git_rev, machine, write_section
from bench.inprocess import single_image, single_image_ms
from bench.perf_triton import input_files, perf
from inference.sync import SyncTriton
from serving import batch_lane
from serving.cpu_server import TritonServer
from serving.repository import DETECTOR, EXPORTED, PREPROCESS, read_config, write_config


@dataclass(frozen=True)
class Layout:
    name: str
    split: bool
    rect: bool
    threads: int = 1
    priority: bool = False  # the old batcher block: two priority levels and a bounded queue


PRIORITY = Layout("fused, rect, priority levels (before)", split=False, rect=True, priority=True)
NOW = Layout("fused, rect (now)", split=False, rect=True)
LAYOUTS = (
    Layout("split, square (before)", split=True, rect=False),
    Layout("split, rect", split=True, rect=True),
    Layout("fused, square", split=False, rect=False),
    PRIORITY,
    NOW,
    Layout("fused, rect, 2 threads", split=False, rect=True, threads=2),
)


def build(layout: Layout, dest: Path) -> Path:
    from export import onnx_target
    from serving.gpu_repository import assemble

    shutil.rmtree(dest, ignore_errors=True)
    if layout.split:
        assemble(dest)
    else:
        shutil.copytree(ROOT / "model_repository", dest,
                        ignore=shutil.ignore_patterns("__pycache__", *EXPORTED))
    onnx_target.add_version(dest, WEIGHTS, imgsz=320, max_batch=16)
    for model in (DETECTOR, PREPROCESS):
        if (dest / model / "config.pbtxt").exists():
            cfg = read_config(dest / model)
            if model == PREPROCESS or not layout.split:
                cfg.parameters["letterbox"].string_value = "rect" if layout.rect else "square"
            if model == DETECTOR:
                cfg.parameters["intra_op_threads"].string_value = str(layout.threads)
                if layout.priority:
                    db = cfg.dynamic_batching
                    db.priority_levels, db.default_priority_level = 2, 2
                    db.default_queue_policy.max_queue_size = 128
                    db.default_queue_policy.allow_timeout_override = True
            write_config(dest / model, cfg)
    batch_lane.remove(dest)  # the levers are the line's own; no batch work here
    return dest


def paired_c1(onnx: Path, images: list[bytes], grpc_url: str, rect: bool, threads: int,
              n: int = 200) -> dict[str, float]:
    """One image at a time, the in-process pipeline and Triton's ``pcb_inspect`` (Python gRPC
    client, answer parsed) taking turns image by image, the order swapped every pair: both
    see the machine as it is at that moment, so a slow patch of a shared host lands on both
    rather than on whichever ran second (the in-process reference moved by 60 % between
    sittings when measured apart)."""
    local, triton = single_image(onnx, rect, threads), SyncTriton(grpc_url)

    def served(img: bytes) -> None:
        triton.inspect(img)

    times: dict[str, list[float]] = {"local": [], "served": []}
    try:
        for i in range(n + 10):
            img = images[i % len(images)]
            for name, fn in (("local", local), ("served", served))[:: 1 if i % 2 else -1]:
                t0 = time.perf_counter()
                fn(img)
                times[name].append((time.perf_counter() - t0) * 1000)
    finally:
        triton.reset()  # closes the channel
    loc, srv = np.array(times["local"][10:]), np.array(times["served"][10:])
    return {"local_p50": float(np.median(loc)), "served_p50": float(np.median(srv)),
            "ratio": float(np.median(srv) / np.median(loc)), "pair_ratio": float(np.median(srv / loc))}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.levers")
    ap.add_argument("--interval-ms", type=int, default=4000)
    ap.add_argument("--concurrency", default="1,4,8")
    args = ap.parse_args(argv)
    levels = [int(c) for c in args.concurrency.split(",")]
    started = time.strftime("%Y-%m-%d %H:%M")
    images = bench_images(16)
    data = input_files(images)["pcb_inspect"]
    rows, pairs = [], []
    for layout in LAYOUTS:
        repo = build(layout, OUT / "levers_repository")
        onnx = repo / DETECTOR / "1" / "model.onnx"
        inproc = single_image_ms(onnx, images, rect=layout.rect, threads=layout.threads)
        srv = TritonServer(repository=repo, log_file=OUT / "triton_levers.log")
        with srv:
            for c in levels:
                r = perf("pcb_inspect", srv.grpc_url, c, data, OUT / f"pa_levers_{c}.csv", args.interval_ms)
                r.update(layout=layout.name, concurrency=c, inproc_ms=inproc)
                rows.append(r)
                print(f"{layout.name:<26} c={c:<2} {r['throughput']:6.1f}/s p50 {r['p50_ms']:6.1f} ms "
                      f"p99 {r['p99_ms']:6.1f} ms (in-process {inproc:.1f} ms)", flush=True)
            pair = paired_c1(onnx, images, srv.grpc_url, layout.rect, layout.threads)
            pairs.append(pair | {"layout": layout.name})
            print(f"{layout.name:<26} paired c=1: Triton {pair['served_p50']:.1f} ms, in-process "
                  f"{pair['local_p50']:.1f} ms ({pair['ratio']:.2f}x)", flush=True)
    write_section("levers", report(rows, pairs, started))
    return 0


def report(rows: list[dict], pairs: list[dict], started: str) -> str:
    lines = [
        "## Line latency levers, one by one (`make bench-levers`)",
        "",
        f"Command: `make bench-levers` (= `python -m bench.levers`), run {started}, commit {git_rev()}.",
        f"Machine: {machine()}. perf_analyzer over gRPC on `pcb_inspect`, 16 synthetic 640x480 JPEG",
        "boards (q85), 4 s windows; each layout its own repository and Triton start, in one run.",
        "In-process = the same decode -> letterbox -> onnxruntime -> NMS in one Python process,",
        "one image at a time, same onnxruntime threads (p50 of 200 images).",
        "",
        "| layout | concurrency | inferences/s | p50 ms | p99 ms | in-process ms | p50 / in-process |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['layout']} | {r['concurrency']} | {r['throughput']:.1f} | {r['p50_ms']:.1f} | "
                     f"{r['p99_ms']:.1f} | {r['inproc_ms']:.1f} | "
                     f"{r['p50_ms'] / r['inproc_ms']:.2f}x |" if r["concurrency"] == 1 else
                     f"| {r['layout']} | {r['concurrency']} | {r['throughput']:.1f} | {r['p50_ms']:.1f} | "
                     f"{r['p99_ms']:.1f} | | |")
    lines += ["", "Paired at c=1: the in-process pipeline and `pcb_inspect` (Python gRPC client, answer parsed: "
              "what a client pays, a little more than perf_analyzer) take turns image by image, the order "
              "swapped every pair, 200 pairs per layout, so both see the same moments of the shared machine.", "",
              "| layout | Triton p50 ms | in-process p50 ms | p50 / in-process | median of per-pair ratios |",
              "|---|---:|---:|---:|---:|"]
    lines += [f"| {p['layout']} | {p['served_p50']:.1f} | {p['local_p50']:.1f} | {p['ratio']:.2f}x | "
              f"{p['pair_ratio']:.2f}x |" for p in pairs]
    return "\n".join(lines + prefetch_lines(rows))


def prefetch_lines(rows: list[dict]) -> list[str]:
    """The batcher lever: the same fused rect layout with and without the priority levels and
    queue bound that switch off Triton's prefetching."""
    by = {(r["layout"], r["concurrency"]): r for r in rows}
    out = []
    for c in sorted({r["concurrency"] for r in rows}):
        old, new = by.get((PRIORITY.name, c)), by.get((NOW.name, c))
        if old and new:
            out.append(f"- c={c}: without priority levels and queue bound (prefetching on) "
                       f"{new['throughput'] / old['throughput']:.2f}x the throughput, p50 "
                       f"{new['p50_ms'] / old['p50_ms']:.2f}x, p99 {new['p99_ms'] / old['p99_ms']:.2f}x.")
    return ["", "Prefetching (the detector's batcher without priority levels or a queue bound, "
            "export/detector_config.py), same layout otherwise:", *out] if out else []


if __name__ == "__main__":
    raise SystemExit(main())
