"""What a worker does with one item's bytes, per job kind, through the inference contract's
sync transport (``inference.sync``).

``run(payloads)`` sends all payloads of a sub-batch at once (one request per image, all in
flight together) so Triton's dynamic batcher executes them as one batch, and returns one
outcome per payload: a result dict, a permanent :class:`ItemError` (this item is bad), or it
raises :class:`Transient` (Triton is down or full: retry the chunk later).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from inference import ENHANCE_MODEL, SINGLE_MODEL, InferenceError
from inference.contract import BATCH_LANE_MODEL, SPLIT_FIRST_STEP
from inference.results import EnhanceResult, SideResult
from inference.sync import SyncTriton
from pcb import taxonomy


class ItemError(Exception):
    """This item cannot be processed (unreadable, not an image): a failed item, no retry."""


class Transient(Exception):
    """The service behind the worker failed (Triton down, queue full, database down)."""


def outcome_of_error(e: InferenceError) -> ItemError:
    """A refused input fails its item; anything retryable fails the whole chunk, for later."""
    if e.retryable:
        raise Transient(f"triton: {e.message[:300]}")
    return ItemError(f"{e.code}: {e.message[:300]}")


def _answers(call, *args) -> list:
    """One answer per payload; no answer at all (Triton silent past the deadline, the channel
    gone) is a transient failure of the whole sub-batch, retried like a full queue."""
    try:
        return call(*args)
    except InferenceError as e:
        raise Transient(f"triton: {e.message[:300]}") from None


# how long a worker trusts its last look at whether the batch lane is loaded: long when it is
# (one gRPC call per 30 s), short when it is not (at Triton's start pcb_inspect is ready a few
# seconds before the lane)
LANE_RECHECK_S = {True: 30.0, False: 3.0}
# Triton URL -> (when looked, lane ready, split layout)
_lane_seen: dict[str, tuple[float, bool, bool]] = {}


def _look(triton: SyncTriton) -> tuple[float, bool, bool]:
    now = time.monotonic()
    seen = _lane_seen.get(triton.url)
    if seen is None or now - seen[0] > LANE_RECHECK_S[seen[1]]:
        lane = triton.model_ready(BATCH_LANE_MODEL)
        seen = _lane_seen[triton.url] = (now, lane, not lane and triton.model_ready(SPLIT_FIRST_STEP))
    return seen


def inspect_model(triton: SyncTriton) -> str:
    """The batch lane (serving/batch_lane.py: the served detector on CPU the line leaves) when
    Triton has it loaded, else ``pcb_inspect``, at the batch priority level. Looked up at most
    every ``LANE_RECHECK_S`` per Triton."""
    return BATCH_LANE_MODEL if _look(triton)[1] else SINGLE_MODEL


def one_at_a_time(triton: SyncTriton) -> bool:
    """Whether batch images must go to ``pcb_inspect`` one at a time: the CPU layout while its
    lane is not loaded (Triton's start, a lane that could not follow a promotion). There the
    line's detector has no priority levels (they would switch off Triton's prefetching), so
    a sub-batch sent at once would queue ahead of the sorter's boards; one image at a time
    keeps batch work on at most one of the detector's two instances. The split (GPU) layout
    orders the two by priority at its first step and takes the sub-batch whole."""
    _, lane, split = _look(triton)
    return not lane and not split


class InspectProcessor:
    """Re-inspection of archived board images through the batch lane or ``pcb_inspect``."""

    kind = "inspect"

    def __init__(self, triton: SyncTriton):
        self.triton = triton
        self.tax = taxonomy.load()
        self.model = inspect_model(triton)
        self.serial = self.model == SINGLE_MODEL and one_at_a_time(triton)

    def _inspect(self, payloads: Sequence[bytes]) -> list:
        if not self.serial:
            return _answers(self.triton.inspect_many, payloads, self.model)
        return [a for p in payloads for a in _answers(self.triton.inspect_many, [p], self.model)]

    def run(self, payloads: Sequence[bytes], names: Sequence[str], job_dir: Path) -> list:
        try:
            return [self._outcome(a) for a in self._inspect(payloads)]
        except Transient:
            _lane_seen.pop(self.triton.url, None)  # the lane may have gone: the retry looks again
            raise

    def _outcome(self, a: SideResult | InferenceError):
        if isinstance(a, InferenceError):
            return outcome_of_error(a)
        verdict = self.tax.verdict(a.verdict_code)
        defects = [{"class": d.class_name, "score": round(d.confidence, 4),
                    "box": [round(v, 1) for v in (d.x1, d.y1, d.x2, d.y2)]} for d in a.detections]
        return {"verdict": verdict.name, "verdict_code": a.verdict_code, "verdict_label": verdict.label,
                "confidence": round(a.confidence, 4), "detector_version": a.detector_version, "defects": defects}


class EnhanceProcessor:
    """Face-photo enhancement through the ``face_enhance`` pipeline; the output image is
    written beside the job's files and the result points at it."""

    kind = "enhance"
    model = ENHANCE_MODEL

    def __init__(self, triton: SyncTriton, options: dict | None = None):
        self.triton = triton
        self.options = options or {}

    def run(self, payloads: Sequence[bytes], names: Sequence[str], job_dir: Path) -> list:
        out: list[dict | ItemError] = []
        for name, a in zip(names, _answers(self.triton.enhance_many, payloads, self.options)):
            if isinstance(a, InferenceError):
                out.append(outcome_of_error(a))
                continue
            out.append(self._written(a, job_dir / "out" / name))
        return out

    @staticmethod
    def _written(a: EnhanceResult, target: Path) -> dict:
        # same relative name under out/ (the pipeline keeps the format: PNG stays PNG)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(a.image)
        return {"output": str(target), "faces": a.faces, "no_face": bool(a.info.get("no_face", False))}


def make_processor(kind: str, triton: SyncTriton, options: dict | None = None):
    if kind == "inspect":
        return InspectProcessor(triton)
    if kind == "enhance":
        return EnhanceProcessor(triton, options)
    raise ValueError(f"unknown job kind {kind!r}")
