"""``make bench-anomaly``: the anomaly model on defects the detector never saw, and its cost.

One run: render good boards and fit the anomaly head on them (``python -m export anomaly``'s
code path, threshold calibrated on held-out good boards to a 1 % false-alarm rate: detector
version 2 = version 1 + the head), then send fresh good boards and boards with each UNSEEN
defect kind (pcb/synthetic.py: scratch, contamination, foreign part, burn) through the real
Triton ``pcb_inspect``:

- detector alone: the board is flagged when a detection maps to a defect verdict; its
  score for AUROC is the highest such detection's confidence (0 without one);
- anomaly: the image score (1.0 = threshold); AUROC and recall at the threshold;
- detector + anomaly: the ensemble's own verdict (pcb/review.py), flagged when not ``normal``.

Then the cost: ``pcb_inspect`` closed-loop at concurrency 1 and 8 serving version 1 (no
head) and version 2 (head), same repository, same images, one sitting. Writes its section of
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import time

import cv2
import numpy as np

from bench.common import OUT, WEIGHTS, bench_images, bench_repository, git_rev, machine, write_section
from bench.gateway_bench import closed_loop
from export.anomaly_net import AnomalySpec
from export.anomaly_target import add_version
from export.detector_config import HEADER
from inference import contract, results
from inference.aio import AsyncTriton
from inference.sync import SyncTriton
from pcb import taxonomy
from pcb.synthetic import UNSEEN, render_board, render_unseen, write_boards
from serving import batch_lane
from serving.cpu_server import TritonServer
from serving.repository import DETECTOR, read_config, write_config

WORK = OUT / "anomaly"


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U, ties counted half)."""
    pos, neg = scores[labels == 1], scores[labels == 0]
    if not len(pos) or not len(neg):
        return float("nan")
    greater = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(greater / (len(pos) * len(neg)))


def _jpeg(img: np.ndarray) -> bytes:
    return cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 85])[1].tobytes()


def serve(repo, version: int) -> None:
    """Serve only ``version`` of the detector (what `serving.admin promote` does live)."""
    cfg = read_config(repo / DETECTOR)
    del cfg.version_policy.specific.versions[:]
    cfg.version_policy.specific.versions.append(version)
    write_config(repo / DETECTOR, cfg, HEADER)
    batch_lane.sync(repo)  # the lane follows, as a promote makes it


def _server(repo) -> TritonServer:
    return TritonServer(repository=repo, log_file=WORK / "triton.log")


def evaluate(repo, n_good: int, per_kind: int) -> list[dict]:
    tax = taxonomy.load()
    cases = [("good", _jpeg(render_board(50_000 + i, defect_rate=0.0).image)) for i in range(n_good)]
    cases += [(k, _jpeg(render_unseen(60_000 + 100 * j + i, k).image))
              for j, k in enumerate(UNSEEN) for i in range(per_kind)]
    rows = []
    with _server(repo) as triton:
        client = SyncTriton(triton.grpc_url, timeout_s=60)
        for kind, data in cases:
            side = results.parsed(results.side, client.infer(contract.SINGLE_MODEL,
                                                             client.request(contract.inspect_request, data)))
            defects = [d.confidence for d in side.detections if tax.classes[d.class_id].verdict.code != tax.ok.code]
            rows.append({"kind": kind, "label": int(kind != "good"), "det_flag": bool(defects),
                         "det_score": max(defects, default=0.0), "anomaly": side.anomaly_score,
                         "final_flag": side.verdict_code != tax.ok.code,
                         "review": side.verdict_code == tax.anomaly.code})
    return rows


async def _cost_run(url: str, images: list[bytes], levels: list[int], seconds: float) -> dict[int, dict]:
    client = AsyncTriton(url, timeout_s=60)
    out = {}
    for c in levels:
        out[c] = await closed_loop(lambda img: client.inspect(img), images, c, seconds)
    await client.close()
    return out


def cost(repo, levels: list[int], seconds: float) -> dict[str, dict[int, dict]]:
    """off: version 1 (the detector alone); on: version 2 (the same detector + the head)."""
    images = bench_images(16)
    out = {}
    for label, version in (("off", 1), ("on", 2)):
        serve(repo, version)
        with _server(repo) as triton:
            out[label] = asyncio.run(_cost_run(triton.grpc_url, images, levels, seconds))
            for c, r in out[label].items():
                print(f"anomaly {label:<3} c={c}: {r['throughput']:.1f}/s p50 {r['p50_ms']:.1f} ms p99 {r['p99_ms']:.1f} ms")
    return out


