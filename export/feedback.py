"""Operators' feedback -> a YOLO data set (issue 18): the boards they flagged, labelled as
they corrected them, in the layout ultralytics and the common labelling tools (CVAT,
Label Studio, Roboflow) import:

    DIR/data.yaml                      path, train, val, nc, names (the taxonomy's, in class-id order)
    DIR/images/{train,val}/<inspection>_<side>.jpg
    DIR/labels/{train,val}/<inspection>_<side>.txt   one "class cx cy w h" line per defect,
                                                     normalised by the image size; empty = a good board

A false reject becomes an empty label file (the board is good); a false accept or a wrong
class, the corrected boxes. The newest feedback per inspection and side wins. Boards whose
image was not kept (IMAGE_POLICY) cannot be labelled: they are skipped and counted.
"""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import yaml
from sqlalchemy import select

from pcb import taxonomy
from store.models import Feedback, Inspection
from store.session import make_engine, make_sessionmaker


@dataclass
class ExportSummary:
    train: int = 0
    val: int = 0
    good: int = 0  # of those, false rejects: empty label files
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> boards
    data_yaml: Path | None = None

    def skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1

    def __str__(self) -> str:
        skipped = ", ".join(f"{n} {why}" for why, n in sorted(self.skipped.items())) or "none"
        return (f"{self.train + self.val} boards ({self.train} train, {self.val} val; {self.good} good boards), "
                f"skipped: {skipped} -> {self.data_yaml}")


def image_path(image_dir: Path, stem: str, side: str) -> Path:
    """Where the gateway keeps a side's image (gateway/services/image_store.py ``ImageStore.path``)."""
    return image_dir / f"{stem}_{side}.jpg"


def latest_feedback(sessions) -> list[tuple[Feedback, Inspection | None]]:
    """The newest feedback per (inspection, side), each with its inspection row (None when
    the row is gone)."""
    with sessions() as s:
        rows = s.scalars(select(Feedback).order_by(Feedback.created_at, Feedback.id)).all()
        newest = {(f.inspection_id, f.side): f for f in rows}  # later rows overwrite earlier ones
        return [(f, s.get(Inspection, f.inspection_id)) for f in newest.values()]


def yolo_lines(boxes: list[dict], width: int, height: int, class_ids: dict[str, int]) -> list[str]:
    """``class cx cy w h`` normalised by the image size; boxes clipped to the image, empty ones dropped.
    Raises KeyError for a class the taxonomy no longer has."""
    out = []
    for b in boxes:
        x1, y1, x2, y2 = b["box"]
        x1, x2 = max(0.0, min(x1, width)), max(0.0, min(x2, width))
        y1, y2 = max(0.0, min(y1, height)), max(0.0, min(y2, height))
        if x2 <= x1 or y2 <= y1:
            continue
        cls = class_ids[b["class"]]
        out.append(f"{cls} {(x1 + x2) / 2 / width:.6f} {(y1 + y2) / 2 / height:.6f} "
                   f"{(x2 - x1) / width:.6f} {(y2 - y1) / height:.6f}")
    return out


def split_names(names: list[str], val_share: float) -> set[str]:
    """Which boards go to val: a stable pick (by a hash of the name, so a re-export with more
    feedback keeps most boards where they were), at least one and never all of them."""
    if len(names) < 2:
        return set()
    n_val = min(len(names) - 1, max(1, round(len(names) * val_share)))
    ranked = sorted(names, key=lambda n: hashlib.sha256(n.encode()).hexdigest())
    return set(ranked[:n_val])


def export_feedback(out: Path, database_url: str, image_dir: Path, val_share: float = 0.2) -> ExportSummary:
    """Write the data set under ``out`` (replacing an earlier export there) and return what went in."""
    names = taxonomy.load().class_names
    class_ids = {n: i for i, n in enumerate(names)}
    summary = ExportSummary()
    engine = make_engine(database_url)
    try:
        marked = latest_feedback(make_sessionmaker(engine))
    finally:
        engine.dispose()
    labelled: dict[str, tuple[Path, list[str]]] = {}  # name -> (image, label lines)
    for fb, row in marked:
        if row is None:
            summary.skip("without an inspection row")
            continue
        src = image_path(image_dir, row.image_path, fb.side) if row.image_path else None
        img = cv2.imread(str(src)) if src is not None and src.is_file() else None
        if src is None or img is None:
            summary.skip("without a kept image")
            continue
        h, w = img.shape[:2]
        try:
            lines = [] if fb.kind == "false_reject" else yolo_lines(fb.boxes or [], w, h, class_ids)
        except KeyError:
            summary.skip("with a class no longer in the taxonomy")
            continue
        if fb.kind != "false_reject" and not lines:
            # every corrected box fell outside the image: an empty label would teach the
            # missed defect as background, the opposite of what the operator said
            summary.skip("whose boxes all lie outside the image")
            continue
        summary.good += fb.kind == "false_reject"
        labelled[f"{fb.inspection_id}_{fb.side}"] = (src, lines)
    val = split_names(list(labelled), val_share)
    for split in ("train", "val"):
        for kind in ("images", "labels"):
            shutil.rmtree(out / kind / split, ignore_errors=True)
            (out / kind / split).mkdir(parents=True)
    for name, (src, lines) in labelled.items():
        # a lone board goes to both splits: ultralytics trains on nothing without a val set
        splits = ["train", "val"] if len(labelled) == 1 else ["val"] if name in val else ["train"]
        for split in splits:
            shutil.copyfile(src, out / "images" / split / f"{name}.jpg")
            (out / "labels" / split / f"{name}.txt").write_text("".join(line + "\n" for line in lines))
        summary.train += "train" in splits
        summary.val += "val" in splits
    data = {"path": str(out.resolve()), "train": "images/train", "val": "images/val", "nc": len(names),
            "names": dict(enumerate(names))}
    summary.data_yaml = out / "data.yaml"
    summary.data_yaml.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    return summary
