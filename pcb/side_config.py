"""The settings of one side's inspection, read from a Triton model's ``parameters``: one
parser for the CPU layout's whole-side model and the split layout's pre/post-processing."""

from __future__ import annotations

from dataclasses import dataclass, field

from pcb.image_decode import MAX_PIXELS
from pcb.postprocess import PostprocessConfig

DETECTOR_STRIDE = 32  # the largest stride of the YOLO heads: rect inputs are multiples of it


@dataclass(frozen=True)
class SideConfig:
    imgsz: int = 320
    rect: bool = True  # rect letterbox (pcb/letterbox.py); False: square
    max_pixels: int = MAX_PIXELS
    post: PostprocessConfig = field(default_factory=PostprocessConfig)
    intra_op_threads: int = 1

    @classmethod
    def from_strings(cls, params: dict[str, str]) -> SideConfig:
        """From Triton ``parameters`` (all strings)."""
        d = cls()
        return cls(
            imgsz=int(params.get("imgsz", d.imgsz)),
            rect=params.get("letterbox", "rect" if d.rect else "square") == "rect",
            max_pixels=int(params.get("max_pixels", d.max_pixels)),
            post=PostprocessConfig.from_strings(params),
            intra_op_threads=int(params.get("intra_op_threads", d.intra_op_threads)),
        )
