"""Assemble the GPU layout of the model repository.

The pipeline models (pre/post-processing, fusion, ensembles) are the same python and
ensemble configs as on the CPU; only ``pcb_detector`` differs (a TensorRT plan written by
``python -m export yolo --target tensorrt``). This copies the shared models next to it.

  python -m serving.gpu_repository --out build/model_repository_gpu
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from serving.repository import DETECTOR

ROOT = Path(__file__).resolve().parent.parent


def assemble(out: Path, source: Path = ROOT / "model_repository") -> list[str]:
    out.mkdir(parents=True, exist_ok=True)
    copied = []
    for model in sorted(p for p in source.iterdir() if (p / "config.pbtxt").exists()):
        if model.name == DETECTOR:
            continue  # the GPU detector is the TensorRT export's
        dest = out / model.name
        if dest.exists():
            shutil.rmtree(dest)
        shutil.copytree(model, dest, ignore=shutil.ignore_patterns("__pycache__"))
        copied.append(model.name)
    return copied


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
