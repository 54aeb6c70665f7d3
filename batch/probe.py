"""The auto-tuner's measuring stick: a probe job run through the worker's own code
(``Runtime.run_chunk``: claim, read the files, one Triton batch, one transaction of results)
at a given (batch size, concurrency: the in-flight chunks, pinned), without the broker, and
deleted afterwards. Its state
is "probe", so the scheduler never hands it to real workers."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

from batch.congestion import AIMD
from batch.runner import READ_AHEAD, Runtime


class EngineProbe:
    def __init__(self, runtime: Runtime, files: Sequence[tuple[str, str]]):
        self.rt = runtime
        self.rt.refill = lambda: 0  # type: ignore[method-assign]  # a probe must not feed the broker real jobs' chunks
        self.files = list(files)

    def __call__(self, batch_size: int, concurrency: int, items: int) -> float:
        store = self.rt.store
        rows = [self.files[i % len(self.files)] for i in range(items)]
        job = store.create_job(rows, priority=0, chunk_size=batch_size, name="tuning probe", state="probe")
        self.rt.memory.set_target(batch_size)
        # the point is measured as given: the controller pinned to it (lo = hi)
        self.rt.inflight.use(AIMD(seed=concurrency, lo=concurrency, hi=concurrency))
        chunks = list(range((items + batch_size - 1) // batch_size))
        lock = threading.Lock()

        def work() -> None:
            while True:
                with lock:
                    if not chunks:
                        return
                    seq = chunks.pop(0)
                self.rt.run_chunk(job, seq)

        # one thread more than the slots in Triton: the chunk read ahead, as in a worker
        threads = [threading.Thread(target=work) for _ in range(concurrency + READ_AHEAD)]
        t0 = time.perf_counter()
        try:
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            return items / (time.perf_counter() - t0)
        finally:
            store.delete_job(job)
