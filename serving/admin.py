"""Hot-swap for admins: list, load, unload and promote detector versions in a running Triton.

``python -m serving.admin [--url HOST:PORT] [--repository DIR] COMMAND``

  list                       models, versions on disk, what is loaded and served
  load MODEL [VERSION]       load a model, or add VERSION next to the served ones (canary)
  promote MODEL VERSION      serve only VERSION; the others drain and unload
  unload MODEL [VERSION]     unload a model, or stop serving one VERSION
  rollback MODEL             promote the highest served version below the current one
  shadow MODEL VERSION       run VERSION beside the served one, under MODEL_shadow: the gateway
                             mirrors a share of live frames to it and reports the agreement
  unshadow MODEL             stop the shadow
  promote MODEL VERSION --min-agreement 0.98 --gateway URL
                             refuse unless the gateway's shadow report for VERSION agrees
                             enough (``--override`` promotes anyway; GATEWAY_TOKEN: admin key)

How a swap stays hitless: the version policy of ``config.pbtxt`` says which versions are
served. Each command rewrites it on disk (so a restart serves the same) and asks Triton to
load the model again through its repository API. Triton loads the new version set *before*
it retires the old one, and requests already running on an old version finish there; the
ensembles ask for version -1 (the highest served) and so move to the new version as soon
as it is ready. Ensembles are never unloaded, so they never report "not ready".

A shadow is a copy of the version's directory under another model name
(``pcb_detector_shadow``, one instance, same parameters): loading it there cannot change
what the ensembles serve, and unshadowing is unloading it. The CPU layout only: there the
detector answers a whole side from the encoded image, so the gateway can call it directly.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from inference.contract import BATCH_LANE_DETECTOR, BATCH_LANE_MODEL, DETECTOR_MODEL, shadow_model
from inference.repository_api import RepositoryAPI, RepositoryError
from serving import batch_lane
from serving.repository import (
    LANE_MODELS,
    is_split,
    link_or_copy,
    read_config,
    served_versions,
    versions,
    write_config,
)

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = Path(__file__).resolve().parent / "templates"
log = logging.getLogger("serving.admin")


class AdminError(RuntimeError):
    """A refused admin action, with a message meant for the operator."""


class UnknownModel(AdminError):
    """No such model in the repository."""


@dataclass
class ModelAdmin:
    url: str = "127.0.0.1:8000"
    repository: Path = ROOT / "model_repository"
    admin_key: str | None = None  # TRITON_ADMIN_KEY, when Triton restricts its repository API

    def __post_init__(self) -> None:
        self.repository = Path(self.repository)
        self.triton = RepositoryAPI(self.url, self.admin_key)

    # ---- read --------------------------------------------------------------------------
    def index(self) -> list[dict]:
        return self.triton.index()  # a refusal here is Triton's trouble (503), not the admin's

    def describe(self) -> list[dict]:
        """One row per model: versions on disk, served by policy, and ready in Triton."""
        rows = []
        ready: dict[str, list[str]] = {}
        for m in self.index():
            if m.get("state") == "READY":
                ready.setdefault(m["name"], []).append(m.get("version", ""))
        for model_dir in sorted(p for p in self.repository.iterdir() if (p / "config.pbtxt").exists()):
            on_disk = versions(model_dir)
            cfg = read_config(model_dir)
            rows.append({
                "model": model_dir.name,
                "on_disk": on_disk,
                "served": served_versions(cfg, on_disk),
                "ready": sorted(int(v) for v in ready.get(model_dir.name, []) if v.isdigit()),
                "lineage": {str(v): lineage(model_dir / str(v)) for v in on_disk if lineage(model_dir / str(v))},
            })
        return rows

    # ---- write -------------------------------------------------------------------------
    def _dir(self, model: str) -> Path:
        model_dir = self.repository / model
        if not model or model.startswith(".") or "/" in model or not (model_dir / "config.pbtxt").is_file():
            raise UnknownModel(f"no model {model!r} in the repository {self.repository}")
        return model_dir

    def _set_policy(self, model: str, served: list[int]) -> None:
        model_dir = self._dir(model)
        if model in LANE_MODELS:
            raise AdminError(f"{model} follows {DETECTOR_MODEL} (the batch lane): load or promote {DETECTOR_MODEL}")
        on_disk = versions(model_dir)
        missing = [v for v in served if v not in on_disk]
        if missing:
            raise AdminError(f"{model}: no version {missing} on disk (have {on_disk})")
        if not served:
            raise AdminError(f"{model}: refusing to serve no version at all; use `unload {model}`")
        cfg = read_config(model_dir)
        cfg.version_policy.specific.Clear()
        cfg.version_policy.specific.versions.extend(sorted(set(served)))
        header = "".join(line + "\n" for line in (model_dir / "config.pbtxt").read_text().splitlines()
                         if line.startswith("#"))
        write_config(model_dir, cfg, header)
        self._load(model)
        if model == DETECTOR_MODEL:
            self._follow_lane()

    def _follow_lane(self) -> None:
        """The batch lane serves what the detector now serves (serving/batch_lane.py), on disk
        and in Triton: it is part of the CPU layout, so it is (re)loaded whenever the detector
        is. A lane that cannot follow is unloaded and removed, so the batch engine falls back
        to ``pcb_inspect`` rather than answer with a version the line no longer serves (and a
        restart does not trip on it); the next promotion writes it again. The line's swap
        stands either way."""
        try:
            if not batch_lane.sync(self.repository):
                return
            self._load(BATCH_LANE_DETECTOR)  # the new versions, before the old ones are let go
            self._load(BATCH_LANE_MODEL)  # loaded already: a no-op; after a failure: back
            batch_lane.prune(self.repository)
        except Exception as e:  # noqa: BLE001 - whatever broke the lane must not undo the line's swap
            log.warning("batch lane did not follow %s (%r); unloading and removing it", DETECTOR_MODEL, e)
            self._drop_lane()

    def _unload_lane(self) -> None:
        for name in LANE_MODELS[::-1]:  # the ensemble first, then its step
            try:
                self.triton.unload(name)
            except Exception as e:  # noqa: BLE001 - the detector's own change stands; say so, go on
                log.warning("could not unload %s: %r", name, e)

    def _drop_lane(self) -> None:
        self._unload_lane()
        batch_lane.remove(self.repository)

    def _load(self, model: str) -> None:
        try:
            self.triton.load(model)
        except RepositoryError as e:
            raise AdminError(str(e)) from e

    def served(self, model: str) -> list[int]:
        model_dir = self._dir(model)
        return served_versions(read_config(model_dir), versions(model_dir))

    def load(self, model: str, version: int | None = None) -> list[int]:
        self._dir(model)
        if version is None:
            if model in LANE_MODELS:  # what it serves follows the detector's config
                try:
                    batch_lane.sync(self.repository)
                except OSError as e:
                    raise AdminError(f"cannot write the batch lane: {e}") from e
            self._load(model)
            if model == DETECTOR_MODEL:
                self._follow_lane()
            return self.served(model)
        self._set_policy(model, self.served(model) + [version])
        return self.served(model)

    def promote(self, model: str, version: int) -> list[int]:
        self._set_policy(model, [version])
        return self.served(model)

    def unload(self, model: str, version: int | None = None) -> list[int]:
        self._dir(model)
        if version is None:
            try:
                self.triton.unload(model)
            except RepositoryError as e:
                raise AdminError(str(e)) from e
            if model == DETECTOR_MODEL:  # no detector, no lane (it stays on disk for a restart)
                self._unload_lane()
            return []
        self._set_policy(model, [v for v in self.served(model) if v != version])
        return self.served(model)

    def shadow(self, model: str, version: int) -> dict:
        """Load ``version`` of ``model`` as ``<model>_shadow`` beside the served version."""
        model_dir = self._dir(model)
        if model != DETECTOR_MODEL:
            raise AdminError(f"only {DETECTOR_MODEL} can be shadowed (the gateway mirrors sides to it)")
        if is_split(self.repository):
            raise AdminError("shadow needs the CPU layout, where the detector answers a whole side")
        if version not in versions(model_dir):
            raise AdminError(f"{model}: no version {version} on disk (have {versions(model_dir)})")
        name = shadow_model(model)
        target = self.repository / name
        staging = self.repository / f".{name}.partial"  # Triton ignores dot dirs; rename is atomic
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(model_dir / str(version), staging / str(version), copy_function=link_or_copy)
        if (model_dir / "warmup").is_dir():  # the config's model_warmup reads its board from there
            shutil.copytree(model_dir / "warmup", staging / "warmup", copy_function=link_or_copy)
        # today's adapter (it lowers its own CPU priority), not the one the version was exported with
        (staging / str(version) / "model.py").unlink()
        shutil.copyfile(TEMPLATES / "inspect_model.py", staging / str(version) / "model.py")
        cfg = read_config(model_dir)
        cfg.name = name
        cfg.version_policy.specific.Clear()
        cfg.version_policy.specific.versions.append(version)
        del cfg.instance_group[1:]
        cfg.instance_group[0].count = 1  # the candidate must not take the line's cores:
        cfg.parameters["cpu_priority"].string_value = "idle"  # one instance, on cycles the line leaves
        write_config(staging, cfg, f"# Written by `python -m serving.admin shadow`: {model} version {version} "
                                   "in shadow (the gateway mirrors live frames to it).\n")
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
        self._load(name)
        return {"model": model, "shadow": name, "version": version}

    def unshadow(self, model: str) -> dict:
        self._dir(model)
        name = shadow_model(model)
        if (self.repository / name).exists():
            try:
                self.triton.unload(name)
            except RepositoryError as e:
                raise AdminError(str(e)) from e
            shutil.rmtree(self.repository / name, ignore_errors=True)
        return {"model": model, "shadow": name, "version": None}

    def rollback(self, model: str) -> list[int]:
        current = max(self.served(model))
        older = [v for v in versions(self._dir(model)) if v < current]
        if not older:
            raise AdminError(f"{model}: no version below {current} to roll back to")
        return self.promote(model, older[-1])


def lineage(version_dir: Path) -> dict:
    """What a version says about itself: its training lineage (``lineage.json``, written
    by ``python -m export yolo`` from the weights' record) and its anomaly head's fit
    (``anomaly.json``)."""
    out = {}
    for name in ("lineage", "anomaly"):
        path = version_dir / f"{name}.json"
        try:
            out[name] = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
    return out


def check_agreement(gateway: str, token: str | None, model: str, version: int, floor: float) -> str:
    """The gateway's shadow report for ``version`` against ``floor``; raises AdminError when
    it falls short (or there is none). Returns the report's one-line summary."""
    import httpx

    try:
        r = httpx.get(f"{gateway.rstrip('/')}/admin/models/{model}/shadow", params={"version": version},
                      headers={"Authorization": f"Bearer {token}"} if token else {}, timeout=10)
    except httpx.HTTPError as e:
        raise AdminError(f"cannot read the shadow report from {gateway}: {e}") from e
    if r.status_code != 200:
        raise AdminError(f"the gateway refused the shadow report ({r.status_code}): {r.text[:200]}")
    rep = r.json()
    summary = f"{model} version {version}: {rep['samples']} frames, agreement {rep['agreement']}"
    if not rep["samples"] or rep["agreement"] is None or rep["agreement"] < floor:
        raise AdminError(f"{summary} is below the floor {floor} (--override promotes anyway)")
    return summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m serving.admin", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", default="127.0.0.1:8000", help="Triton HTTP endpoint")
    p.add_argument("--repository", type=Path, default=ROOT / "model_repository")
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list")
    for name in ("load", "unload"):
        s = sub.add_parser(name)
        s.add_argument("model")
        s.add_argument("version", type=int, nargs="?")
    s = sub.add_parser("promote")
    s.add_argument("model")
    s.add_argument("version", type=int)
    s.add_argument("--min-agreement", type=float, default=None,
                   help="refuse unless the shadow report's verdict agreement (per side) reaches this")
    s.add_argument("--gateway", default=os.environ.get("GATEWAY_URL", "http://127.0.0.1:8080"),
                   help="where the shadow report is (GATEWAY_TOKEN: an admin key)")
    s.add_argument("--override", action="store_true", help="promote even below --min-agreement")
    s = sub.add_parser("rollback")
    s.add_argument("model")
    s = sub.add_parser("shadow")
    s.add_argument("model")
    s.add_argument("version", type=int)
    s = sub.add_parser("unshadow")
    s.add_argument("model")
    args = p.parse_args(argv)

    admin = ModelAdmin(args.url, args.repository, os.environ.get("TRITON_ADMIN_KEY") or None)
    try:
        if args.cmd == "list":
            rows = admin.describe()
            print(f"{'model':<20} {'on disk':<14} {'served':<10} {'ready':<10}")
            for r in rows:
                print(f"{r['model']:<20} {str(r['on_disk']):<14} {str(r['served']):<10} {str(r['ready']):<10}")
        elif args.cmd == "load":
            print(json.dumps({"model": args.model, "served": admin.load(args.model, args.version)}))
        elif args.cmd == "unload":
            print(json.dumps({"model": args.model, "served": admin.unload(args.model, args.version)}))
        elif args.cmd == "promote":
            if args.min_agreement is not None and not args.override:
                print(check_agreement(args.gateway, os.environ.get("GATEWAY_TOKEN"), args.model, args.version,
                                      args.min_agreement), file=sys.stderr)
            elif args.override:
                print(f"promoting {args.model} version {args.version} without checking the shadow agreement "
                      "(--override)", file=sys.stderr)
            print(json.dumps({"model": args.model, "served": admin.promote(args.model, args.version)}))
        elif args.cmd == "shadow":
            print(json.dumps(admin.shadow(args.model, args.version)))
        elif args.cmd == "unshadow":
            print(json.dumps(admin.unshadow(args.model)))
        elif args.cmd == "rollback":
            print(json.dumps({"model": args.model, "served": admin.rollback(args.model)}))
    except AdminError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
