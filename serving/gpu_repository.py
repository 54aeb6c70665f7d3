"""Assemble the split layout of the model repository: the GPU layout.

On a GPU the side inspection is split over three models: python pre-processing, the
TensorRT detector (``python -m export yolo --target tensorrt``) and python post-processing
(serving/split_layout/, with the ensembles that chain them). Everything else (board fusion,
enhancement) is the CPU repository's. Exporting an ONNX detector into a split repository
gives the same layout on a CPU: the tests and ``make bench-triton`` run it here.

The GPU repository decodes JPEGs with nvJPEG on the GPU (``pcb_preprocess`` with the
parameter ``decode: gpu`` and KIND_GPU instances, serving/gpu_preprocess.py); ``--decode cpu``
keeps OpenCV decoding, as the CPU tests and benches do.

  python -m serving.gpu_repository --out build/model_repository_gpu
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from tritonclient.grpc import model_config_pb2 as mc

from pcb.side_config import DECODERS
from serving.repository import DETECTOR, EXPORTED, PREPROCESS, read_config, write_config

ROOT = Path(__file__).resolve().parent.parent
SPLIT_LAYOUT = Path(__file__).resolve().parent / "split_layout"
# views of the CPU layout's whole-side detector (its anomaly head): nothing to view in this layout
CPU_ONLY = ("pcb_anomaly",)


def assemble(out: Path, source: Path = ROOT / "model_repository", decode: str = "cpu") -> list[str]:
    """Copy the split layout's models, then the source repository's others (its detector,
    exported for the CPU layout, is left out: export one for this layout). ``decode``
    (pcb.side_config.DECODERS): ``gpu`` for the GPU repository, ``cpu`` (as written in
    split_layout/) for its CPU stand-in."""
    out.mkdir(parents=True, exist_ok=True)
    split = {p.name: p for p in SPLIT_LAYOUT.iterdir() if (p / "config.pbtxt").exists()}
    shared = {p.name: p for p in source.iterdir() if (p / "config.pbtxt").exists()
              and p.name not in (*EXPORTED, *CPU_ONLY) and p.name not in split}
    for name, model in sorted({**shared, **split}.items()):
        dest = out / name
        if dest.exists():
            shutil.rmtree(dest)
        shutil.copytree(model, dest, ignore=shutil.ignore_patterns("__pycache__"))
    if decode != "cpu":
        set_decode(out / PREPROCESS, decode)
    return sorted({**shared, **split})


def set_decode(model_dir: Path, decode: str) -> None:
    """``gpu``: nvJPEG decode and torch letterbox of the whole batch on KIND_GPU instances,
    the output handed to the TensorRT detector without leaving the GPU. ``torch-cpu``: the
    same code on the CPU instances (the CPU tests of that adapter)."""
    if decode not in DECODERS:
        raise ValueError(f"decode must be one of {', '.join(DECODERS)}, not {decode!r}")
    cfg = read_config(model_dir)
    cfg.parameters["decode"].string_value = decode
    if decode == "gpu":
        for group in cfg.instance_group:
            group.kind = mc.ModelInstanceGroup.KIND_GPU
    write_config(model_dir, cfg, header=f"# serving/split_layout/{model_dir.name}/config.pbtxt (its comments "
                                        f"say why) with decode: {decode}, by serving/gpu_repository.py\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m serving.gpu_repository", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "build" / "model_repository_gpu")
    ap.add_argument("--decode", choices=["gpu", "cpu"], default="gpu",
                    help="where pcb_preprocess decodes JPEGs (gpu: nvJPEG; cpu: OpenCV)")
    args = ap.parse_args(argv)
    print("copied:", ", ".join(assemble(args.out, decode=args.decode)))
    if not (args.out / DETECTOR / "config.pbtxt").exists():
        print(f"next: python -m export yolo --weights models/pcb_yolov8n.pt --target tensorrt --fp16 "
              f"--repository {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
