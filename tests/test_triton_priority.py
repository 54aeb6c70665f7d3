"""The line first inside Triton: with a backlog of batch re-inspection queued in front of it,
a board sent at the line's priority overtakes it. The batchers of pcb_preprocess,
pcb_detector and pcb_postprocess have two levels (inference/contract.py); measured here,
Triton honours the request's priority at the ensemble's first step only (server issue #6055:
it is not passed on after a python-backend step), so the board overtakes the backlog there
and queues with it behind (about half the backlog's wait, where FIFO would be all of it)."""

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
    # FIFO would answer it with the backlog (ratio ~1). Triton passes the priority to the
    # ensemble's first step only (server issue #6055: not past a python-backend step), so the
    # board overtakes the backlog in pcb_preprocess and queues with it after: about half.
    assert line_s < 0.75 * remaining, (line_s, remaining)
