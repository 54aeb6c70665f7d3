"""Verdicts: per side (most severe category wins) and per board (most severe side wins).

Codes are taxonomy verdict codes (0 normal ... 4 discard), so fusion is a ``max``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pcb import taxonomy


@dataclass(frozen=True)
class SideVerdict:
    code: int
    confidence: float


@dataclass(frozen=True)
class BoardVerdict:
    code: int
    confidence: float
    gpio_pin: int
    gpio_duration_ms: int
    decided_by: str  # "left", "right" or "both"


def side_verdict(classes: np.ndarray, scores: np.ndarray, tax: taxonomy.Taxonomy | None = None) -> SideVerdict:
    """Seed rule: no detection -> normal (confidence 1.0); else the most severe verdict among
    the detected classes, confidence = the highest detection score (of any class)."""
    tax = tax or taxonomy.load()
    if len(classes) == 0:
        return SideVerdict(tax.no_detection.code, tax.no_detection_confidence)
    codes = np.asarray(tax.class_verdict_codes())[np.asarray(classes, dtype=np.int64)]
    return SideVerdict(int(codes.max()), float(np.max(scores)))


def fuse(left: SideVerdict | None, right: SideVerdict | None,
         tax: taxonomy.Taxonomy | None = None) -> BoardVerdict:
    """Board verdict = the more severe side. Confidence comes from the side(s) that decided
    it. One side ``None`` is the partial case (that side never arrived)."""
    tax = tax or taxonomy.load()
    if left is None and right is None:
        raise ValueError("fuse needs at least one side")
    if left is None:
        assert right is not None  # both None was refused above
        code, conf, by = right.code, right.confidence, "right"
    elif right is None or left.code > right.code:
        code, conf, by = left.code, left.confidence, "left"
    elif right.code > left.code:
        code, conf, by = right.code, right.confidence, "right"
    else:
        code, conf, by = left.code, max(left.confidence, right.confidence), "both"
    gpio = tax.verdict(code).gpio
    return BoardVerdict(code, conf, gpio.pin, gpio.duration_ms, by)
