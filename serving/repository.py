"""Versions of a model in a Triton model repository on disk."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import threading
from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from inference.contract import BATCH_LANE_DETECTOR, BATCH_LANE_MODEL

DETECTOR = "pcb_detector"  # the one name every component uses for the detector
LANE_MODELS = (BATCH_LANE_DETECTOR, BATCH_LANE_MODEL)  # derived from it (serving/batch_lane.py)
# written into each repository by an export, never copied from another one
EXPORTED = (DETECTOR, *LANE_MODELS)
PREPROCESS = "pcb_preprocess"  # present only in the split layout (serving/split_layout/)


def is_split(repository: Path) -> bool:
    """Split layout (GPU, or its CPU stand-in): pcb_preprocess -> pcb_detector (raw tensors)
    -> pcb_postprocess. Otherwise the CPU layout: pcb_detector runs the whole side."""
    return (repository / PREPROCESS / "config.pbtxt").exists()


def versions(model_dir: Path) -> list[int]:
    if not model_dir.is_dir():
        return []
    return sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and re.fullmatch(r"\d+", p.name))


def next_version(model_dir: Path) -> int:
    v = versions(model_dir)
    return (v[-1] + 1) if v else 1


def read_config(model_dir: Path) -> model_config_pb2.ModelConfig:
    cfg = model_config_pb2.ModelConfig()
    text_format.Parse((model_dir / "config.pbtxt").read_text(), cfg)
    return cfg


def write_config(model_dir: Path, cfg: model_config_pb2.ModelConfig, header: str = "") -> None:
    """Through a temporary file and a rename: Triton, loading the model meanwhile (a promote,
    the batch lane following it), reads the old config or the new one, never half of one."""
    model_dir.mkdir(parents=True, exist_ok=True)
    text = header + text_format.MessageToString(cfg)
    target = model_dir / "config.pbtxt"
    with contextlib.suppress(OSError):
        if target.read_text() == text:
            return  # unchanged: no new file for Triton to reload the model for
    tmp = model_dir / f".config.{os.getpid()}.{threading.get_ident()}.partial"
    tmp.write_text(text)
    tmp.rename(target)


def served_versions(cfg: model_config_pb2.ModelConfig, on_disk: list[int]) -> list[int]:
    """Which on-disk versions Triton serves under the config's version policy."""
    policy = cfg.version_policy.WhichOneof("policy_choice")
    if policy == "specific":
        return sorted(v for v in cfg.version_policy.specific.versions if v in on_disk)
    if policy == "all":
        return sorted(on_disk)
    n = cfg.version_policy.latest.num_versions or 1
    return sorted(on_disk)[-n:]


def link_or_copy(src: str, dst: str) -> str:
    """A hard link where the file system allows (the ONNX file is megabytes), else a copy:
    the ``copy_function`` of a derived model's version directory (shadow, batch lane). A
    ``dst`` that is already ``src`` stays (two syncs linking the same file at once); any
    other is replaced."""
    for _ in range(2):
        try:
            os.link(src, dst)
            return dst
        except FileExistsError:
            if os.path.samefile(src, dst):
                return dst
            with contextlib.suppress(FileNotFoundError):
                os.unlink(dst)
        except OSError:
            break  # another file system, or no links here: copy
    return shutil.copy2(src, dst)
