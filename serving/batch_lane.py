"""The batch lane: the served detector again, for batch work only, on CPU the line leaves.

Priority levels in a dynamic batcher order the queue, but an execution that has started runs
to its end: on a CPU host both detector instances were often busy with an archive's batch of
eight when a sorter's board arrived, and the board waited for one of them (board p99 1.6-1.8x
the line alone, docs/benchmarks.md; the detector has no priority levels any more, since they
switch off Triton's prefetching: export/detector_config.py). Triton cannot reserve instances for a priority level,
so the lane gives batch work instances of its own:

- ``pcb_detector_batch``: the served versions of ``pcb_detector`` (hard links of their
  directories, the same config and parameters) whose instances run under ``SCHED_IDLE``
  (serving/cpu_priority.py). The kernel runs them only on cycles the line's instances leave
  and preempts them the moment a board's thread wants a core; when the line is idle they
  have both cores, so the batch ceiling is what it was.
- ``pcb_inspect_batch``: ``pcb_inspect`` with its step pointed at the lane, so the engine
  reads the same tensors (inference/contract.py ``BATCH_LANE_MODEL``).

The lane follows the detector: ``sync`` runs after every export (export/onnx_target.py) and
every change of what is served (serving/admin.py: load, promote, unload, rollback), so a batch
result names the version the line serves. The CPU layout only: the GPU layout's detector is
one TensorRT plan whose executions are milliseconds, and a GPU has no SCHED_IDLE; there the
priority levels of the first step (pcb_preprocess) order the work, and the engine uses
``pcb_inspect``. A CPU layout without its lane (Triton's start, a lane that could not follow)
gets batch images one at a time (batch/processors.py), so the line keeps an instance.
"""

from __future__ import annotations

import contextlib
import filecmp
import os
import shutil
import threading
import time
from pathlib import Path

from inference.contract import BATCH_LANE_DETECTOR, BATCH_LANE_MODEL, SINGLE_MODEL
from serving.repository import (
    DETECTOR,
    LANE_MODELS,
    is_split,
    link_or_copy,
    read_config,
    served_versions,
    versions,
    write_config,
)

TEMPLATES = Path(__file__).resolve().parent / "templates"
HEADER = ("# Written by serving/batch_lane.py from {source}: the batch lane (its docstring says why). "
          "Derived: rewritten on every export and promotion, never edited.\n")


def remove(repository: Path) -> None:
    for name in LANE_MODELS:
        shutil.rmtree(Path(repository) / name, ignore_errors=True)


def sync(repository: Path) -> list[int]:
    """Write the lane for what ``pcb_detector`` serves now; returns the lane's versions
    ([] where there is no lane: the split layout, or no detector or ``pcb_inspect`` here).
    Versions the detector stopped serving stay on disk until ``prune`` (Triton may still run
    requests on them until the lane is loaded again)."""
    repository = Path(repository)
    source, ensemble = repository / DETECTOR, repository / SINGLE_MODEL
    if is_split(repository) or not (source / "config.pbtxt").is_file() or not (ensemble / "config.pbtxt").is_file():
        remove(repository)
        return []
    cfg = read_config(source)
    served = served_versions(cfg, versions(source))
    lane = repository / BATCH_LANE_DETECTOR
    _sweep(lane)
    for v in served:
        target = lane / str(v)
        if _mirrors(source / str(v), target):
            continue
        # unique names: two syncs at once (two gateway workers, the CLI, an export) never
        # share one; Triton ignores dot dirs
        tag = f"{os.getpid()}.{threading.get_ident()}"
        staging, stale = lane / f".{v}.{tag}.partial", lane / f".{v}.{tag}.stale"
        try:
            shutil.copytree(source / str(v), staging, copy_function=link_or_copy,
                            ignore=shutil.ignore_patterns("__pycache__", "model.py"))
            # today's adapter (it lowers its own CPU priority), not the one the version was exported with
            shutil.copyfile(TEMPLATES / "inspect_model.py", staging / "model.py")
            if _mirrors(source / str(v), target):
                continue  # another sync put the same files there meanwhile
            if target.exists():  # a stale directory (the number exported again) goes aside: rename is atomic
                with contextlib.suppress(FileNotFoundError):
                    target.rename(stale)
            try:
                staging.rename(target)
            except OSError:
                if not _mirrors(source / str(v), target):
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
            shutil.rmtree(stale, ignore_errors=True)
    if (source / "warmup").is_dir():  # the config's model_warmup reads its board from there
        shutil.copytree(source / "warmup", lane / "warmup", copy_function=link_or_copy, dirs_exist_ok=True)
    cfg.name = BATCH_LANE_DETECTOR
    cfg.parameters["cpu_priority"].string_value = "idle"
    write_config(lane, cfg, HEADER.format(source=DETECTOR))

    ens = read_config(ensemble)
    ens.name = BATCH_LANE_MODEL
    for step in ens.ensemble_scheduling.step:
        if step.model_name == DETECTOR:
            step.model_name = BATCH_LANE_DETECTOR
    write_config(repository / BATCH_LANE_MODEL, ens, HEADER.format(source=SINGLE_MODEL))
    for v in versions(ensemble):  # an ensemble is served from an (empty) version directory too
        (repository / BATCH_LANE_MODEL / str(v)).mkdir(exist_ok=True)
    return served


LEFTOVER_S = 600.0  # a staging or stale directory this old is a crashed sync's: removed


def _sweep(lane: Path) -> None:
    """Remove what a sync that crashed left behind (dot names Triton ignores)."""
    if not lane.is_dir():
        return
    now = time.time()
    for p in lane.glob(".*"):
        if p.name.endswith((".partial", ".stale")):
            with contextlib.suppress(OSError):
                if now - p.lstat().st_mtime > LEFTOVER_S:
                    if p.is_dir():
                        shutil.rmtree(p, ignore_errors=True)
                    else:
                        p.unlink()


def _mirrors(source: Path, copy: Path) -> bool:
    """Whether ``copy`` holds ``source``'s files themselves (hard links, or equal bytes where
    the file system could not link): a version number exported again (``make repository``
    re-exports version 1) must not keep the old network in the lane."""
    if not copy.is_dir():
        return False
    adapter = copy / "model.py"  # today's template, not an older one (it is not the source's file)
    if not (adapter.is_file() and _same_bytes(TEMPLATES / "inspect_model.py", adapter)):
        return False
    for f in source.rglob("*"):
        if not f.is_file() or f.name == "model.py" or "__pycache__" in f.parts:
            continue
        twin = copy / f.relative_to(source)
        try:
            if not (twin.is_file() and (os.path.samefile(f, twin) or _same_bytes(f, twin))):
                return False
        except OSError:
            return False
    return True


def _same_bytes(a: Path, b: Path) -> bool:
    return a.stat().st_size == b.stat().st_size and filecmp.cmp(a, b, shallow=False)


def prune(repository: Path) -> list[int]:
    """Delete the lane's version directories its config no longer serves (after Triton has
    loaded the lane again); returns the versions removed."""
    lane = Path(repository) / BATCH_LANE_DETECTOR
    if not (lane / "config.pbtxt").is_file():
        return []
    on_disk = versions(lane)
    keep = set(served_versions(read_config(lane), on_disk))
    gone = [v for v in on_disk if v not in keep]
    for v in gone:
        shutil.rmtree(lane / str(v), ignore_errors=True)
    return gone
