"""Raw detector output for one image -> detections in image pixels + the side verdict."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pcb.letterbox import to_image
from pcb.nms import NmsConfig, nms
from pcb.verdict import SideVerdict, side_verdict


@dataclass(frozen=True)
class PostprocessConfig:
    nms: NmsConfig = NmsConfig()

    @classmethod
    def from_strings(cls, params: dict[str, str]) -> PostprocessConfig:
        """From Triton ``parameters`` (all strings)."""
        d = NmsConfig()
        return cls(NmsConfig(
            conf=float(params.get("conf_threshold", d.conf)),
            iou=float(params.get("iou_threshold", d.iou)),
            max_det=int(params.get("max_det", d.max_det)),
        ))


def postprocess(raw: np.ndarray, transform: np.ndarray,
                cfg: PostprocessConfig = PostprocessConfig()) -> tuple[np.ndarray, SideVerdict]:
    """``raw``: (4 + nc, N) detector output. Returns (K, 6) rows x1, y1, x2, y2, score,
    class in original-image pixels, and the verdict for this side."""
    det = nms(raw, cfg.nms)
    to_image(det[:, :4], transform)
    return det, side_verdict(det[:, 5].astype(np.int64), det[:, 4])
