"""The congestion controller (``batch.congestion.AIMD``), the queue signal's arithmetic and
the in-flight gate, without servers: sequences replayed against a simulated compute-bound
Triton (``slots`` instances, ``service_s`` per batch), so every run decides the same."""

from __future__ import annotations

import heapq
import random
import threading
import time

import pytest

from batch.congestion import AIMD, Sample
from batch.inflight import InFlight
from batch.triton_signal import queue_per_request
from inference.results import ModelTiming, timings


class Server:
    """A simulated Triton, pipelined as the worker drives it (``batch.inflight``): a new batch
    goes in as soon as one comes out while fewer than the limit are in flight. With L in
    flight it answers ``rate(L)`` images/s in all, so each batch of ``items`` takes
    L x items / rate(L) s (+-10 % jitter, seeded); the time beyond one batch alone is queue.
    ``busy_s`` adds a wait to every batch (the line's boards going first)."""

    def __init__(self, rate, items: int = 8, seed: int = 0):
        self.rate, self.items, self.t, self.busy_s = rate, items, 0.0, 0.0
        self.flying: list[tuple[float, float, int, float]] = []
        self.done = 0
        self._rng = random.Random(seed)

    @classmethod
    def slots(cls, slots: int = 2, service_s: float = 0.1) -> Server:
        """One batch per instance: ``slots`` batches at once, ``service_s`` each."""
        return cls(lambda limit: min(limit, slots) * 8 / service_s)

    def latency(self, limit: int) -> float:
        return limit * self.items / self.rate(limit) + self.busy_s

    def step(self, ctrl: AIMD, queue: bool = True) -> None:
        """Fill up to the limit, then the next answer."""
        while len(self.flying) < ctrl.limit:
            lat = self.latency(ctrl.limit) * self._rng.uniform(0.9, 1.1)
            heapq.heappush(self.flying, (self.t + lat, self.t, ctrl.epoch, lat))
        end, start, epoch, lat = heapq.heappop(self.flying)
        self.t = end
        self.done += self.items
        q = max(0.0, lat - self.items / self.rate(1)) if queue else None
        ctrl.observe(Sample(start, end, self.items, q), epoch)

    def best_rate(self) -> float:
        return max(self.rate(n) for n in range(1, 9))


def limits_over(ctrl: AIMD, server: Server, answers: int, **kw) -> list[int]:
    """The limit after each of ``answers`` answers."""
    seen = []
    for _ in range(answers):
        server.step(ctrl, **kw)
        seen.append(ctrl.limit)
    return seen


def test_bounds_and_seed():
    assert AIMD(seed=3, lo=1, hi=6).limit == 3  # the tuner's pick
    assert AIMD(seed=9, lo=1, hi=4).limit == 4 and AIMD(seed=0, lo=2, hi=4).limit == 2
    with pytest.raises(ValueError):
        AIMD(seed=1, lo=3, hi=2)
    with pytest.raises(ValueError):
        AIMD(seed=1, lo=0, hi=2)


def steady(ctrl: AIMD, server: Server, answers: int, **kw) -> tuple[list[int], float]:
    """(the limit after each answer, images/s over them)."""
    t0, done0 = server.t, server.done
    seen = limits_over(ctrl, server, answers, **kw)
    return seen, (server.done - done0) / (server.t - t0)


def test_climbs_while_throughput_rises_and_settles_at_the_servers_parallelism():
    ctrl, server = AIMD(seed=1, hi=8), Server.slots(2)
    assert max(limits_over(ctrl, server, 20)) >= 2  # climbed from the seed
    seen, rate = steady(ctrl, server, 400)
    # at the server's parallelism, but for short probes one either side
    assert sum(n == 2 for n in seen) / len(seen) >= 0.8 and max(seen) <= 3, sorted(set(seen))
    assert rate >= 0.95 * server.best_rate()
    reasons = {s.reason for s in ctrl.trace}
    assert {"increase", "retreat", "probe", "probe_down", "restore"} <= reasons
    # more in flight than instances only queues: that is "bought nothing", not congestion
    assert not reasons & {"latency", "queue"}


@pytest.mark.parametrize("queue", [True, False])
def test_one_chunk_filling_triton_is_not_congestion(queue):
    """The measured case (issue 19): one chunk of 8 already fills both CPU detector instances;
    a second in flight doubles each image's latency for ~10 % more images/s, a third buys
    nothing. The controller must sit at 2, not fall back to 1."""
    ctrl, server = AIMD(seed=1, hi=6), Server(lambda limit: 80.0 if limit == 1 else 88.0)
    limits_over(ctrl, server, 40, queue=queue)
    seen, rate = steady(ctrl, server, 400, queue=queue)
    assert sum(n >= 2 for n in seen) / len(seen) >= 0.9 and sum(seen) / len(seen) <= 2.5, sorted(set(seen))
    assert rate >= 0.97 * server.best_rate()
    assert not {s.reason for s in ctrl.trace} & {"latency", "queue"}


