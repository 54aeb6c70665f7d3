"""docker-compose.yml checked by loading it (no Docker engine on this machine)."""

import yaml

from tests.conftest import ROOT


def test_compose_triton_service():
    doc = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    t = doc["services"]["triton"]
    cmd = " ".join(t["command"])
    assert "--model-control-mode=explicit" in cmd and "--model-repository=/models" in cmd
    assert any(v.endswith(":/models") for v in t["volumes"])
    dev = t["deploy"]["resources"]["reservations"]["devices"][0]
    assert dev["driver"] == "nvidia" and "gpu" in dev["capabilities"]
    assert "/v2/health/ready" in " ".join(t["healthcheck"]["test"])
    assert {"8000:8000", "8001:8001", "8002:8002"} <= set(t["ports"])
    assert (ROOT / t["build"]["dockerfile"]).exists()
