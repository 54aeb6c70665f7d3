"""The package cut holds: every import arrow points down or sideways (docs/architecture.md),
and only ``inference/`` talks to Triton through tritonclient: the product, the demo, the
benches and the tests alike. Read from the source with ``ast``, so a lazy import inside a
function counts too."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ["pcb", "enhance", "inference", "serving", "export", "settings", "store", "batch", "gateway", "pi_edge",
            "demo", "bench", "model_repository"]

# package -> the project packages it may import (itself always)
MAY_IMPORT = {
    "pcb": set(),
    "enhance": {"pcb"},
    "inference": {"pcb"},
    "serving": {"pcb", "enhance", "inference"},
    # settings and store: `python -m export feedback` reads operators' corrections from the database
    "export": {"pcb", "enhance", "inference", "serving", "settings", "store"},
    "settings": {"pcb"},
    # pcb: a data migration rewrites stored verdict codes from the names with the taxonomy
    "store": {"settings", "pcb"},
    # serving: only cpu_priority, so a worker steps aside from the line as background models do
    "batch": {"pcb", "inference", "settings", "store", "serving"},
    "gateway": {"pcb", "enhance", "inference", "settings", "store", "batch", "serving"},
    "pi_edge": {"pcb"},
    "model_repository": {"pcb", "enhance", "serving"},
    # the line benches drive the gateway through the Pi's own sender (its in-flight bound and skips)
    "bench": {"pcb", "enhance", "inference", "serving", "export", "settings", "store", "batch", "gateway", "pi_edge"},
    "demo": {"pcb", "inference", "serving", "pi_edge", "gateway"},
}
# the repository's config format is tritonclient's protobuf: not a client
TRITON_CONFIG_PROTO = "tritonclient.grpc.model_config_pb2"
# the error classifier's unit test builds the very exceptions tritonclient raises
CLIENT_ALLOWED = {"tests/test_inference_contract.py": {"tritonclient.utils.InferenceServerException"}}
CLIENT_CHECKED = [p for p in PACKAGES if p != "inference"] + ["tests"]


def imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out |= {f"{node.module}.{a.name}" for a in node.names}
    return out


def files(package: str) -> list[Path]:
    return [p for p in (ROOT / package).rglob("*.py") if "__pycache__" not in p.parts]


@pytest.mark.parametrize("package", PACKAGES)
def test_imports_point_down(package):
    allowed = MAY_IMPORT[package] | {package}
    bad = []
    for path in files(package):
        for name in imports(path):
            top = name.split(".")[0]
            if top == "tests":  # nothing the product or the benches ship may lean on the tests
                bad.append(f"{path.relative_to(ROOT)} imports {name}")
                continue
            if top not in PACKAGES or top == package:
                continue
            if not any(name == a or name.startswith(a + ".") for a in allowed):
                bad.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not bad, "\n".join(sorted(set(bad)))


@pytest.mark.parametrize("package", ["settings", "store", "batch"])
def test_what_the_workers_share_never_imports_the_gateway(package):
    """A batch worker or a migration starts without the gateway: not its HTTP app, not even
    a settings module kept under it (the table above says so too; this names the rule)."""
    assert not {p for p in MAY_IMPORT[package] if p.split(".")[0] == "gateway"}
    bad = [f"{path.relative_to(ROOT)} imports {name}" for path in files(package) for name in imports(path)
           if name.split(".")[0] == "gateway"]
    assert not bad, "\n".join(sorted(set(bad)))


@pytest.mark.parametrize("package", CLIENT_CHECKED)
def test_only_inference_uses_the_triton_client(package):
    bad = []
    for path in files(package):
        allowed = CLIENT_ALLOWED.get(str(path.relative_to(ROOT)), set())
        for name in imports(path):
            if name.startswith("tritonclient") and not name.startswith(TRITON_CONFIG_PROTO) and name not in allowed:
                bad.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not bad, "\n".join(sorted(set(bad)))
