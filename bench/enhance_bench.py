"""``make bench-enhance``: TARGETS P6, side by side in one run on the same 10 photos (one
face each, 640x480, quality "fast": faces restored, background resized):

  per-request load  the seed's first design: every photo starts a process that loads the
                    restorer (onnxruntime session from the ONNX file) and enhances one photo
  resident, 1 by 1  the face_enhance model in Triton, one photo after the other
  resident, batch   the same 10 photos sent at once (the gateway's batch API does this):
                    face_enhance instances overlap and face_restorer batches the crops

Default: the full-size GFPGAN v1.4 network (86 M parameters, fixed random init: the same
compute as the real weights, which cannot be downloaded here). ``--narrow`` for a quick run.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2

from bench.common import OUT, ROOT, git_rev, machine, write_section
from serving.cpu_server import TritonServer

OPTIONS = {"quality": "fast", "upscale": 2}


def photos(n: int = 10) -> list[bytes]:
    from enhance.synthetic import face_photo

    return [cv2.imencode(".jpg", face_photo(900 + i, (640, 480), 1, (150, 200))[0],
                         [cv2.IMWRITE_JPEG_QUALITY, 92])[1].tobytes() for i in range(n)]


def build_repository(dest: Path, narrow: bool) -> Path:
    from export.enhance_target import EnhanceExport, add_version

    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    shutil.copytree(ROOT / "model_repository" / "face_enhance", dest / "face_enhance",
                    ignore=shutil.ignore_patterns("__pycache__"))
    add_version(EnhanceExport(kind="gfpgan", repository=dest, narrow=narrow))
    # the upsampler is not used with quality "fast"; narrow keeps the repository small
    add_version(EnhanceExport(kind="realesrgan", repository=dest, narrow=True))
    return dest


def once(onnx: str, image: str, out: str) -> None:
    """One photo in a fresh process, model loaded first (the per-request-load baseline)."""
    from enhance.face_detect import make_detector
    from enhance.options import parse_options
    from enhance.pipeline import encode_like, enhance
    from pcb.image_decode import decode_image
    from serving.ort_detector import OrtDetector

    restorer = OrtDetector(onnx)
    data = Path(image).read_bytes()
    r = enhance(decode_image(data), parse_options(OPTIONS), make_detector(None),
                lambda x: restorer.run(x)["output"])
    Path(out).write_bytes(encode_like(r.image, data)[0])


def per_request_load(onnx: Path, images: list[bytes], work: Path) -> float:
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    for i, data in enumerate(images):
        src = work / f"in{i}.jpg"
        src.write_bytes(data)
        subprocess.run([sys.executable, "-m", "bench.enhance_bench", "--once", str(onnx), str(src),
                        str(work / f"out{i}.jpg")], cwd=ROOT, check=True)
    return time.perf_counter() - t0


def _infer(url: str, data: bytes) -> int:
    from inference.sync import SyncTriton

    return SyncTriton(url, timeout_s=600).enhance(data, OPTIONS).faces


def resident(url: str, images: list[bytes], concurrent: bool) -> tuple[float, int]:
    t0 = time.perf_counter()
    if concurrent:
        with ThreadPoolExecutor(len(images)) as pool:
            faces = sum(pool.map(lambda d: _infer(url, d), images))
    else:
        faces = sum(_infer(url, d) for d in images)
    return time.perf_counter() - t0, faces


def restorer_stats(http_url: str) -> tuple[int, int]:
    from inference.repository_api import RepositoryAPI

    s = RepositoryAPI(http_url).counts("face_restorer")
    return s.inference_count, s.execution_count


def run(narrow: bool, n: int) -> dict:
    repo = build_repository(OUT / "enhance_repository", narrow)
    onnx = repo / "face_restorer" / "1" / "model.onnx"
    images = photos(n)
    res: dict = {"narrow": narrow, "images": n}
    srv = TritonServer(repository=repo, log_file=OUT / "enhance_triton.log")
    t0 = time.perf_counter()
    with srv.start(timeout=600):
        res["triton_start_s"] = time.perf_counter() - t0
        _infer(srv.grpc_url, images[0])  # warm-up: first-run allocations, not part of the comparison
        res["one_by_one_s"], faces1 = resident(srv.grpc_url, images, concurrent=False)
        inf0, exe0 = restorer_stats(srv.http_url)
        res["batch_s"], faces2 = resident(srv.grpc_url, images, concurrent=True)
        inf1, exe1 = restorer_stats(srv.http_url)
        res["faces"] = (faces1, faces2)
        res["restorer_avg_batch"] = (inf1 - inf0) / max(1, exe1 - exe0)
    res["per_request_load_s"] = per_request_load(onnx, images, OUT / "enhance_once")
    return res


def report(r: dict) -> str:
    n = r["images"]
    net = "narrow test GFPGAN (1/16 width)" if r["narrow"] else "full-size GFPGAN v1.4 (86 M params, random init)"
    load = r["per_request_load_s"] / r["one_by_one_s"]
    batch = r["one_by_one_s"] / r["batch_s"]
    rows = [("per-request load (seed's first design: a process per photo loads the model)", r["per_request_load_s"]),
            ("resident in Triton, one photo at a time", r["one_by_one_s"]),
            (f"resident in Triton, {n} photos at once (restorer avg batch {r['restorer_avg_batch']:.1f})",
             r["batch_s"])]
    lines = [
        "## Enhancement (P6)",
        "",
        f"`python -m bench.enhance_bench{' --narrow' if r['narrow'] else ''}` (= `make bench-enhance`), "
        f"git {git_rev()}, {time.strftime('%Y-%m-%d')}.",
        f"Machine: {machine()}.",
        f"{n} synthetic photos, 640x480, one face each, options {json.dumps(OPTIONS)} (faces restored, "
        f"background resized); {net}; face detection by OpenCV's Haar cascade. Faces found: "
        f"{r['faces'][0]} (1 by 1), {r['faces'][1]} (batch).",
        "",
        f"| mode | {n} photos (s) | per photo (s) |",
        "|---|---:|---:|",
        *[f"| {name} | {t:.1f} | {t / n:.2f} |" for name, t in rows],
        "",
        "| target | measured | goal |",
        "|---|---:|---:|",
        f"| P6 resident vs loading per request | {load:.2f}x | >= 2.7x |",
        f"| P6 {n}-photo batch vs one at a time | {batch:.2f}x | >= 1.3x |",
        "",
        f"Triton with the enhancement models was ready in {r['triton_start_s']:.1f} s (models loaded once).",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.enhance_bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--narrow", action="store_true", help="the narrow test network (quick)")
    ap.add_argument("--images", type=int, default=10)
    ap.add_argument("--once", nargs=3, metavar=("ONNX", "IMAGE", "OUT"), help=argparse.SUPPRESS)
    ap.add_argument("--no-write", action="store_true", help="print, do not touch docs/benchmarks.md")
    args = ap.parse_args(argv)
    if args.once:
        once(*args.once)
        return 0
    r = run(args.narrow, args.images)
    text = report(r)
    print(text)
    if not args.no_write:
        write_section("enhance", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
