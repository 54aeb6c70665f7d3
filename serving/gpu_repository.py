"""Assemble the split layout of the model repository: the GPU layout.

On a GPU the side inspection is split over three models: python pre-processing, the
TensorRT detector (``python -m export yolo --target tensorrt``) and python post-processing
(serving/split_layout/, with the ensembles that chain them). Everything else (board fusion,
enhancement) is the CPU repository's. Exporting an ONNX detector into a split repository
gives the same layout on a CPU: the tests and ``make bench-triton`` run it here.

  python -m serving.gpu_repository --out build/model_repository_gpu
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from serving.repository import DETECTOR

ROOT = Path(__file__).resolve().parent.parent
SPLIT_LAYOUT = Path(__file__).resolve().parent / "split_layout"


def assemble(out: Path, source: Path = ROOT / "model_repository") -> list[str]:
    """Copy the split layout's models, then the source repository's others (its detector,
    exported for the CPU layout, is left out: export one for this layout)."""
    out.mkdir(parents=True, exist_ok=True)
    split = {p.name: p for p in SPLIT_LAYOUT.iterdir() if (p / "config.pbtxt").exists()}
    shared = {p.name: p for p in source.iterdir() if (p / "config.pbtxt").exists()
              and p.name != DETECTOR and p.name not in split}
    for name, model in sorted({**shared, **split}.items()):
        dest = out / name
        if dest.exists():
            shutil.rmtree(dest)
        shutil.copytree(model, dest, ignore=shutil.ignore_patterns("__pycache__"))
    return sorted({**shared, **split})


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m serving.gpu_repository", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "build" / "model_repository_gpu")
    args = ap.parse_args(argv)
    print("copied:", ", ".join(assemble(args.out)))
    if not (args.out / DETECTOR / "config.pbtxt").exists():
        print(f"next: python -m export yolo --weights models/pcb_yolov8n.pt --target tensorrt --fp16 "
              f"--repository {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
