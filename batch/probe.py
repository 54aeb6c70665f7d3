"""The auto-tuner's measuring stick: a probe job run through the worker's own code
(``Runtime.run_chunk``: claim, read the files, one Triton batch, one transaction of results)
at a given (batch size, concurrency), without the broker, and deleted afterwards. Its state
is "probe", so the scheduler never hands it to real workers."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

from batch.runner import Runtime


class EngineProbe:
    def __init__(self, runtime: Runtime, files: Sequence[tuple[str, str]]):
        self.rt = runtime
        self.rt.refill = lambda: 0  # type: ignore[method-assign]  # a probe must not feed the broker real jobs' chunks
        self.files = list(files)

    def __call__(self, batch_size: int, concurrency: int, items: int) -> float:
        store = self.rt.store
        rows = [self.files[i % len(self.files)] for i in range(items)]
        job = store.create_job(rows, priority=0, chunk_size=batch_size, name="tuning probe", state="probe")
        self.rt.monitor.set_target(batch_size, concurrency)
        chunks = list(range((items + batch_size - 1) // batch_size))
        lock = threading.Lock()

        def work() -> None:
            while True:
                with lock:
                    if not chunks:
                        return
                    seq = chunks.pop(0)
                self.rt.run_chunk(job, seq)

        threads = [threading.Thread(target=work) for _ in range(concurrency)]
        t0 = time.perf_counter()
        try:
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            return items / (time.perf_counter() - t0)
        finally:
            store.delete_job(job)
