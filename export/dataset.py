"""Write a YOLO data set of synthetic boards (images, labels, data.yaml), seeded.

Classes are cycled so every class of the taxonomy appears about equally often; a share of
boards is left clean so the detector also learns what a good board looks like.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import yaml

from pcb import taxonomy
from pcb.synthetic import render_board

SIZES = [(640, 480), (640, 480), (640, 480), (800, 600), (480, 480)]


def write_dataset(out: Path, n_train: int, n_val: int, seed: int = 0, clean_share: float = 0.1) -> Path:
    """Render ``n_train + n_val`` boards into ``out`` and return the data.yaml path."""
    tax = taxonomy.load()
    names = tax.class_names
    rng = np.random.default_rng(seed)
    cycle: list[str] = []
    for split, n, offset in (("train", n_train, 0), ("val", n_val, 1_000_000)):
        img_dir, lbl_dir = out / "images" / split, out / "labels" / split
        img_dir.mkdir(parents=True, exist_ok=True)
        lbl_dir.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            if rng.random() < clean_share:
                force: list[str] = []
            else:
                k = int(rng.integers(1, 4))
                force = []
                for _ in range(k):
                    if not cycle:
                        cycle = [str(c) for c in rng.permutation(names)]
                    force.append(cycle.pop())
            size = SIZES[int(rng.integers(0, len(SIZES)))]
            board = render_board(seed * 10_000_000 + offset + i, size=size, force=force)
            stem = f"{split}_{i:05d}"
            cv2.imwrite(str(img_dir / f"{stem}.jpg"), board.image, [cv2.IMWRITE_JPEG_QUALITY, 90])
            (lbl_dir / f"{stem}.txt").write_text("\n".join(board.yolo_labels()) + "\n")
    data = {
        "path": str(out.resolve()),
        "train": "images/train",
        "val": "images/val",
        "names": dict(enumerate(names)),
    }
    data_yaml = out / "data.yaml"
    data_yaml.write_text(yaml.safe_dump(data, sort_keys=False))
    return data_yaml
