"""GPU decode check, for a machine with a CUDA GPU: nvJPEG + torch letterbox
(serving/gpu_preprocess.py, what ``pcb_preprocess`` runs with ``decode: gpu``) against the
OpenCV path (pcb.image_decode + pcb.letterbox), on camera-like 640x480 JPEGs.

1. Parity: per batch, the letterboxed tensors' difference in 8-bit levels (mean, p99.9, max),
   the decoders' own difference before letterboxing, identical transforms; odd sizes; the
   per-request fallbacks (PNG, truncated, corrupt) give the OpenCV path's codes; with
   ``--onnx``, the detector's boxes from both inputs under the parity rule used everywhere
   (IoU >= 0.9, same class, score within 0.02; onnxruntime, any provider); and the decode
   does not overwrite memory that queued kernels still read (``stream_safety``).
2. Speed: decode + letterbox of a batch, OpenCV one image after another (one Triton
   instance's work) vs the GPU batch, at several batch sizes; p50 of repeated runs.

  python -m bench.gpu_decode_check [--onnx build/.../model.onnx] [--out gpu_decode.json]

Exits 1 when a gate fails: mean difference over 1 level, a transform or refusal code that
differs, any corruption in the stream-safety rounds, or (with --onnx) under 99 % of the
detections reproduced. The GPU decoder
rounds its IDCT and chroma upsampling differently from libjpeg-turbo, so the maximum
difference is reported, not gated: sharp colour edges may differ by more than a few levels.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from bench.common import bench_images
from pcb.image_decode import ImageError, decode_image
from pcb.letterbox import letterbox
from pcb.side_config import DETECTOR_STRIDE
from pcb.synthetic import render_board
from serving.gpu_preprocess import Prepared, TorchPreprocessor, decode_jpegs

IMGSZ = 320
ODD_SIZES = [(333, 517), (1001, 77), (97, 131), (2592, 1944)]


def opencv_batch(blobs: list[bytes]) -> list[tuple[np.ndarray, np.ndarray]]:
    return [letterbox(decode_image(b), IMGSZ, DETECTOR_STRIDE) for b in blobs]


def levels(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(a.astype(np.float64) - b.astype(np.float64)).ravel()


def parity(prep: TorchPreprocessor, blobs: list[bytes]) -> dict:
    gpu = prep(blobs)
    ref = opencv_batch(blobs)
    d = np.concatenate([levels(g.images[0].cpu().numpy() * 255, r * 255) for g, (r, _) in zip(gpu, ref)
                        if isinstance(g, Prepared)])
    same_transform = all(isinstance(g, Prepared) and np.array_equal(g.transform[0], t) for g, (_, t) in zip(gpu, ref))
    # the decoders alone, full resolution (OpenCV gives BGR)
    dec = decode_jpegs([torch.frombuffer(bytearray(b), dtype=torch.uint8) for b in blobs], prep.device)
    dd = np.concatenate([levels(x.permute(1, 2, 0).cpu().numpy(), decode_image(b)[..., ::-1])
                         for x, b in zip(dec, blobs)])
    return {"images": len(blobs), "same_transform": same_transform,
            "letterboxed_levels": {"mean": float(d.mean()), "p99_9": float(np.percentile(d, 99.9)),
                                   "max": float(d.max()), "share_over_1": float((d > 1.5).mean())},
            "decoded_levels": {"mean": float(dd.mean()), "p99_9": float(np.percentile(dd, 99.9)),
                               "max": float(dd.max())}}


def fallbacks(prep: TorchPreprocessor) -> dict:
    good = bench_images(2)
    png = cv2.imencode(".png", render_board(1).image)[1].tobytes()
    cases = {"jpeg": good[0], "png": png, "truncated": good[1][: len(good[1]) // 3],
             "corrupt_header": b"\xff\xd8\xff\xe0" + b"\0" * 40, "not_an_image": b"hello" * 20}
    out = {}
    for (name, data), got in zip(cases.items(), prep(list(cases.values()))):
        try:
            letterbox(decode_image(data), IMGSZ, DETECTOR_STRIDE)
            want = "ok"
        except ImageError as e:
            want = e.code
        have = got.code if isinstance(got, ImageError) else "ok"
        out[name] = {"gpu_path": have, "opencv_path": want, "same": have == want}
    return out


def detections(onnx: Path, prep: TorchPreprocessor, blobs: list[bytes]) -> dict:
    from export.plan_check import match_rate
    from pcb.postprocess import postprocess
    from serving.ort_detector import OrtDetector

    det = OrtDetector(onnx)
    gpu = [g for g in prep(blobs) if isinstance(g, Prepared)]
    ref = opencv_batch(blobs)
    matched = total = 0
    worst = 0.0
    for g, (chw, t) in zip(gpu, ref):
        a = postprocess(det.run(chw[None])["output0"][0], t)[0]
        b = postprocess(det.run(g.images.cpu().numpy())["output0"][0], g.transform[0])[0]
        m, n, w = match_rate(a, b)
        matched, total, worst = matched + m, total + n, max(worst, w)
    return {"matched": matched, "total": total, "rate": matched / total if total else 1.0, "max_score_diff": worst}


def stream_safety(prep: TorchPreprocessor, blobs: list[bytes], iterations: int = 30) -> dict:
    """pytorch/vision#9606: nvJPEG writing into freed blocks that kernels queued on the
    caller's stream still read. Each round queues a long matmul, then reductions over
    tensors it frees at once, then decodes; the reductions and the decoded batch must both
    come out as computed alone (serving.gpu_preprocess.decode_jpegs synchronises for this)."""
    if prep.device.type != "cuda":
        return {"skipped": "not a CUDA device"}
    want = [g.images.clone() for g in prep(blobs) if isinstance(g, Prepared)]
    a = torch.randn(8192, 8192, device=prep.device)
    corrupted_sums = corrupted_images = 0
    for _ in range(iterations):
        victims = [torch.full((1 << 22,), 1.5, device=prep.device) for _ in range(4)]
        torch.cuda.synchronize(prep.device)
        _ = a @ a  # keeps the stream busy while the reductions wait behind it
        sums = [v.sum() for v in victims]
        del victims
        got = [g.images for g in prep(blobs) if isinstance(g, Prepared)]
        torch.cuda.synchronize(prep.device)
        corrupted_sums += any(float(s) != 1.5 * (1 << 22) for s in sums)
        corrupted_images += any(not torch.equal(g, w) for g, w in zip(got, want))
    return {"iterations": iterations, "corrupted_sums": corrupted_sums, "corrupted_images": corrupted_images}


def p50_ms(fn, repeats: int) -> float:
    fn()  # warm-up (nvJPEG handles, CUDA kernels, allocator)
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000


def speed(prep: TorchPreprocessor, blobs: list[bytes], batches: list[int], repeats: int) -> list[dict]:
    rows = []
    for n in batches:
        chunk = [blobs[i % len(blobs)] for i in range(n)]
        cpu = p50_ms(lambda c=chunk: opencv_batch(c), repeats)
        gpu = p50_ms(lambda c=chunk: prep(c), repeats)  # synchronised: results are on the GPU when it returns
        rows.append({"batch": n, "opencv_ms": cpu, "gpu_ms": gpu, "opencv_img_s": n / cpu * 1000,
                     "gpu_img_s": n / gpu * 1000, "speedup": cpu / gpu})
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.gpu_decode_check", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda:0")
    ap.add_argument("--images", type=int, default=64, help="distinct 640x480 boards")
    ap.add_argument("--batches", default="1,8,32,64")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--onnx", type=Path, help="the detector, for the detection-level parity")
    ap.add_argument("--out", type=Path, default=Path("gpu_decode.json"))
    args = ap.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("no CUDA device: this check needs a GPU (the CPU half of it is tests/test_gpu_preprocess.py)")
        return 2

    prep = TorchPreprocessor(IMGSZ, DETECTOR_STRIDE, device=args.device)
    blobs = bench_images(args.images)
    odd = [cv2.imencode(".jpg", render_board(50 + i, size=s).image, [cv2.IMWRITE_JPEG_QUALITY, 85])[1].tobytes()
           for i, s in enumerate(ODD_SIZES)]
    report: dict = {
        "machine": {"gpu": torch.cuda.get_device_name(prep.device) if prep.device.type == "cuda" else "cpu",
                    "torch": torch.__version__, "torchvision": __import__("torchvision").__version__,
                    "opencv": cv2.__version__, "python": platform.python_version()},
        "parity_camera": parity(prep, blobs),
        "parity_odd_sizes": parity(prep, odd),
        "fallbacks": fallbacks(prep),
        "stream_safety": stream_safety(prep, blobs[:16]),
    }
    if args.onnx:
        report["detections"] = detections(args.onnx, prep, blobs)
    report["speed"] = speed(prep, blobs, [int(b) for b in args.batches.split(",")], args.repeats)
    report["decoded_on_device"], report["decoded_by_opencv"] = prep.decoded_on_device, prep.decoded_by_opencv

    failures = [f"{k}: mean {v['letterboxed_levels']['mean']:.3f} levels"
                for k, v in report.items() if k.startswith("parity") and v["letterboxed_levels"]["mean"] > 1.0]
    failures += [f"{k}: transforms differ" for k, v in report.items() if k.startswith("parity") and not v["same_transform"]]
    failures += [f"fallback {k}: {v}" for k, v in report["fallbacks"].items() if not v["same"]]
    if report["stream_safety"].get("corrupted_sums") or report["stream_safety"].get("corrupted_images"):
        failures.append(f"stream safety: {report['stream_safety']}")
    if "detections" in report and report["detections"]["rate"] < 0.99:
        failures.append(f"detections: {report['detections']}")
    report["failures"] = failures

    args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps({k: v for k, v in report.items() if k != "speed"}, indent=2))
    print(f"{'batch':>5} {'OpenCV ms':>10} {'GPU ms':>8} {'OpenCV img/s':>13} {'GPU img/s':>10} {'x':>6}")
    for r in report["speed"]:
        print(f"{r['batch']:>5} {r['opencv_ms']:>10.2f} {r['gpu_ms']:>8.2f} {r['opencv_img_s']:>13.0f} "
              f"{r['gpu_img_s']:>10.0f} {r['speedup']:>6.1f}")
    print("FAIL: " + "; ".join(failures) if failures else "parity gates passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
