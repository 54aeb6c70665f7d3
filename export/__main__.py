"""``python -m export``: train the demo detector and export models into the repository.

  python -m export dataset --out build/data --train 800 --val 160
  python -m export train --epochs 15 --run-name phase1            (then phase 2: see `make train`)
  python -m export feedback --out build/feedback                    (operators' corrections -> a YOLO data set)
  python -m export train --data build/feedback/data.yaml --epochs 20 --weights-out build/plant.pt
                                                                    (fine-tune on the plant's own images)
  python -m export yolo --weights models/pcb_yolov8n.pt --target onnx --repository model_repository
  python -m export yolo --weights W --target tensorrt --fp16 --max-batch 32 --repository R
  python -m export gfpgan --weights GFPGANv1.4.pth --target onnx --repository model_repository
  python -m export realesrgan --weights RealESRGAN_x2plus.pth --target tensorrt --fp16 --repository R
  python -m export gfpgan --random-init --narrow --repository R      (tests and demo: no weights here)
  python -m export boards --out build/good --count 200                 (good synthetic boards, JPEG)
  python -m export anomaly --normal build/good --repository model_repository    (a detector version with the
                                                                                  anomaly head, to promote)
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m export", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)

    d = sub.add_parser("dataset", help="render a synthetic YOLO data set")
    d.add_argument("--out", type=Path, default=Path("build/train/data"))
    d.add_argument("--train", type=int, default=800)
    d.add_argument("--val", type=int, default=160)
    d.add_argument("--seed", type=int, default=0)

    t = sub.add_parser("train", help="train the detector (CPU): on synthetic boards, or --data a plant's own")
    t.add_argument("--data", type=Path, default=None,
                   help="a YOLO data.yaml of the plant's images (README: the plant's own data set); default: render synthetic")
    t.add_argument("--out", type=Path, default=Path("build/train"))
    t.add_argument("--train", type=int, default=800)
    t.add_argument("--val", type=int, default=160)
    t.add_argument("--epochs", type=int, default=40)
    t.add_argument("--imgsz", type=int, default=320)
    t.add_argument("--batch", type=int, default=16)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--workers", type=int, default=2, help="data loader processes (0: in this one)")
    t.add_argument("--weights-out", type=Path, default=None)
    t.add_argument("--init", default=None, help="architecture file or a checkpoint to continue from "
                   "(default: yolov8n.yaml from scratch; with --data, a fine-tune of models/pcb_yolov8n.pt)")
    t.add_argument("--run-name", default="run")
    t.add_argument("--mosaic", type=float, default=1.0)
    t.add_argument("--scale", type=float, default=0.5)

    f = sub.add_parser("feedback", help="operators' corrections (flagged boards) -> a YOLO data set")
    f.add_argument("--out", type=Path, required=True)
    f.add_argument("--database-url", default=None, help="default: DATABASE_URL (settings/environment.py)")
    f.add_argument("--image-dir", type=Path, default=None, help="the gateway's kept images; default: IMAGE_DIR")
    f.add_argument("--val-share", type=float, default=0.2)

    y = sub.add_parser("yolo", help="export a YOLO .pt as a new pcb_detector version")
    y.add_argument("--weights", type=Path, required=True)
    y.add_argument("--target", choices=["onnx", "tensorrt"], required=True)
    y.add_argument("--fp16", action="store_true", help="TensorRT: build an FP16 plan")
    y.add_argument("--max-batch", type=int, default=16)
    y.add_argument("--imgsz", type=int, default=320)
    y.add_argument("--repository", type=Path, default=Path("model_repository"))
    y.add_argument("--version", type=int, default=None, help="default: next free number")
    y.add_argument("--serve-only-new", action="store_true",
                   help="make the new version the only served one at once (default: keep "
                        "serving the current one until `python -m serving.admin promote`)")
    y.add_argument("--dry-run", action="store_true",
                   help="TensorRT: export and check the ONNX, print the build steps, build nothing")

    b = sub.add_parser("boards", help="render synthetic boards as JPEG files (good ones, or one unseen defect kind)")
    b.add_argument("--out", type=Path, required=True)
    b.add_argument("--count", type=int, default=200)
    b.add_argument("--first-seed", type=int, default=0)
    b.add_argument("--unseen", default=None, help="scratch, contamination, foreign_part or burn (default: good boards)")

    a = sub.add_parser("anomaly", help="fit the anomaly head on good boards -> a pcb_detector version with it")
    a.add_argument("--normal", type=Path, required=True, help="a folder of good boards' images (one camera size)")
    a.add_argument("--weights", type=Path, default=Path("models/pcb_yolov8n.pt"), help="the detector to extend")
    a.add_argument("--far", type=float, default=0.01, help="false-alarm rate on held-out good boards")
    a.add_argument("--holdout", type=float, default=0.25, help="share of the boards kept to calibrate")
    a.add_argument("--bank", type=int, default=768, help="memory bank size (coreset of good patches)")
    a.add_argument("--dims", type=int, default=64, help="projected feature dimensions")
    a.add_argument("--imgsz", type=int, default=320)
    a.add_argument("--repository", type=Path, default=Path("model_repository"))
    a.add_argument("--version", type=int, default=None, help="default: next free number")
    a.add_argument("--serve-only-new", action="store_true",
                   help="serve the new version alone at once (default: after `python -m serving.admin promote`)")

    for kind, what in (("gfpgan", "GFPGAN v1.4 face restorer -> face_restorer"),
                       ("realesrgan", "RealESRGAN x2plus background upsampler -> bg_upsampler")):
        e = sub.add_parser(kind, help=f"export {what} (a new version)")
        w = e.add_mutually_exclusive_group(required=True)
        w.add_argument("--weights", type=Path, help="the official .pth (see export/enhance_nets.py for where to get it)")
        w.add_argument("--random-init", action="store_true", help="fixed random init instead (tests, demo)")
        e.add_argument("--narrow", action="store_true", help="the narrow test configuration (fast on a CPU)")
        e.add_argument("--seed", type=int, default=0, help="random init seed")
        e.add_argument("--target", choices=["onnx", "tensorrt"], default="onnx")
        e.add_argument("--fp16", action="store_true", help="TensorRT: FP16 plan, checked against FP32 by PSNR")
        e.add_argument("--max-batch", type=int, default=8)
        e.add_argument("--repository", type=Path, default=Path("model_repository"))
        e.add_argument("--version", type=int, default=None, help="default: next free number")
        e.add_argument("--serve-only-new", action="store_true")
        e.add_argument("--dry-run", action="store_true",
                       help="export and check the ONNX, print the plan build steps and config, write nothing")

    args = p.parse_args(argv)
    if args.cmd in ("gfpgan", "realesrgan"):
        from export.enhance_target import EnhanceExport, add_version

        if args.fp16 and args.target != "tensorrt":
            p.error("--fp16 applies to --target tensorrt (the CPU layout runs FP32 onnxruntime)")
        version, path, steps = add_version(EnhanceExport(
            kind=args.cmd, repository=args.repository, target=args.target, weights=args.weights,
            narrow=args.narrow, seed=args.seed, fp16=args.fp16, max_batch=args.max_batch, version=args.version,
            dry_run=args.dry_run, serve_only_new=args.serve_only_new))
        for s in steps:
            print(("[dry-run] " if args.dry_run else "") + s)
        print(f"{path.parent.name} version {version}: {path}" + (" (not written)" if args.dry_run else ""))
        return 0
    if args.cmd == "boards":
        from pcb.synthetic import write_boards

        paths = write_boards(args.out, args.count, args.first_seed, args.unseen)
        print(f"{len(paths)} boards in {args.out}")
        return 0
    if args.cmd == "anomaly":
        from export.anomaly_net import AnomalySpec
        from export.anomaly_target import add_version as add_anomaly_version

        version, lineage = add_anomaly_version(args.repository, args.weights, args.normal,
                                               AnomalySpec(dims=args.dims, bank=args.bank), args.far, args.holdout,
                                               args.imgsz, version=args.version, serve_only_new=args.serve_only_new)
        print(json.dumps(lineage, indent=2))
        print(f"pcb_detector version {version}: the detector with the anomaly head"
              + ("" if args.serve_only_new else " (serve it with `python -m serving.admin promote pcb_detector "
                 f"{version}`)"))
        return 0
    if args.cmd == "dataset":
        from export.dataset import write_dataset

        print(write_dataset(args.out, args.train, args.val, seed=args.seed))
    elif args.cmd == "feedback":
        from export.feedback import export_feedback
        from settings.environment import get_settings

        if not 0 <= args.val_share < 1:
            p.error("--val-share must be in [0, 1)")
        env = get_settings()
        print(export_feedback(args.out, args.database_url or env.database_url,
                              args.image_dir or Path(env.image_dir), args.val_share))
    elif args.cmd == "train":
        from export.train import FINE_TUNE_FROM, TrainConfig, describe_data, train

        if args.data:
            try:
                describe_data(args.data)
            except (OSError, ValueError, KeyError) as e:  # a data set the served pipeline could not use
                p.error(f"--data {args.data}: {e}")
        init = args.init or (str(FINE_TUNE_FROM) if args.data else "yolov8n.yaml")
        report = train(TrainConfig(out=args.out, n_train=args.train, n_val=args.val, epochs=args.epochs,
                                   imgsz=args.imgsz, batch=args.batch, seed=args.seed, model=init,
                                   run_name=args.run_name, mosaic=args.mosaic, scale=args.scale,
                                   weights_out=args.weights_out, data=args.data, workers=args.workers))
        print(json.dumps(report, indent=2))
    elif args.cmd == "yolo":
        if args.target == "onnx":
            from export import onnx_target

            if args.fp16:
                p.error("--fp16 applies to --target tensorrt (the CPU layout runs FP32 onnxruntime)")
            version, path = onnx_target.add_version(args.repository, args.weights, args.imgsz,
                                                    args.max_batch, args.version, args.serve_only_new)
            print(f"pcb_detector version {version}: {path}")
        else:
            from export import tensorrt_target

            version, path, steps = tensorrt_target.add_version(
                args.repository, args.weights, args.imgsz, args.max_batch, args.fp16,
                args.version, dry_run=args.dry_run, serve_only_new=args.serve_only_new)
            for s in steps:
                print(("[dry-run] " if args.dry_run else "") + s)
            print(f"pcb_detector version {version}: {path}" + (" (not built)" if args.dry_run else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
