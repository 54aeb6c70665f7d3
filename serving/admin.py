"""Hot-swap for admins: list, load, unload and promote detector versions in a running Triton.

``python -m serving.admin [--url HOST:PORT] [--repository DIR] COMMAND``

  list                       models, versions on disk, what is loaded and served
  load MODEL [VERSION]       load a model, or add VERSION next to the served ones (canary)
  promote MODEL VERSION      serve only VERSION; the others drain and unload
  unload MODEL [VERSION]     unload a model, or stop serving one VERSION
  rollback MODEL             promote the highest served version below the current one

How a swap stays hitless: the version policy of ``config.pbtxt`` says which versions are
served. Each command rewrites it on disk (so a restart serves the same) and asks Triton to
load the model again through its repository API. Triton loads the new version set *before*
it retires the old one, and requests already running on an old version finish there; the
ensembles ask for version -1 (the highest served) and so move to the new version as soon
as it is ready. Ensembles are never unloaded, so they never report "not ready".
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from inference.repository_api import RepositoryAPI, RepositoryError
from serving.repository import read_config, served_versions, versions, write_config

ROOT = Path(__file__).resolve().parent.parent


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
            self._load(model)
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
            return []
        self._set_policy(model, [v for v in self.served(model) if v != version])
        return self.served(model)

    def rollback(self, model: str) -> list[int]:
        current = max(self.served(model))
        older = [v for v in versions(self._dir(model)) if v < current]
        if not older:
            raise AdminError(f"{model}: no version below {current} to roll back to")
        return self.promote(model, older[-1])


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
    s = sub.add_parser("rollback")
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
            print(json.dumps({"model": args.model, "served": admin.promote(args.model, args.version)}))
        elif args.cmd == "rollback":
            print(json.dumps({"model": args.model, "served": admin.rollback(args.model)}))
    except AdminError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