def test_a_noisy_win_does_not_ratchet_the_limit_up_for_good():
    """Throughput flat from 2 chunks on: a probe that wins by noise may climb, but the
    downward probes bring the limit back; the line gets the room."""
    ctrl, server = AIMD(seed=1, hi=6), Server.slots(2)
    server._rng.seed(7)
    seen, _ = steady(ctrl, server, 2000)
    assert sum(seen[-500:]) / 500 <= 2.6, sorted(set(seen[-500:]))


@pytest.mark.parametrize("queue", [True, False])
def test_the_line_getting_busy_decreases_then_it_climbs_back(queue):
    ctrl, server = AIMD(seed=1, hi=8), Server.slots(2)
    before = limits_over(ctrl, server, 60, queue=queue)
    server.busy_s = 0.3  # the line's boards go first: every batch waits behind them
    busy = limits_over(ctrl, server, 40, queue=queue)
    server.busy_s = 0.0
    after = limits_over(ctrl, server, 300, queue=queue)
    assert sum(before[30:]) / len(before[30:]) >= 1.8
    assert {s.reason for s in ctrl.trace} & ({"latency", "queue"} if queue else {"latency"})
    assert min(busy) == 1  # backed off while the line needed Triton
    assert sum(after[-100:]) / 100 >= 1.8  # and came back once it no longer did


def test_multiplicative_decrease_when_latency_grows_beyond_the_baseline():
    ctrl = AIMD(seed=6, hi=6)
    t = 0.0
    for lat in [0.1] * 12 + [0.25] * 12:  # the line got busy: each batch now takes 2.5x as long
        ctrl.observe(Sample(t, t + lat, 8, None), ctrl.epoch)
        t += lat / 6
    assert ctrl.limit == 4  # 6 x 0.7
    assert [s.reason for s in ctrl.trace][-1] == "latency"


def test_queue_growth_decreases_even_while_latency_holds():
    ctrl = AIMD(seed=4, hi=4, queue_floor_s=0.005)
    t = 0.0
    for q in [0.001] * 8 + [0.040] * 8:  # 1 ms of queue per request at the top limit, then 40 ms
        ctrl.observe(Sample(t, t + 0.1, 8, q), ctrl.epoch)
        t += 0.025
    assert [s.limit for s in ctrl.trace] == [4, 4, 2]  # 4 x 0.7, rounded down
    assert ctrl.trace[-1].reason == "queue"


class Paced:
    """Epochs fed by hand: ``run(images_per_s)`` answers one epoch's batches of 8, evenly
    spaced, so the controller measures exactly that rate."""

    def __init__(self, ctrl: AIMD):
        self.ctrl, self.t = ctrl, 0.0

    def run(self, rate: float) -> str:
        e, n, dt = self.ctrl.epoch, self.ctrl.epoch_size, 8 / rate
        for _ in range(n):
            self.t += dt
            self.ctrl.observe(Sample(self.t - dt, self.t, 8, None), e)
        return self.ctrl.trace[-1].reason


def test_retreats_from_a_limit_that_bought_nothing_then_probes_again():
    ctrl = AIMD(seed=1, hi=6, probe_epochs=3)
    p = Paced(ctrl)
    assert p.run(100) == "increase" and ctrl.limit == 2  # the first epoch has nothing to beat
    assert p.run(102) == "retreat" and ctrl.limit == 1  # +2 %: one more bought nothing
    # that probe came back: the next waits twice as long (6 epochs)
    assert [p.run(100) for _ in range(5)] == ["hold"] * 5 and ctrl.limit == 1
    assert p.run(100) == "probe" and ctrl.limit == 2
    assert p.run(130) == "increase" and ctrl.limit == 3  # now it pays (the line went quiet)


def test_probes_alternate_up_and_down_against_the_mean_of_the_epochs_left():
    ctrl = AIMD(seed=2, hi=6, probe_epochs=1)
    p = Paced(ctrl)
    assert [p.run(480) for _ in range(4)] == ["increase", "retreat", "hold", "probe"]
    assert ctrl.limit == 3
    assert p.run(470) == "retreat" and ctrl.limit == 2
    assert [p.run(480) for _ in range(4)] == ["hold", "hold", "hold", "probe_down"] and ctrl.limit == 1
    assert p.run(300) == "restore" and ctrl.limit == 2  # one fewer lost throughput: back up
    # ... and a probe down that loses nothing keeps the lower limit (the line gets the room)
    while p.run(480) != "probe_down":
        pass
    assert p.run(478) == "trim" and ctrl.limit in (1, 2)


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
