"""Renders the kustomizations in deploy/k8s/ without a kustomize binary: the subset of
kustomize they use (resources, namespace, labels, images, replicas, strategic-merge and JSON
patches). tests/test_k8s.py checks its output against ``kubectl kustomize`` where kubectl is
installed, so this stays honest; where it is not, the tests still render and validate."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import yaml

CLUSTER_SCOPED = {"Namespace", "PersistentVolume", "StorageClass", "ClusterRole", "ClusterRoleBinding",
                  "CustomResourceDefinition", "PriorityClass"}
WORKLOADS = {"Deployment", "StatefulSet", "ReplicaSet", "DaemonSet", "Job"}


def load_docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def render(root: Path) -> list[dict]:
    k = yaml.safe_load((root / "kustomization.yaml").read_text())
    unknown = set(k) - {"apiVersion", "kind", "resources", "namespace", "labels", "images", "replicas", "patches"}
    if unknown:
        raise NotImplementedError(f"{root}: kustomize_lite does not do {sorted(unknown)}")
    objs: list[dict] = []
    for res in k.get("resources", []):
        path = (root / res).resolve()
        objs += render(path) if path.is_dir() else load_docs(path)
    for p in k.get("patches", []):
        text = (root / p["path"]).read_text() if "path" in p else p["patch"]
        patch = yaml.safe_load(text)
        if isinstance(patch, list):  # JSON 6902
            for obj in _targets(objs, p["target"]):
                for op in patch:
                    _json_op(obj, op)
        else:  # strategic merge, found by kind and name
            target = p.get("target") or {"kind": patch["kind"], "name": patch["metadata"]["name"]}
            hits = _targets(objs, target)
            if not hits:
                raise LookupError(f"patch {p} matches nothing")
            for obj in hits:
                merged = _merge(obj, patch)
                obj.clear()
                obj.update(merged)
    for label in k.get("labels", []):
        if label.get("includeSelectors") or label.get("includeTemplates"):
            raise NotImplementedError("labels into selectors/templates")
        for obj in objs:
            obj["metadata"].setdefault("labels", {}).update(label["pairs"])
    for img in k.get("images", []):
        for obj in objs:
            for c in _containers(obj):
                name, sep, tag = _split_image(c["image"])
                if name == img["name"]:
                    c["image"] = img.get("newName", name) + (":" + str(img["newTag"]) if "newTag" in img else sep + tag)
    for rep in k.get("replicas", []):
        for obj in objs:
            if obj["kind"] in WORKLOADS and obj["metadata"]["name"] == rep["name"]:
                obj["spec"]["replicas"] = rep["count"]
    if "namespace" in k:
        for obj in objs:
            if obj["kind"] not in CLUSTER_SCOPED:
                obj["metadata"]["namespace"] = k["namespace"]
    return objs


def _targets(objs: list[dict], target: dict) -> list[dict]:
    def hit(o: dict) -> bool:
        return ((not target.get("kind") or o["kind"] == target["kind"])
                and (not target.get("name") or re.fullmatch(target["name"], o["metadata"]["name"]) is not None))
    return [o for o in objs if hit(o)]


def _merge(base, patch):
    """Strategic merge as kustomize does it for these manifests: maps merge, lists of named
    maps (containers, env, ports, volumes) merge by name, other lists are replaced."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for key, value in patch.items():
            out[key] = _merge(base[key], value) if key in base else copy.deepcopy(value)
        return out
    if (isinstance(base, list) and isinstance(patch, list) and patch
            and all(isinstance(x, dict) and "name" in x for x in base + patch)):
        out = [dict(x) for x in base]
        for item in patch:
            i = next((n for n, x in enumerate(out) if x["name"] == item["name"]), None)
            if i is None:
                out.append(copy.deepcopy(item))
            else:
                out[i] = _merge(out[i], item)
        return out
    return copy.deepcopy(patch)


def _json_op(obj: dict, op: dict) -> None:
    *parents, last = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].lstrip("/").split("/")]
    node = obj
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    if op["op"] in ("add", "replace"):
        if isinstance(node, list):
            if op["op"] == "add":
                node.insert(len(node) if last == "-" else int(last), copy.deepcopy(op["value"]))
            else:
                node[int(last)] = copy.deepcopy(op["value"])
        else:
            if op["op"] == "replace" and last not in node:
                raise KeyError(f"replace of missing {op['path']} in {obj['metadata']['name']}")
            node[last] = copy.deepcopy(op["value"])
    elif op["op"] == "remove":
        del node[int(last) if isinstance(node, list) else last]
    else:
        raise NotImplementedError(op["op"])


def _containers(obj: dict) -> list[dict]:
    spec = obj.get("spec", {})
    pod = spec.get("template", {}).get("spec", {}) if obj["kind"] in WORKLOADS else {}
    return pod.get("containers", []) + pod.get("initContainers", [])


def _split_image(image: str) -> tuple[str, str, str]:
    if "@" in image:
        name, digest = image.split("@", 1)
        return name, "@", digest
    name, sep, tag = image.rpartition(":")
    if not sep or "/" in tag:  # no tag, or the colon was a registry port
        return image, "", ""
    return name, ":", tag
