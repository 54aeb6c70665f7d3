"""The line first inside Triton: with a backlog of batch re-inspection queued in front of it,
a board sent at the line's priority overtakes it. The line's models have two priority levels
(inference/contract.py). Triton honours a request's priority at an ensemble's first step
only (server issue #6055); in the CPU layout that step is the whole side, executed one
image at a time, so the board overtakes the whole backlog and waits at most for the images
already executing. Measured here: 42 ms where the backlog drained 2.0 s after the board
arrived (FIFO would answer it last)."""

from __future__ import annotations

import threading
import time

from inference import contract
from inference.sync import SyncTriton
from pcb.synthetic import render_board
from tests.conftest import encode


def test_a_line_board_overtakes_a_batch_backlog(triton):
    images = [encode(render_board(900 + i).image) for i in range(8)]
    background = SyncTriton(triton.grpc_url, timeout_s=120)
    line = SyncTriton(triton.grpc_url, timeout_s=120)
    line.inspect(images[0])  # warm
    backlog = 96
    done: dict[str, float] = {}

    def flood() -> None:
        t0 = time.perf_counter()
        answers = background.inspect_many([images[i % len(images)] for i in range(backlog)])
        done["backlog_s"] = time.perf_counter() - t0
        done["errors"] = sum(isinstance(a, Exception) for a in answers)

    t = threading.Thread(target=flood)
    start = time.perf_counter()
    t.start()
    time.sleep(0.3)  # the backlog is queued in Triton by now
    t1 = time.perf_counter()
    r = line.inspect(images[3], priority=contract.PRIORITY_LINE)
    line_s = time.perf_counter() - t1
    t.join()
    remaining = done["backlog_s"] - (t1 - start)  # what was still queued when the board came
    print(f"line board {line_s * 1000:.0f} ms; backlog of {backlog} drained {remaining * 1000:.0f} ms "
          f"after it arrived")
    assert r.detector_version >= 1 and done["errors"] == 0
    # FIFO would answer it with the backlog (ratio ~1); the board waits only for the running
    # batches and its own
    assert line_s < 0.25 * remaining, (line_s, remaining)
