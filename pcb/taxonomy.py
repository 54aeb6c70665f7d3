"""The defect taxonomy, loaded once from ``taxonomy.yaml`` (the single source of truth).

Verdict codes are the verdicts' severities (0 = normal ... 3 = discard), so "most severe
wins" is a plain ``max`` over codes wherever they travel as integers (Triton tensors, DB).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import yaml

TAXONOMY_FILE = Path(__file__).with_name("taxonomy.yaml")


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
    )


@lru_cache(maxsize=1)
def load(path: str | Path = TAXONOMY_FILE) -> Taxonomy:
    with open(path, encoding="utf-8") as f:
        return parse(yaml.safe_load(f))
