"""The ceiling Triton's overhead is measured against: the same pipeline (decode ->
letterbox -> onnxruntime -> NMS) in one Python process, same model and images, at the
best batch size."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from pcb.image_decode import decode_image
from pcb.letterbox import letterbox
from pcb.postprocess import postprocess
from pcb.side_config import DETECTOR_STRIDE
from serving.ort_detector import OrtDetector


def pipeline_throughput(onnx: Path, images: list[bytes], batch: int, seconds: float = 4.0,
                        threads: int = 0, rect: bool = True) -> float:
    """Images per second through the whole pipeline at ``batch`` images per ORT call."""
    det = OrtDetector(onnx, threads)
    stride = DETECTOR_STRIDE if rect else 0

    def run_batch(start: int) -> None:
        chunk = [images[(start + k) % len(images)] for k in range(batch)]
        prepped = [letterbox(decode_image(d), 320, stride) for d in chunk]
        out = det.run(np.stack([p[0] for p in prepped]))["output0"]
        for raw, (_, t) in zip(out, prepped):
            postprocess(raw, t)

    run_batch(0)  # warm-up
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        run_batch(n)
        n += batch
    return n / (time.perf_counter() - t0)


def single_image(onnx: Path, rect: bool = True, threads: int = 1) -> Callable[[bytes], object]:
    """One encoded image through the whole pipeline in this process (the reference every
    Triton path is compared with, one image at a time)."""
    det = OrtDetector(onnx, threads)
    stride = DETECTOR_STRIDE if rect else 0

    def run(data: bytes) -> object:
        chw, t = letterbox(decode_image(data), 320, stride)
        return postprocess(det.run(chw[None])["output0"][0], t)

    return run


def single_image_ms(onnx: Path, images: list[bytes], rect: bool = True, threads: int = 1,
                    n: int = 200) -> float:
    """p50 milliseconds for one image through the whole pipeline, one at a time."""
    run = single_image(onnx, rect, threads)
    times = []
    for i in range(n + 10):
        t0 = time.perf_counter()
        run(images[i % len(images)])
        times.append(time.perf_counter() - t0)
    return float(np.median(times[10:]) * 1000)
