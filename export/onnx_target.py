"""YOLO .pt -> ONNX (dynamic batch axis) with the version stamped in, as a new version of
``pcb_detector`` in the CPU layout (python backend + onnxruntime)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import onnx
from onnx import TensorProto, helper

from export.detector_config import HEADER, DetectorShape, detector_config
from serving import batch_lane
from serving.repository import (
    DETECTOR,
    PREPROCESS,
    is_split,
    next_version,
    read_config,
    served_versions,
    versions,
    write_config,
)

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = ROOT / "serving" / "templates"
# the CPU layout runs the whole side in the detector; the split layout only the network
MODEL_TEMPLATE = {False: TEMPLATES / "inspect_model.py", True: TEMPLATES / "detector_model.py"}


def export_onnx(weights: Path, imgsz: int, out: Path, max_batch: int = 16) -> Path:
    """ultralytics export with a dynamic batch axis (opset 17, simplified)."""
    from ultralytics import YOLO

    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "model.pt"
        shutil.copy(weights, src)  # ultralytics writes the .onnx beside the .pt
        path = YOLO(str(src)).export(format="onnx", imgsz=imgsz, dynamic=True, simplify=True,
                                     opset=17, batch=max_batch, device="cpu", verbose=False)
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(path, out)
    return out


def stamp_version(path: Path, version: int) -> None:
    """Add an output ``version`` (B x 1, int32, constant) so every response says which
    exported version answered it: the gateway reports it and hot-swap tests watch it
    switch. Plain ONNX ops (Shape, Slice, Concat, ConstantOfShape) that TensorRT also builds."""
    m = onnx.load(str(path))
    g = m.graph
    inp = g.input[0].name
    g.initializer.extend([
        helper.make_tensor("_v_start", TensorProto.INT64, [1], [0]),
        helper.make_tensor("_v_end", TensorProto.INT64, [1], [1]),
        helper.make_tensor("_v_one", TensorProto.INT64, [1], [1]),
    ])
    g.node.extend([
        helper.make_node("Shape", [inp], ["_v_shape"]),
        helper.make_node("Slice", ["_v_shape", "_v_start", "_v_end"], ["_v_batch"]),
        helper.make_node("Concat", ["_v_batch", "_v_one"], ["_v_out_shape"], axis=0),
        helper.make_node("ConstantOfShape", ["_v_out_shape"], ["version"],
                         value=helper.make_tensor("_v_value", TensorProto.INT32, [1], [version])),
    ])
    g.output.append(helper.make_tensor_value_info("version", TensorProto.INT32, ["batch", 1]))
    m.metadata_props.append(onnx.StringStringEntryProto(key="pcb_detector_version", value=str(version)))
    onnx.checker.check_model(m)
    onnx.save(m, str(path))


def onnx_shape(path: Path) -> DetectorShape:
    m = onnx.load(str(path), load_external_data=False)
    out = m.graph.output[0].type.tensor_type.shape.dim
    imgsz = int(m.graph.input[0].type.tensor_type.shape.dim[2].dim_value or 0)
    # dynamic height/width come out symbolic: read the size ultralytics recorded instead
    meta = {p.key: p.value for p in m.metadata_props}
    if not imgsz and "imgsz" in meta:
        imgsz = int(meta["imgsz"].strip("[]").split(",")[0])
    nc = len(eval(meta["names"])) if "names" in meta else int(out[1].dim_value) - 4  # noqa: S307 (ultralytics writes a dict literal)
    anchors = sum((imgsz // s) ** 2 for s in (8, 16, 32))
    return DetectorShape(imgsz=imgsz, num_outputs=4 + nc, num_anchors=anchors)


def check_pipeline_size(repository: Path, imgsz: int) -> None:
    """The pre-processing model letterboxes to its ``imgsz``: the detector must match."""
    pre = repository / PREPROCESS
    if (pre / "config.pbtxt").exists():
        want = int(read_config(pre).parameters["imgsz"].string_value)
        if want != imgsz:
            raise SystemExit(f"detector imgsz {imgsz} != pcb_preprocess imgsz {want}: "
                             "export with --imgsz {want} or change pcb_preprocess/config.pbtxt")


def copy_lineage(weights: Path, version_dir: Path) -> None:
    """The weights' lineage (``W.json`` beside ``W.pt``: data set, epochs, metrics, written by
    ``export/train.py``) travels with the version as ``lineage.json``: what was trained on
    what stays known after the .pt is gone (``/admin/models`` reads it)."""
    src = weights.with_suffix(".json")
    if src.is_file():
        shutil.copyfile(src, version_dir / "lineage.json")


def add_version(repository: Path, weights: Path, imgsz: int, max_batch: int,
                version: int | None = None, serve_only_new: bool = False,
                graft: Callable[[Path], dict[str, str]] | None = None) -> tuple[int, Path]:
    """Write ``pcb_detector/<N>/{model.onnx, model.py, lineage.json}`` and the config, for
    the repository's layout (serving/repository.py ``is_split``). The version policy keeps
    serving what was served (promotion is the admin's step) unless this is the first
    version. ``graft`` rewrites the exported ONNX file in place before
    the version is stamped (the anomaly head) and returns files to write beside it (its
    lineage: name -> text)."""
    check_pipeline_size(repository, imgsz)
    model_dir = repository / DETECTOR
    version = version or next_version(model_dir)
    vdir = model_dir / str(version)
    tmp_dir = model_dir / f".{version}.partial"  # Triton ignores dot dirs; rename is atomic
    shutil.rmtree(tmp_dir, ignore_errors=True)
    tmp_dir.mkdir(parents=True)
    onnx_path = export_onnx(weights, imgsz, tmp_dir / "model.onnx", max_batch)
    copy_lineage(weights, tmp_dir)
    for name, text in (graft(onnx_path) if graft is not None else {}).items():
        (tmp_dir / name).write_text(text)
    stamp_version(onnx_path, version)
    split = is_split(repository)
    shutil.copy(MODEL_TEMPLATE[split], tmp_dir / "model.py")
    served = _served_before(model_dir)
    policy = [version] if (serve_only_new or not served) else served
    # everything that can fail happens before the version becomes visible
    cfg = detector_config(onnx_shape(tmp_dir / "model.onnx"), "onnx", max_batch, policy, split=split,
                          model_dir=model_dir)
    tmp_dir.rename(vdir)
    write_config(model_dir, cfg, HEADER)
    batch_lane.sync(repository)  # the batch lane follows what is served (nothing in the split layout)
    return version, vdir / "model.onnx"


def _served_before(model_dir: Path) -> list[int]:
    if not (model_dir / "config.pbtxt").exists():
        return []
    return served_versions(read_config(model_dir), versions(model_dir))
