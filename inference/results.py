"""Typed answers of the models, parsed from a tritonclient ``InferResult`` (anything with
``as_numpy(name)``)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np

from pcb import taxonomy


@dataclass(frozen=True)
class Detection:
    x1: float
    y1: float
    x2: float
    y2: float
    confidence: float
    class_id: int
    class_name: str


@dataclass(frozen=True)
class SideResult:
    detections: list[Detection]
    verdict_code: int
    confidence: float
    detector_version: int
    # present when the served detector version carries the anomaly head (python -m export
    # anomaly): the side's score (1.0 = the calibrated threshold), its coarse map over the image
    anomaly_score: float | None = None
    anomaly_map: np.ndarray | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class DualResult:
    left: SideResult
    right: SideResult
    board_verdict_code: int
    board_confidence: float
    gpio_pin: int
    gpio_duration_ms: int
    detector_version: int
    inference_ms: float


@dataclass(frozen=True)
class EnhanceResult:
    image: bytes  # encoded like the source (JPEG stays JPEG, PNG stays PNG)
    faces: int
    info: dict

    @property
    def is_png(self) -> bool:
        return self.image[:8] == b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True)
class ModelTiming:
    """A model's cumulative counters (Triton's statistics, summed over its loaded versions):
    requests that went through its queue, their total queue time, and its compute time."""
    requests: int = 0
    queue_ns: int = 0
    compute_ns: int = 0


def timings(stats: dict) -> dict[str, ModelTiming]:
    """Triton's statistics answer (JSON of either protocol; gRPC spells 64-bit numbers as
    strings and leaves zeros out) -> one :class:`ModelTiming` per model name."""
    out: dict[str, ModelTiming] = {}
    for m in stats.get("model_stats", []):
        s = m.get("inference_stats", {})
        queue = s.get("queue", {})
        compute = sum(int(s.get(k, {}).get("ns", 0)) for k in ("compute_input", "compute_infer", "compute_output"))
        prev = out.get(m.get("name", ""), ModelTiming())
        out[m.get("name", "")] = ModelTiming(prev.requests + int(queue.get("count", 0)),
                                             prev.queue_ns + int(queue.get("ns", 0)), prev.compute_ns + compute)
    return out


def parsed(parse, r, *args):
    """``parse(r, *args)``; an answer that does not fit the contract (a class id outside this
    taxonomy, a missing tensor, broken JSON) is the service's fault, never a raw exception."""
    try:
        return parse(r, *args)
    except (IndexError, KeyError, ValueError, TypeError, AttributeError) as e:
        from inference.errors import Unavailable

        raise Unavailable(f"the model's answer does not fit the contract: {type(e).__name__}: {e}"[:300],
                          "inference_bad_answer") from None


def _scalar(r, name: str):
    return r.as_numpy(name).reshape(-1)[0]


def side(r, prefix: str = "", version: str = "DETECTOR_VERSION") -> SideResult:
    """One side from an ensemble's answer (``version``: the ensembles' name for it), or from
    the whole-side detector's own (``version="version"``: a shadow version called directly)."""
    tax = taxonomy.load()
    det = r.as_numpy(f"{prefix}DETECTIONS")[0]
    return SideResult(
        detections=[Detection(float(d[0]), float(d[1]), float(d[2]), float(d[3]), float(d[4]), int(d[5]),
                              tax.classes[int(d[5])].name) for d in det],
        verdict_code=int(_scalar(r, f"{prefix}VERDICT")),
        confidence=float(_scalar(r, f"{prefix}CONFIDENCE")),
        detector_version=int(_scalar(r, f"{prefix}{version}")),
        **_anomaly(r, prefix),
    )


def _anomaly(r, prefix: str) -> dict:
    score = r.as_numpy(f"{prefix}ANOMALY_SCORE")
    value = None if score is None else float(score.reshape(-1)[0])
    if value is None or not np.isfinite(value) or value < 0:
        # no head served (-1; or a frame size it does not apply to), a layout without it, or a
        # broken map (that side's verdict is review: pcb/review.py fails safe): no score to report
        return {}
    amap = r.as_numpy(f"{prefix}ANOMALY_MAP")
    return {"anomaly_score": value,
            "anomaly_map": None if amap is None else amap.reshape(amap.shape[-2:]).astype(np.float32)}


def dual(r, inference_ms: float) -> DualResult:
    left, right = side(r, "LEFT_"), side(r, "RIGHT_")
    return DualResult(left=left, right=right,
                      board_verdict_code=int(_scalar(r, "BOARD_VERDICT")),
                      board_confidence=float(_scalar(r, "BOARD_CONFIDENCE")),
                      gpio_pin=int(_scalar(r, "GPIO_PIN")),
                      gpio_duration_ms=int(_scalar(r, "GPIO_DURATION_MS")),
                      detector_version=left.detector_version, inference_ms=inference_ms)


def enhanced(r) -> EnhanceResult:
    return EnhanceResult(image=bytes(_scalar(r, "IMAGE_OUT")), faces=int(_scalar(r, "FACES")),
                         info=json.loads(bytes(_scalar(r, "INFO")) or b"{}"))
