"""Train the demo detector: a nano YOLO from scratch on synthetic boards, on the CPU.

No pretrained weights can be downloaded here, so the model starts from the architecture
file that ships inside ultralytics (``yolov8n.yaml``).
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from export.dataset import write_dataset


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


def train(cfg: TrainConfig) -> dict:
    from ultralytics import YOLO  # heavy import: only the export extra has it

    t0 = time.perf_counter()
    data = cfg.out / "data" / "data.yaml"
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
        "n_train": cfg.n_train,
        "n_val": cfg.n_val,
        "data_seconds": round(t_data, 1),
        "total_seconds": round(time.perf_counter() - t0, 1),
    }
    if cfg.weights_out:
        cfg.weights_out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(best, cfg.weights_out)
        cfg.weights_out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    return report
