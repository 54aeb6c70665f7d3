"""The settings of one side's inspection, read from a Triton model's ``parameters``: one
parser for the CPU layout's whole-side model and the split layout's pre/post-processing."""

from __future__ import annotations

from dataclasses import dataclass, field

from pcb.image_decode import MAX_PIXELS
from pcb.postprocess import PostprocessConfig

DETECTOR_STRIDE = 32  # the largest stride of the YOLO heads: rect inputs are multiples of it
# where the split layout's pcb_preprocess decodes and letterboxes (serving/gpu_preprocess.py):
# cpu: OpenCV per request (the default; no torch); gpu: nvJPEG + torch on the instance's GPU
# (KIND_GPU, set by serving/gpu_repository.py); torch-cpu: the gpu path's code on the CPU, so
# the CPU tests run its Triton adapter (slower than cpu: never for production)
DECODERS = ("cpu", "gpu", "torch-cpu")


@dataclass(frozen=True)
class SideConfig:
    imgsz: int = 320
    rect: bool = True  # rect letterbox (pcb/letterbox.py); False: square
    max_pixels: int = MAX_PIXELS
    post: PostprocessConfig = field(default_factory=PostprocessConfig)
    intra_op_threads: int = 1
    decode: str = "cpu"  # DECODERS

    def __post_init__(self) -> None:
        if self.decode not in DECODERS:
            raise ValueError(f"decode must be one of {', '.join(DECODERS)}, not {self.decode!r}")

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
            decode=params.get("decode", d.decode),
        )
