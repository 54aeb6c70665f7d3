"""A diagnostic for ``make bench-line-beside``: the batch lane's detector run flat out by plain
onnxruntime under ``SCHED_IDLE``, in as many processes and threads as the lane has
instances, with no Triton, Celery, database or files around it.

It is the floor for any batch work on a shared CPU: the kernel already gives the line every
cycle it asks for, so what the line still loses beside it (caches, memory bandwidth, the
cost of preempting) is what the hardware charges for running anything else on these cores.
The batch lane can approach it, not beat it.

``python -m bench.idle_burner REPOSITORY --seconds 20`` prints images/s.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import time
from pathlib import Path

import numpy as np

from inference.contract import BATCH_LANE_DETECTOR
from serving.repository import read_config, served_versions, versions


def _burn(onnx: str, threads: int, batch: int, shape: tuple[int, int], ready, stop, done) -> None:
    from serving.cpu_priority import lower
    from serving.ort_detector import OrtDetector

    detector = OrtDetector(onnx, threads)  # onnxruntime's threads exist now: all of them lowered
    applied = lower("idle")
    x = np.random.default_rng(0).random((batch, 3, *shape), dtype=np.float32)
    detector.run(x)
    ready.put(applied)
    n = 0
    while not stop.is_set():
        detector.run(x)
        n += batch
    done.put(n)


class IdleBurner:
    """``with IdleBurner(repository) as b: ...`` burns while the block runs; ``b.result``
    afterwards. Processes are spawned and warm before the block starts, so their start-up
    does not land on the measurement."""

    def __init__(self, repository: Path, batch: int = 8, shape: tuple[int, int] = (256, 320)):
        lane = repository / BATCH_LANE_DETECTOR
        cfg = read_config(lane)
        version = max(served_versions(cfg, versions(lane)))
        self.onnx = str(lane / str(version) / "model.onnx")
        self.procs = sum(g.count or 1 for g in cfg.instance_group) or 1
        self.threads = int(cfg.parameters["intra_op_threads"].string_value or "1")
        self.batch, self.shape = batch, shape
        self.result: dict = {}

    def __enter__(self) -> IdleBurner:
        ctx = mp.get_context("spawn")
        self._ready, self._done, self._stop = ctx.Queue(), ctx.Queue(), ctx.Event()
        self._ps = [ctx.Process(target=_burn, daemon=True, args=(self.onnx, self.threads, self.batch, self.shape,
                                                                   self._ready, self._stop, self._done))
                    for _ in range(self.procs)]
        for p in self._ps:
            p.start()
        self.policy = sorted({self._ready.get(timeout=120) for _ in self._ps})
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        images = sum(self._done.get(timeout=60) for _ in self._ps)
        seconds = time.perf_counter() - self._t0
        for p in self._ps:
            p.join(10)
        self.result = {"images": images, "seconds": seconds, "img_s": images / seconds, "policy": self.policy,
                       "procs": self.procs, "threads": self.threads}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.idle_burner", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("repository", type=Path)
    ap.add_argument("--seconds", type=float, default=20)
    a = ap.parse_args(argv)
    with IdleBurner(a.repository) as b:
        time.sleep(a.seconds)
    print(b.result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
