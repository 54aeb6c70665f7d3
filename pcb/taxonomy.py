"""The defect taxonomy, loaded once from ``taxonomy.yaml`` (the single source of truth).

Verdict codes are the verdicts' severities (0 = normal ... 4 = discard), so "most severe
wins" is a plain ``max`` over codes wherever they travel as integers (Triton tensors, DB).
The verdict with code 0 is the one that passes a board (``Taxonomy.ok``); every other is a
defect. Verdict lists (statistics, the dashboard, filters) come from here, never spelled out.

A deployment may use its own file: ``PCB_TAXONOMY`` (a path) replaces the packaged one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import yaml

TAXONOMY_FILE = Path(__file__).with_name("taxonomy.yaml")
TAXONOMY_ENV = "PCB_TAXONOMY"


@dataclass(frozen=True)
class Gpio:
    pin: int
    duration_ms: int


@dataclass(frozen=True)
class Verdict:
    name: str
    label: str  # the seed's Korean display label
    code: int  # == severity; higher is more severe
    gpio: Gpio


@dataclass(frozen=True)
class DefectClass:
    id: int
    name: str
    category: str
    verdict: Verdict


@dataclass(frozen=True)
class Taxonomy:
    classes: tuple[DefectClass, ...]
    verdicts: tuple[Verdict, ...]  # indexed by code
    no_detection: Verdict
    no_detection_confidence: float
    anomaly: Verdict  # an anomaly no detection explains (pcb/review.py)

    @property
    def ok(self) -> Verdict:
        """The verdict that passes a board (code 0); every other verdict is a defect."""
        return self.verdicts[0]

    @property
    def verdict_names(self) -> list[str]:
        """Verdict names in code order (``normal`` first)."""
        return [v.name for v in self.verdicts]

    @property
    def class_names(self) -> list[str]:
        return [c.name for c in self.classes]

    def verdict(self, key: str | int) -> Verdict:
        if isinstance(key, int):
            return self.verdicts[key]
        for v in self.verdicts:
            if v.name == key:
                return v
        raise KeyError(f"unknown verdict {key!r}")

    def class_by_name(self, name: str) -> DefectClass:
        for c in self.classes:
            if c.name == name:
                return c
        raise KeyError(f"unknown defect class {name!r}")

    def class_verdict_codes(self) -> list[int]:
        """Verdict code per class id, for vectorised lookups."""
        return [c.verdict.code for c in self.classes]


def parse(doc: dict) -> Taxonomy:
    verdicts: dict[str, Verdict] = {}
    for name, v in doc["verdicts"].items():
        verdicts[name] = Verdict(
            name=name,
            label=v["label"],
            code=int(v["severity"]),
            gpio=Gpio(int(v["gpio"]["pin"]), int(v["gpio"]["duration_ms"])),
        )
    codes = sorted(v.code for v in verdicts.values())
    if codes != list(range(len(codes))):
        raise ValueError(f"verdict severities must be 0..N-1 without gaps, got {codes}")

    category_of: dict[str, str] = {}
    for cat, c in doc["categories"].items():
        if c["verdict"] not in verdicts:
            raise ValueError(f"category {cat!r} maps to unknown verdict {c['verdict']!r}")
        for cls in c["classes"]:
            if cls in category_of:
                raise ValueError(f"class {cls!r} is in two categories")
            category_of[cls] = cat

    classes = []
    for i, name in enumerate(doc["classes"]):
        if name not in category_of:
            raise ValueError(f"class {name!r} has no category")
        cat = category_of[name]
        classes.append(DefectClass(i, name, cat, verdicts[doc["categories"][cat]["verdict"]]))
    extra = set(category_of) - set(doc["classes"])
    if extra:
        raise ValueError(f"categories name classes not in the class list: {sorted(extra)}")

    nd = doc["no_detection"]
    return Taxonomy(
        classes=tuple(classes),
        verdicts=tuple(sorted(verdicts.values(), key=lambda v: v.code)),
        no_detection=verdicts[nd["verdict"]],
        no_detection_confidence=float(nd["confidence"]),
        anomaly=verdicts[(doc.get("anomaly") or {}).get("verdict", nd["verdict"])],
    )


def load(path: str | Path | None = None) -> Taxonomy:
    """The taxonomy in ``path``, else in the file ``PCB_TAXONOMY`` names, else the packaged
    ``taxonomy.yaml``; each file is parsed once (the environment is read on every call, so a
    process that sets it later gets its file, and everyone else keeps the cached one)."""
    return _load(Path(path or os.environ.get(TAXONOMY_ENV) or TAXONOMY_FILE))


@lru_cache(maxsize=8)
def _load(path: Path) -> Taxonomy:
    with open(path, encoding="utf-8") as f:
        return parse(yaml.safe_load(f))
