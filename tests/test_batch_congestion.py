"""The congestion controller (``batch.congestion.AIMD``), the queue signal's arithmetic and
the in-flight gate, without servers: sequences replayed against a simulated compute-bound
Triton (``slots`` instances, ``service_s`` per batch), so every run decides the same."""

from __future__ import annotations

import threading
import time

import pytest

from batch.congestion import AIMD, Sample
from batch.inflight import InFlight
from batch.triton_signal import queue_per_request
from inference.results import ModelTiming, timings


class Server:
    """L batches in flight on ``slots`` instances: each answers after service_s x max(1, L/slots);
    the time beyond the service is queue."""

    def __init__(self, slots: int = 2, service_s: float = 0.1):
        self.slots, self.service_s, self.t = slots, service_s, 0.0

    def latency(self, limit: int) -> float:
        return self.service_s * max(1.0, limit / self.slots)

    def round(self, ctrl: AIMD, items: int = 8, queue: bool = True) -> None:
        """One round of ``ctrl.limit`` batches sent together."""
        limit, epoch, lat = ctrl.limit, ctrl.epoch, self.latency(ctrl.limit)
        for _ in range(limit):
            ctrl.observe(Sample(self.t, self.t + lat, items, (lat - self.service_s) if queue else None), epoch)
        self.t += lat

    def best_rate(self, items: int = 8) -> float:
        return self.slots * items / self.service_s


def limits_over(ctrl: AIMD, server: Server, rounds: int, **kw) -> list[int]:
    seen = []
    for _ in range(rounds):
        server.round(ctrl, **kw)
        seen.append(ctrl.limit)
    return seen


def test_bounds_and_seed():
    assert AIMD(seed=3, lo=1, hi=6).limit == 3  # the tuner's pick
    assert AIMD(seed=9, lo=1, hi=4).limit == 4 and AIMD(seed=0, lo=2, hi=4).limit == 2
    with pytest.raises(ValueError):
        AIMD(seed=1, lo=3, hi=2)
    with pytest.raises(ValueError):
        AIMD(seed=1, lo=0, hi=2)


def test_climbs_while_throughput_rises_and_settles_at_the_servers_parallelism():
    ctrl, server = AIMD(seed=1, hi=8), Server(slots=2)
    seen = limits_over(ctrl, server, 200)
    assert seen[:12].count(1) < 12 and max(seen[:12]) >= 2  # climbed from the seed
    steady = seen[40:]
    assert min(steady) >= 2 and max(steady) <= 4, sorted(set(steady))  # never idles Triton, never floods it
    assert max(seen) < 8  # the ceiling is never needed here
    # every decision's throughput at the steady state is the server's best
    rates = [s.items_per_s for s in ctrl.trace[10:] if s.reason != "start"]
    assert min(rates) >= 0.95 * server.best_rate()
    reasons = {s.reason for s in ctrl.trace}
    assert {"increase", "queue"} <= reasons


def test_latency_alone_steers_when_triton_gives_no_queue_time():
    ctrl, server = AIMD(seed=1, hi=8), Server(slots=2)
    steady = limits_over(ctrl, server, 200, queue=False)[40:]
    assert min(steady) >= 2 and max(steady) <= 4
    assert "latency" in {s.reason for s in ctrl.trace} and "queue" not in {s.reason for s in ctrl.trace}


def test_multiplicative_decrease_when_latency_grows_beyond_the_baseline():
    ctrl = AIMD(seed=6, hi=6)
    t = 0.0
    for lat in [0.1] * 12 + [0.25] * 12:  # the line got busy: each batch now takes 2.5x as long
        ctrl.observe(Sample(t, t + lat, 8, None), ctrl.epoch)
        t += lat / 6
    assert ctrl.limit == 4  # 6 x 0.7
    assert [s.reason for s in ctrl.trace][-1] == "latency"


def test_queue_growth_decreases_even_while_latency_holds():
    ctrl = AIMD(seed=4, hi=6, queue_floor_s=0.005)
    t = 0.0
    for q in [0.001] * 8 + [0.040] * 10:  # 1 ms of queue per request (4 -> 5), then 40 ms
        ctrl.observe(Sample(t, t + 0.1, 8, q), ctrl.epoch)
        t += 0.025
    assert [s.limit for s in ctrl.trace] == [4, 5, 3]  # 5 x 0.7
    assert ctrl.trace[-1].reason == "queue"


