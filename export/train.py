"""Train the detector on the CPU: the demo's nano YOLO from scratch on synthetic boards,
or (``data``) a fine-tune on a plant's own YOLO data set (``python -m export feedback``
writes one from operators' corrections).

No pretrained weights can be downloaded here, so the demo starts from the architecture
file that ships inside ultralytics (``yolov8n.yaml``); a fine-tune starts from the
committed ``models/pcb_yolov8n.pt``. The report (metrics and where they came from) is the
model's lineage: written as ``<weights>.json`` beside the weights, it travels with the
exported version (``export/onnx_target.py``).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from export.dataset import write_dataset
from pcb import taxonomy

# the committed detector: a plant's data refines it
FINE_TUNE_FROM = Path(__file__).resolve().parent.parent / "models" / "pcb_yolov8n.pt"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}


@dataclass
class TrainConfig:
    out: Path = Path("build/train")
    n_train: int = 800
    n_val: int = 160
    epochs: int = 30
    imgsz: int = 320
    batch: int = 16
    seed: int = 0
    model: str = "yolov8n.yaml"  # or a .pt checkpoint to continue from
    weights_out: Path | None = None  # copy best.pt here when done
    workers: int = 2
    # mosaic glues four boards into one 320 px input, shrinking the small defects (pin
    # holes, mouse bites) to a few pixels: good early for variety, bad for the last epochs
    mosaic: float = 1.0
    scale: float = 0.5
    run_name: str = "run"
    data: Path | None = None  # a plant's own data.yaml instead of rendered boards


def describe_data(data_yaml: Path) -> dict:
    """What a lineage says about a YOLO data set: where, how many images per split, and a
    short hash of its label files (the same labels give the same hash, wherever they lie).
    Raises ValueError when its classes are not the taxonomy's: the served pipeline reads
    class ids as the taxonomy numbers them."""
    spec = yaml.safe_load(data_yaml.read_text())
    root = Path(spec.get("path") or data_yaml.parent)
    root = root if root.is_absolute() else (data_yaml.parent / root)
    names = spec.get("names")
    names = [names[k] for k in sorted(names)] if isinstance(names, dict) else list(names or [])
    want = taxonomy.load().class_names
    if names != want:
        raise ValueError(f"{data_yaml}: classes {names} are not the taxonomy's {want} (in that order)")
    out: dict = {"yaml": str(data_yaml)}
    digest = hashlib.sha256()
    for split in ("train", "val"):
        dirs = [root / d for d in (spec[split] if isinstance(spec[split], list) else [spec[split]])]
        if not all(d.is_dir() for d in dirs):
            raise ValueError(f"{data_yaml}: {split} must name folders of images ({', '.join(map(str, dirs))})")
        images = sorted(p for d in dirs for p in d.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        out[f"{split}_images"] = len(images)
        for img in images:  # ultralytics' rule: the last /images/ -> /labels/, suffix -> .txt
            label = Path("/labels/".join(str(img.with_suffix(".txt")).rsplit("/images/", 1)))
            digest.update(f"{split}/{img.relative_to(root)}\n".encode())
            digest.update(label.read_bytes() if label.exists() else b"")
    out["labels_sha256"] = digest.hexdigest()[:16]
    return out


def train(cfg: TrainConfig) -> dict:
    from ultralytics import YOLO  # heavy import: only the export extra has it

    t0 = time.perf_counter()
    described = describe_data(cfg.data) if cfg.data else None
    data = cfg.data or cfg.out / "data" / "data.yaml"
    if not data.exists():  # the data set is seeded: rendered once, reused by later phases
        data = write_dataset(cfg.out / "data", cfg.n_train, cfg.n_val, seed=cfg.seed)
    t_data = time.perf_counter() - t0
    model = YOLO(cfg.model)
    model.train(
        data=str(data),
        epochs=cfg.epochs,
        imgsz=cfg.imgsz,
        batch=cfg.batch,
        device="cpu",
        workers=cfg.workers,
        seed=cfg.seed,
        deterministic=True,
        project=str(cfg.out.resolve()),
        name=cfg.run_name,
        exist_ok=True,
        plots=False,
        amp=False,
        verbose=False,
        # the boards are drawn upright by a camera over a conveyor: no flips up/down needed,
        # but left/right and small scale changes are what the line really shows
        fliplr=0.5,
        flipud=0.0,
        degrees=0.0,
        close_mosaic=5 if cfg.mosaic > 0 else 0,
        mosaic=cfg.mosaic,
        scale=cfg.scale,
    )
    best = cfg.out / cfg.run_name / "weights" / "best.pt"
    metrics = YOLO(str(best)).val(data=str(data), imgsz=cfg.imgsz, batch=cfg.batch, device="cpu",
                                  plots=False, verbose=False, workers=cfg.workers)
    report = {
        "weights": str(best),
        "map50": float(metrics.box.map50),
        "map50_95": float(metrics.box.map),
        "per_class_map50": {metrics.names[int(i)]: float(v) for i, v in
                            zip(metrics.box.ap_class_index, metrics.box.ap50)},
        "epochs": cfg.epochs,
        "init": cfg.model,
        "mosaic": cfg.mosaic,
        "scale": cfg.scale,
        "imgsz": cfg.imgsz,
        **({"data": described} if described else {"data": "synthetic (pcb/synthetic.py)", "seed": cfg.seed,
                                                    "n_train": cfg.n_train, "n_val": cfg.n_val}),
        "data_seconds": round(t_data, 1),
        "total_seconds": round(time.perf_counter() - t0, 1),
    }
    text = json.dumps(report, indent=2) + "\n"
    best.with_suffix(".json").write_text(text)  # so exporting best.pt itself carries its lineage
    if cfg.weights_out:
        cfg.weights_out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(best, cfg.weights_out)
        cfg.weights_out.with_suffix(".json").write_text(text)
    return report