def report(lineage: dict, rows: list[dict], costs: dict, seconds: float, command: str) -> str:
    labels = np.array([r["label"] for r in rows])
    det = np.array([r["det_score"] for r in rows])
    ano = np.array([r["anomaly"] for r in rows], np.float64)
    good = [r for r in rows if r["label"] == 0]

    def rate(rs, key):
        return sum(r[key] for r in rs) / max(len(rs), 1)

    lines = ["## Anomaly model: unseen defects and cost (`make bench-anomaly`)", "",
             f"Command: `{command}`, commit {git_rev()}, {time.strftime('%Y-%m-%d %H:%M')}.",
             f"Machine: {machine()}. The real CPU Triton, `pcb_inspect` serving the detector without and with the "
             "anomaly head.",
             f"Model: {lineage['method']}; backbone {lineage['backbone']}; bank {lineage['bank']} x {lineage['dims']} "
             f"dims from {lineage['patches']} patches of {lineage['fit_boards']} good boards; threshold at "
             f"{lineage['far']:.0%} false alarms on {lineage['holdout_boards']} held-out good boards; fit "
             f"{lineage['fit_seconds']} s; ONNX vs PyTorch max abs diff {lineage['parity_max_abs_diff']:.1e} "
             "(threshold units).",
             f"Evaluation: {len(good)} fresh good boards, {len(rows) - len(good)} boards with a defect kind the "
             "detector was never trained on (rendered after the camera look).", "",
             "| set | boards | detector alone flags | anomaly >= threshold | detector + anomaly flags |",
             "|---|---:|---:|---:|---:|"]
    for kind in ("good", *UNSEEN):
        rs = [r for r in rows if r["kind"] == kind]
        if rs:
            lines.append(f"| {kind} | {len(rs)} | {rate(rs, 'det_flag'):.0%} | "
                         f"{sum(r['anomaly'] >= 1.0 for r in rs) / len(rs):.0%} | {rate(rs, 'final_flag'):.0%} |")
    unseen = [r for r in rows if r["label"] == 1]
    lines += ["", f"- image-level AUROC on unseen defects vs good boards: anomaly score {auroc(ano, labels):.3f}, "
                  f"detector alone (highest defect confidence) {auroc(det, labels):.3f}.",
              f"- recall at the chosen threshold: detector alone {rate(unseen, 'det_flag'):.0%}, detector + anomaly "
              f"{rate(unseen, 'final_flag'):.0%}; false alarms on good boards: detector alone "
              f"{rate(good, 'det_flag'):.0%}, detector + anomaly {rate(good, 'final_flag'):.0%}.", ""]
    lines += ["| pcb_inspect | concurrency | req/s | p50 ms | p99 ms |", "|---|---:|---:|---:|---:|"]
    for label in ("off", "on"):
        for c, r in costs[label].items():
            lines.append(f"| anomaly {label} | {c} | {r['throughput']:.1f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} |")
    lines.append("")
    for c in costs["off"]:
        off, on = costs["off"][c], costs["on"][c]
        lines.append(f"- concurrency {c}: p50 {on['p50_ms'] / off['p50_ms']:.2f}x ({on['p50_ms'] - off['p50_ms']:+.1f} ms), "
                     f"time per board {off['throughput'] / on['throughput']:.2f}x (target <= 1.25x), {seconds:.0f} s per point.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.anomaly_eval")
    ap.add_argument("--fit-boards", type=int, default=400, help="good boards rendered for the fit (a quarter calibrates)")
    ap.add_argument("--good", type=int, default=100, help="fresh good boards in the evaluation")
    ap.add_argument("--per-kind", type=int, default=25, help="boards per unseen defect kind")
    ap.add_argument("--bank", type=int, default=AnomalySpec.bank)
    ap.add_argument("--dims", type=int, default=AnomalySpec.dims)
    ap.add_argument("--concurrency", default="1,8")
    ap.add_argument("--seconds", type=float, default=10)
    args = ap.parse_args(argv)
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    repo = bench_repository(WORK / "model_repository")
    write_boards(WORK / "good", args.fit_boards)
    _, lineage = add_version(repo, WEIGHTS, WORK / "good", AnomalySpec(bank=args.bank, dims=args.dims),
                             serve_only_new=True)
    rows = evaluate(repo, args.good, args.per_kind)
    costs = cost(repo, [int(c) for c in args.concurrency.split(",")], args.seconds)
    given = sys.argv[1:] if argv is None else argv
    command = "make bench-anomaly" + (f" (python -m bench.anomaly_eval {' '.join(given)})" if given else "")
    write_section("anomaly", report(lineage, rows, costs, args.seconds, command))
    print("wrote docs/benchmarks.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
