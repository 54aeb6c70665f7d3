"""The anomaly model: PatchCore-style patch features from the demo detector's own backbone,
scored by the distance to the nearest patch of a memory bank fitted on good boards only.

Why this model:
- **Backbone.** Nothing can be downloaded here, so no ImageNet backbone (the one anomalib's
  PaDiM/PatchCore expect). The demo detector's YOLOv8n backbone was trained on PCB imagery
  here; its stride-8 (layer 4, 64 channels) and stride-16 (layer 6, 128 channels) feature
  maps describe copper, pads, solder and parts - the vocabulary a board is made of.
- **PatchCore, not PaDiM.** PaDiM fits one Gaussian per pixel position, which assumes the
  boards are aligned (same design, same place in the frame). Our boards (the generator's,
  and a line's camera before registration) are not, so a position-free memory bank of
  normal patches is the sound choice: a patch is normal when some good board had a patch
  like it.
- **A head on the detector, not a second network.** The backbone's features are computed
  by the detector anyway, so the anomaly model is only a head (``PatchHead``) grafted onto
  the detector's ONNX graph at those two layers (``attach_head``): one onnxruntime run per
  image gives the detections and the anomaly map, with no second decode, letterbox,
  backbone or Triton hop. A separate model measured 1.17x the time per board at c=1 but
  3.3x at c=8 on 2 cores (docs/benchmarks.md); the head costs a few milliseconds.
- **Cost.** Features go through a fixed random projection (192 -> ``dims``, Johnson-
  Lindenstrauss) and the bank is a greedy coreset of ``bank`` patches, so scoring a 320x256
  input is one (1280 x dims) x (dims x bank) matrix product (64 x 768 by default).

Scores are divided by the calibrated threshold inside the graph: 1.0 is the threshold, so
no client needs to know it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from torch import nn

LAYERS = (4, 6)  # YOLOv8 backbone: C2f outputs at stride 8 and 16
STRIDE = 8  # the map's cell, in letterboxed pixels
HEAD_INPUTS = ("anomaly_f4", "anomaly_f6")
HEAD_OUTPUTS = ("anomaly_score", "anomaly_map")


@dataclass(frozen=True)
class AnomalySpec:
    # picked on held-out good boards and the unseen kinds (make bench-anomaly's sets, in
    # PyTorch): 32x1024 AUROC 0.83 / recall 0.36 at the threshold, 64x768 0.86 / 0.51,
    # 64x2048 0.87 / 0.45 at 2.7x the head's matrix product
    dims: int = 64
    bank: int = 768
    seed: int = 0


class PatchHead(nn.Module):
    """Backbone features (layer 4 [N,64,H/8,W/8], layer 6 [N,128,H/16,W/16]) -> ``score``
    [N] (the map's maximum) and ``map`` [N,H/8,W/8]: each patch's distance to its nearest
    bank patch, divided by ``threshold``."""

    proj: torch.Tensor
    bank: torch.Tensor
    bank_sq: torch.Tensor
    threshold: torch.Tensor

    def __init__(self, channels: int, dims: int, seed: int, bank: torch.Tensor | None = None):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("proj", torch.randn(dims, channels, 1, 1, generator=g) / dims ** 0.5)
        self.register_buffer("bank", torch.zeros(1, dims))
        self.register_buffer("bank_sq", torch.zeros(1))
        self.register_buffer("threshold", torch.tensor(1.0))
        if bank is not None:
            self.set_bank(bank)

    def set_bank(self, bank: torch.Tensor) -> None:
        self.bank = bank.float().contiguous()
        self.bank_sq = (self.bank ** 2).sum(1)

    def features(self, f4: torch.Tensor, f6: torch.Tensor) -> torch.Tensor:
        """[N, dims, H/8, W/8]: 3x3 neighbourhood per patch (PatchCore's local aggregation),
        the deeper map upsampled, projected."""
        a = F.avg_pool2d(f4, 3, 1, 1)
        b = F.interpolate(F.avg_pool2d(f6, 3, 1, 1), size=a.shape[-2:], mode="bilinear", align_corners=False)
        return F.conv2d(torch.cat([a, b], 1), self.proj)

    def forward(self, f4: torch.Tensor, f6: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.features(f4, f6)
        n, d, h, w = f.shape
        p = f.permute(0, 2, 3, 1).reshape(n, h * w, d)
        # squared distance to every bank patch, the smallest one per patch
        d2 = (p * p).sum(-1, keepdim=True) - 2 * p @ self.bank.t() + self.bank_sq
        dist = torch.sqrt(torch.clamp(d2.min(-1).values, min=0.0)).reshape(n, 1, h, w)
        # a 3x3 mean over the map (anomalib smooths PatchCore's map too): one odd patch on a
        # good board scores less, a defect that spans cells keeps its score; recall at the
        # calibrated threshold 0.28 -> 0.36 on the unseen kinds, false alarms unchanged
        smooth = F.avg_pool2d(dist, 3, 1, 1, count_include_pad=False)
        amap = smooth.reshape(n, h, w) / self.threshold
        return amap.amax(dim=(1, 2)), amap


class Backbone(nn.Module):
    """The detector's layers 0..6, frozen: letterboxed RGB in [0,1] -> (layer 4, layer 6)."""

    def __init__(self, weights: Path):
        super().__init__()
        from ultralytics import YOLO

        det = cast(Any, YOLO(str(weights)).model).float().eval()
        self.layers = nn.Sequential(*list(det.model[: max(LAYERS) + 1]))
        for prm in self.layers.parameters():
            prm.requires_grad_(False)
        with torch.no_grad():
            f4, f6 = self(torch.zeros(1, 3, 64, 64))
        self.channels = f4.shape[1] + f6.shape[1]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = []
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i in LAYERS:
                out.append(x)
        return out[0], out[1]


class AnomalyNet(nn.Module):
    """Backbone + head: what the head grafted onto the detector computes, in PyTorch (the
    fit, the calibration and the parity check run this)."""

    def __init__(self, backbone: Backbone, head: PatchHead):
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.head(*self.backbone(x))


@torch.no_grad()
def patch_features(net: AnomalyNet, images: list[np.ndarray], batch: int = 8) -> torch.Tensor:
    """Every patch feature of ``images`` (letterboxed CHW float32 of one shape): [P, dims]."""
    out = []
    for i in range(0, len(images), batch):
        f = net.head.features(*net.backbone(torch.from_numpy(np.stack(images[i:i + batch]))))
        out.append(f.permute(0, 2, 3, 1).reshape(-1, f.shape[1]))
    return torch.cat(out)


@torch.no_grad()
def greedy_coreset(patches: torch.Tensor, size: int, seed: int = 0) -> torch.Tensor:
    """PatchCore's greedy k-center coreset: each step adds the patch farthest from the ones
    chosen, so the bank covers every kind of normal patch, rare ones included."""
    if len(patches) <= size:
        return patches.clone()
    g = torch.Generator().manual_seed(seed)
    sq = (patches * patches).sum(1)  # |p|^2 once: each step is then one matrix-vector product

    def dist2(i: int) -> torch.Tensor:
        return torch.clamp(sq - 2 * (patches @ patches[i]) + sq[i], min=0.0)

    chosen = [int(torch.randint(len(patches), (1,), generator=g))]
    nearest = dist2(chosen[0])
    for _ in range(size - 1):
        idx = int(nearest.argmax())
        chosen.append(idx)
        nearest = torch.minimum(nearest, dist2(idx))
    return patches[chosen].clone()


def _feature_tensor(graph: onnx.GraphProto, layer: int) -> str:
    """The tensor the detector's layer ``layer`` hands to the rest of the network: produced
    inside ``/model.<layer>/``, consumed outside it (ultralytics names nodes by module)."""
    prefix = f"/model.{layer}/"
    made = {o: n.name for n in graph.node for o in n.output if n.name.startswith(prefix)}
    for n in graph.node:
        if not n.name.startswith(prefix):
            for i in n.input:
                if i in made:
                    return i
    raise ValueError(f"no output of layer {layer} found in the detector's ONNX graph")


def attach_head(detector: Path, head: PatchHead, out: Path, source_wh: tuple[int, int]) -> Path:
    """The detector's ONNX graph with the head grafted onto its layer 4 and 6 outputs: the
    same inputs and outputs as before, plus ``anomaly_score`` [B] and ``anomaly_map``
    [B, H/8, W/8]. The detector's own nodes are untouched (its parity stands). ``source_wh``
    (the good boards' frame size) is recorded: the serving side applies the head to frames
    of that size only (serving/side_inspector.py)."""
    det = onnx.load(str(detector))
    keep = [o.name for o in det.graph.output] + list(HEAD_OUTPUTS)
    taps = [_feature_tensor(det.graph, layer) for layer in LAYERS]
    head_path = out.with_suffix(".head.onnx")
    channels = (64, 128)  # only the export's dummy shapes; the axes are dynamic
    dummies = tuple(torch.zeros(1, c, 32 // s, 40 // s) for c, s in zip(channels, (1, 2)))
    torch.onnx.export(head.eval(), dummies, str(head_path), input_names=list(HEAD_INPUTS),
                      output_names=list(HEAD_OUTPUTS), opset_version=det.opset_import[0].version, dynamo=False,
                      dynamic_axes={HEAD_INPUTS[0]: {0: "batch", 2: "h8", 3: "w8"},
                                    HEAD_INPUTS[1]: {0: "batch", 2: "h16", 3: "w16"},
                                    HEAD_OUTPUTS[0]: {0: "batch"}, HEAD_OUTPUTS[1]: {0: "batch", 1: "h8", 2: "w8"}})
    h = onnx.load(str(head_path))
    head_path.unlink()
    h.ir_version = det.ir_version
    # merge_models joins graph outputs to graph inputs: expose the taps as (extra) outputs
    det.graph.output.extend(onnx.helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, [f"{t}_{a}" for a in "nchw"])
                            for t in taps)
    merged = onnx.compose.merge_models(det, h, io_map=list(zip(taps, HEAD_INPUTS)),
                                       outputs=keep)
    have = {p.key for p in merged.metadata_props}
    merged.metadata_props.extend(p for p in det.metadata_props if p.key not in have)  # imgsz, names, version
    merged.metadata_props.append(onnx.StringStringEntryProto(key="anomaly_source_wh",
                                                             value=f"{source_wh[0]}x{source_wh[1]}"))
    onnx.checker.check_model(merged)
    onnx.save(merged, str(out))
    return out
