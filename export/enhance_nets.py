"""The two enhancement networks as exportable specs: GFPGAN v1.4 (face restorer) and
RealESRGAN x2plus (background upsampler). Builds the network from a user-supplied weights
file, or with a fixed random init (``--random-init``, tests and demo: no weights can be
downloaded here), and exports ONNX with a dynamic batch axis.

Where to get the weights (put them anywhere, e.g. ``models/enhance/``, and pass --weights):
- GFPGANv1.4.pth: https://github.com/TencentARC/GFPGAN/releases/download/v1.3.4/GFPGANv1.4.pth
- RealESRGAN_x2plus.pth: https://github.com/xinntao/Real-ESRGAN/releases/download/v0.2.1/RealESRGAN_x2plus.pth
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from export import gfpgan_arch, rrdbnet_arch

FACE_RESTORER = "face_restorer"  # model names in the repository: one place
BG_UPSAMPLER = "bg_upsampler"

WEIGHT_URLS = {
    "gfpgan": "https://github.com/TencentARC/GFPGAN/releases/download/v1.3.4/GFPGANv1.4.pth",
    "realesrgan": "https://github.com/xinntao/Real-ESRGAN/releases/download/v0.2.1/RealESRGAN_x2plus.pth",
}


@dataclass(frozen=True)
class NetSpec:
    kind: str  # gfpgan | realesrgan
    model_name: str
    channels_hw: tuple[int, int, int]  # -1: dynamic (tiles)
    sample_hw: int  # spatial size of the sample used for tracing and checks
    scale: int


SPECS = {
    "gfpgan": NetSpec("gfpgan", FACE_RESTORER, (3, 512, 512), 512, 1),
    "realesrgan": NetSpec("realesrgan", BG_UPSAMPLER, (3, -1, -1), 64, 2),
}


def build(kind: str, weights: Path | None = None, narrow: bool = False, seed: int = 0) -> torch.nn.Module:
    """The network in eval mode. ``weights=None`` means a fixed random init (``seed``)."""
    if kind == "gfpgan":
        face = gfpgan_arch.GFPGANConfig.narrow_test() if narrow else gfpgan_arch.GFPGANConfig()
        if weights is None:
            return gfpgan_arch.random_init(face, seed)
        _need(weights, kind)
        return gfpgan_arch.load_weights(weights, face)
    if kind == "realesrgan":
        bg = rrdbnet_arch.RRDBConfig.narrow_test() if narrow else rrdbnet_arch.RRDBConfig()
        if weights is None:
            return rrdbnet_arch.random_init(bg, seed)
        _need(weights, kind)
        return rrdbnet_arch.load_weights(weights, bg)
    raise ValueError(f"unknown network {kind!r}")


def _need(weights: Path, kind: str) -> None:
    if not Path(weights).is_file():
        raise SystemExit(f"{weights} not found. Download it from {WEIGHT_URLS[kind]} (no download happens "
                         f"here), or pass --random-init for a test network.")


def sample_input(spec: NetSpec, batch: int = 2, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    hw = spec.sample_hw
    x = torch.rand(batch, 3, hw, hw, generator=g)
    return x * 2 - 1 if spec.kind == "gfpgan" else x  # GFPGAN takes [-1, 1], RealESRGAN [0, 1]


def export_onnx(net: torch.nn.Module, spec: NetSpec, out: Path, opset: int = 17) -> Path:
    """Legacy (TorchScript) exporter: the export-friendly modulated conv makes the batch
    axis (and the tile size of the upsampler) dynamic."""
    axes = {0: "batch"} if spec.channels_hw[1] > 0 else {0: "batch", 2: "height", 3: "width"}
    out.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        torch.onnx.export(net, (sample_input(spec),), str(out), input_names=["input"], output_names=["output"],
                          dynamic_axes={"input": axes, "output": dict(axes)}, opset_version=opset,
                          dynamo=False)
    return out
