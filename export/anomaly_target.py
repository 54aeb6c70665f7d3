"""``python -m export anomaly``: fit the anomaly head on good boards, calibrate its threshold
on held-out good boards, and export the detector **with the head** as a new
``pcb_detector`` version (export/anomaly_net.py says why a head and not a second model).

The threshold is the (1 - far) quantile of the held-out boards' image scores (``far``: the
false-alarm rate asked for, 1 % by default), so about that share of good boards goes to
review; it is baked into the graph (scores are in units of it) and recorded with the fit's
lineage in ``anomaly.json`` beside the model. The new version is served the way every
detector version is: beside the current one until ``python -m serving.admin promote``, or
at once with ``--serve-only-new``. Promoting a version without the head switches the
anomaly model off again.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from export import onnx_target
from export.anomaly_net import (
    AnomalyNet,
    AnomalySpec,
    Backbone,
    PatchHead,
    attach_head,
    greedy_coreset,
    patch_features,
)
from pcb.image_decode import decode_image
from pcb.letterbox import letterbox
from pcb.side_config import DETECTOR_STRIDE
from serving.repository import is_split

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp"}
PARITY_TOL = 1e-3  # threshold units: a thousandth of the threshold


def load_images(folder: Path, imgsz: int) -> tuple[list[np.ndarray], tuple[int, int]]:
    """The folder's images letterboxed like the detector's input, and their frame size
    (w, h). The head learns one camera's scale: boards of several sizes are refused."""
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise SystemExit(f"no images (jpg/png/bmp) in {folder}")
    imgs = [decode_image(p.read_bytes()) for p in paths]
    sizes = Counter((im.shape[1], im.shape[0]) for im in imgs)
    if len(sizes) > 1:
        raise SystemExit("the good boards must come from one camera size (the anomaly head learns its scale); "
                         f"found {', '.join(f'{w}x{h}: {n}' for (w, h), n in sizes.most_common())}")
    return [letterbox(im, imgsz, DETECTOR_STRIDE)[0] for im in imgs], next(iter(sizes))


@torch.no_grad()
def scores(net: AnomalyNet, images: list[np.ndarray], batch: int = 8) -> np.ndarray:
    out = [net(torch.from_numpy(np.stack(images[i:i + batch])))[0].numpy() for i in range(0, len(images), batch)]
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def split(images: list[np.ndarray], holdout_share: float) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(fit, held out): every k-th board is held out."""
    k = max(2, round(1 / holdout_share))
    return ([im for i, im in enumerate(images) if i % k != k - 1],
            [im for i, im in enumerate(images) if i % k == k - 1])


def fit(weights: Path, images: list[np.ndarray], spec: AnomalySpec, far: float,
        holdout_share: float) -> tuple[AnomalyNet, dict]:
    """The bank from the fit share, the threshold from the held-out share."""
    if not 0 < far < 1:
        raise SystemExit("--far must be between 0 and 1")
    if not 0 < holdout_share < 1:
        raise SystemExit("--holdout must be between 0 and 1")
    used, held = split(images, holdout_share)
    if len(held) < 10 or len(used) < 10:
        raise SystemExit(f"need at least 10 boards to fit and 10 to calibrate, got {len(used)} and {len(held)}")
    t0 = time.perf_counter()
    backbone = Backbone(weights).eval()
    net = AnomalyNet(backbone, PatchHead(backbone.channels, spec.dims, spec.seed)).eval()
    patches = patch_features(net, used)
    net.head.set_bank(greedy_coreset(patches, spec.bank, spec.seed))
    held_scores = scores(net, held)
    threshold = float(np.quantile(held_scores, 1 - far, method="higher"))
    if not np.isfinite(threshold) or threshold < 1e-4:
        # the held-out boards are (near) copies of fitted ones: every real board would review
        raise SystemExit(f"calibration threshold {threshold:.3g}: the held-out boards match the fitted ones "
                         "exactly (duplicates?); give distinct good boards")
    if len(held) < 1 / far:
        print(f"note: {len(held)} held-out boards cannot resolve a {far:.1%} false-alarm rate; the threshold "
              f"is their highest score (use at least {int(np.ceil(1 / far))})")
    net.head.threshold.fill_(threshold)
    lineage = {"method": "PatchCore (nearest-neighbour distance to a coreset of good patches)",
               "backbone": f"{weights.name} layers 4+6 (the detector's own YOLOv8n backbone)",
               "backbone_sha256": hashlib.sha256(weights.read_bytes()).hexdigest()[:16],
               **asdict(spec), "patches": int(len(patches)), "fit_boards": len(used),
               "holdout_boards": len(held), "far": far, "threshold": threshold,
               "input_hw": list(images[0].shape[1:]), "fit_seconds": round(time.perf_counter() - t0, 1)}
    return net, lineage


def check_parity(net: AnomalyNet, onnx_path: Path, images: list[np.ndarray]) -> float:
    """Max abs difference (threshold units) of the exported file's anomaly outputs against
    the PyTorch net, on held-out boards: a fitted board's patches are in the bank, and the
    square root of a distance that is zero but for rounding magnifies float32 noise there
    (1e-6 -> 1e-3) far below any threshold."""
    import onnxruntime as ort

    batch = np.stack(images[:4])
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    o_score, o_map = sess.run(["anomaly_score", "anomaly_map"], {sess.get_inputs()[0].name: batch})
    with torch.no_grad():
        t_score, t_map = (t.numpy() for t in net(torch.from_numpy(batch)))
    diff = float(max(np.abs(o_map - t_map).max(), np.abs(o_score - t_score).max()))
    if diff > PARITY_TOL:
        raise SystemExit(f"the exported anomaly head disagrees with PyTorch: max abs diff {diff:.2e} > {PARITY_TOL}")
    return diff


def add_version(repository: Path, weights: Path, normal: Path, spec: AnomalySpec, far: float = 0.01,
                holdout_share: float = 0.25, imgsz: int = 320, max_batch: int = 16, version: int | None = None,
                serve_only_new: bool = False) -> tuple[int, dict]:
    if is_split(repository):
        raise SystemExit("the GPU layout's pcb_postprocess does not apply the anomaly head yet: "
                         "export it into a CPU-layout repository")
    images, source_wh = load_images(normal, imgsz)
    net, lineage = fit(weights, images, spec, far, holdout_share)
    lineage["normal_dir"] = str(normal)
    lineage["source_wh"] = list(source_wh)

    def graft(path: Path) -> dict[str, str]:
        attach_head(path, net.head, path, source_wh)
        lineage["parity_max_abs_diff"] = check_parity(net, path, split(images, holdout_share)[1])
        return {"anomaly.json": json.dumps(lineage, indent=2) + "\n"}

    v, _ = onnx_target.add_version(repository, weights, imgsz, max_batch, version, serve_only_new, graft=graft)
    return v, lineage
