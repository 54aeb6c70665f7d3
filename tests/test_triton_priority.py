"""The line first inside Triton: with a backlog of batch re-inspection queued, a board does
not wait behind it. On a CPU the batch engine sends its images to the batch lane
(serving/batch_lane.py: instances of its own under SCHED_IDLE), so the backlog never sits in
the line's queue and the kernel hands the board's instance a core the moment it wants one.
The line's detector has no priority levels: they would switch off Triton's prefetching
(export/detector_config.py, tests/test_triton_batcher.py). Measured before the change, with
levels and the backlog in the line's own queue: 42 ms where the backlog drained 2.0 s after
the board arrived (FIFO would answer it last)."""

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
        answers = background.inspect_many([images[i % len(images)] for i in range(backlog)],
                                          model=contract.BATCH_LANE_MODEL)
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
    # in one FIFO queue with the backlog it would be answered with it (ratio ~1); the lane's
    # images only slow it by the cycles the kernel lets SCHED_IDLE keep
    assert line_s < 0.25 * remaining, (line_s, remaining)