def test_holds_on_a_plateau_then_probes_again():
    ctrl = AIMD(seed=1, hi=6, probe_epochs=3)
    t = 0.0

    def epoch(rate_items: int) -> None:  # same latency; throughput set by items per batch
        nonlocal t
        e = ctrl.epoch
        for _ in range(ctrl.epoch_size):
            ctrl.observe(Sample(t, t + 0.1, rate_items, None), e)
        t += 0.1

    epoch(8)
    assert ctrl.limit == 2  # first epoch: increase
    epoch(8)  # same throughput at 2 as at 1: hold
    assert ctrl.limit == 2 and ctrl.trace[-1].reason == "hold"
    epoch(8)
    epoch(8)  # the third epoch in a row without gain probes one more
    assert ctrl.limit == 3 and ctrl.trace[-1].reason == "probe"


def test_batches_sent_under_an_older_limit_are_ignored():
    ctrl = AIMD(seed=1, hi=4, min_samples=2)
    for i in range(2):
        ctrl.observe(Sample(i, i + 0.1, 8), 0)
    assert ctrl.limit == 2 and ctrl.epoch == 1
    before = list(ctrl.trace)
    for i in range(10):  # late answers of batches sent at limit 1
        ctrl.observe(Sample(i, i + 5.0, 8), 0)
    assert ctrl.trace == before and ctrl.limit == 2
    ctrl.observe(Sample(0, 0, 8), 1)  # no duration: no sample
    ctrl.observe(Sample(0, 1, 0), 1)  # no items: no sample
    assert ctrl.trace == before


def test_queue_per_request_from_two_statistics_readings():
    before = {"pcb_detector": ModelTiming(100, 1_000_000_000, 0), "pcb_preprocess": ModelTiming(100, 0, 0)}
    after = {"pcb_detector": ModelTiming(150, 3_000_000_000, 0), "pcb_preprocess": ModelTiming(150, 500_000_000, 0),
             "pcb_postprocess": ModelTiming(50, 0, 0)}
    # 2 s over 50 requests at the detector + 0.5 s over 50 at pre-processing; post-processing
    # has no earlier reading, an unknown model none at all
    q = queue_per_request(before, after, ("pcb_preprocess", "pcb_detector", "pcb_postprocess", "x"))
    assert q == pytest.approx(0.04 + 0.01)
    assert queue_per_request(before, before, ("pcb_detector",)) is None  # nothing served meanwhile
    reloaded = {"pcb_detector": ModelTiming(120, 10, 0)}  # counters went back: left out
    assert queue_per_request(before, reloaded, ("pcb_detector",)) is None


def test_timings_parse_both_protocols_shapes():
    grpc = {"model_stats": [{"name": "pcb_detector", "version": "1", "inference_stats": {
        "queue": {"count": "10", "ns": "500"}, "compute_infer": {"count": "10", "ns": "700"}}},
        {"name": "pcb_detector", "version": "2", "inference_stats": {"queue": {"count": "5", "ns": "100"}}},
        {"name": "idle", "version": "1", "inference_stats": {}}]}
    t = timings(grpc)
    assert t["pcb_detector"] == ModelTiming(15, 600, 700) and t["idle"] == ModelTiming()


def test_the_gate_reads_one_chunk_ahead_and_frees_a_slot_when_triton_answers():
    ctrl = AIMD(seed=2, lo=2, hi=2)
    gate = InFlight(ctrl, read_ahead=1)
    peak = {"staged": 0, "flying": 0}
    release = threading.Event()

    def chunk() -> None:
        with gate.staged():
            peak["staged"] = max(peak["staged"], gate.staged_now)
            with gate.flight():
                peak["flying"] = max(peak["flying"], gate.flying_now)
                release.wait(5)

    threads = [threading.Thread(target=chunk) for _ in range(6)]
    for th in threads:
        th.start()
    deadline = time.monotonic() + 5
    while (gate.flying_now, gate.staged_now) != (2, 3) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert (gate.flying_now, gate.staged_now) == (2, 3)  # two in Triton, one read ahead, three wait
    release.set()
    for th in threads:
        th.join(5)
    assert peak == {"staged": 3, "flying": 2} and gate.staged_now == gate.flying_now == 0
