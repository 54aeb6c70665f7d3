"""Admin routes: token required; device management; model hot-swap through Triton."""

from __future__ import annotations

from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient

from settings.environment import get_settings
from tests.conftest import make_repository, start_triton

TOKEN = "s3cret-admin"


@pytest.fixture(scope="module")
def admin_api(tmp_path_factory):
    d = tmp_path_factory.mktemp("adm")
    repo = make_repository(d / "model_repository")
    srv = start_triton(repo, d / "triton.log")
    mp = pytest.MonkeyPatch()
    for k, v in {"TRITON_URL": srv.grpc_url, "TRITON_HTTP_URL": srv.http_url, "MODEL_REPOSITORY": str(repo),
                 "DATABASE_URL": f"sqlite:///{d / 'g.db'}", "OUTBOX_PATH": str(d / "o.db"),
                 "ADMIN_TOKEN": TOKEN}.items():
        mp.setenv(k, v)
    get_settings.cache_clear()
    from gateway.main import create_app

    try:
        with TestClient(create_app()) as c:
            c.repo = repo
            yield c
    finally:
        srv.stop()
        mp.undo()
        get_settings.cache_clear()


H = {"Authorization": f"Bearer {TOKEN}"}


def test_admin_needs_the_token(admin_api):
    assert admin_api.get("/admin/models").status_code == 401
    r = admin_api.get("/admin/models", headers={"Authorization": "Bearer nope"})
    assert r.status_code == 401 and r.json()["code"] == "unauthorized"


def test_device_lifecycle(admin_api):
    r = admin_api.post("/admin/devices", headers=H, json={"device_id": "pi-9", "side": "left", "drives_gpio": True})
    assert r.status_code == 201
    key = r.json()["api_key"]
    hb = admin_api.post("/v1/heartbeat", headers={"X-Device-Id": "pi-9", "X-API-Key": key})
    assert hb.status_code == 200 and hb.json()["drives_gpio"] is True
    listed = {d["device_id"]: d for d in admin_api.get("/admin/devices", headers=H).json()}
    assert listed["pi-9"]["last_seen"] is not None
    assert admin_api.delete("/admin/devices/pi-9", headers=H).json()["enabled"] is False
    assert admin_api.post("/v1/heartbeat", headers={"X-Device-Id": "pi-9", "X-API-Key": key}).status_code == 401
    bad = admin_api.post("/admin/devices", headers=H, json={"device_id": "x y", "side": "top"})
    assert bad.status_code == 422 and bad.json()["code"] == "invalid_request"


def test_model_hot_swap_through_the_gateway(admin_api):
    from export import onnx_target
    from tests.conftest import WEIGHTS

    listed = admin_api.get("/admin/models", headers=H)
    assert listed.status_code == 200, listed.text
    rows = {r["model"]: r for r in listed.json()}
    assert rows["pcb_detector"]["ready"] == [1]
    onnx_target.add_version(admin_api.repo, WEIGHTS, 320, 16)
    r = admin_api.post("/admin/models/pcb_detector/promote", headers=H, json={"version": 2})
    assert r.status_code == 200 and r.json()["served"] == [2]
    rows = {r["model"]: r for r in admin_api.get("/admin/models", headers=H).json()}
    assert rows["pcb_detector"]["ready"] == [2]
    r = admin_api.post("/admin/models/pcb_detector/promote", headers=H, json={"version": 7})
    assert r.status_code == 400 and r.json()["code"] == "model_admin_refused"
    assert admin_api.post("/admin/models/pcb_detector/rollback", headers=H).json()["served"] == [1]
    assert admin_api.post("/admin/models/pcb_detector/load", headers=H, json={"version": 2}).json()["served"] == [1, 2]
    assert admin_api.post("/admin/models/pcb_detector/unload", headers=H, json={"version": 2}).json()["served"] == [1]
    assert admin_api.post("/admin/models/pcb_detector/explode", headers=H, json={"version": 2}).status_code == 422


def test_taxonomy_for_edges(admin_api):
    t = admin_api.get("/v1/taxonomy", headers=H).json()  # a device's key, or any person's role
    assert {v["code"]: v["gpio"]["pin"] for v in t["verdicts"]} == {
        "normal": 23, "review": 24, "component_defect": 17, "solder_defect": 27, "discard": 22}


def test_config_roundtrip(admin_api):
    r = admin_api.put("/admin/config", headers=H, json={"values": {"line_speed_mpm": "12", "shift": "night"}})
    assert r.status_code == 200
    assert admin_api.get("/api/config", headers=H).json() == {"line_speed_mpm": "12", "shift": "night"}


def test_model_names_and_numbers_outside_what_is_stored_are_422(admin_api):
    """A model name is a Triton model name or a 422, before the repository or the database;
    a version or an offset past what the database stores is a 422 (schemathesis found
    ``?version=2**63`` making the shadow report's query an OverflowError, a 500)."""
    for name in ("\U000a7853O\x17(", ".hidden", "a b", "x" * 129, "%2e%2e"):
        for method, path, body in (("GET", "shadow", None), ("POST", "shadow", {"version": 1}),
                                   ("DELETE", "shadow", None), ("POST", "rollback", None),
                                   ("POST", "promote", {"version": 1})):
            r = admin_api.request(method, f"/admin/models/{quote(name, safe='')}/{path}", headers=H, json=body)
            assert r.status_code in (404, 422), (name, method, path, r.status_code, r.text)
            assert r.json()["code"] in ("invalid_request", "not_found"), r.text
    # numbers past what the database stores are 422s too (2**63 was an OverflowError, a 500)
    huge = 2**63
    for method, path, kw in (("GET", f"/admin/models/pcb_detector/shadow?version={huge}", {}),
                             ("POST", "/admin/models/pcb_detector/promote", {"json": {"version": huge}}),
                             ("POST", "/admin/models/pcb_detector/shadow", {"json": {"version": huge}}),
                             ("GET", f"/api/v1/jobs/x/items?offset={huge}", {})):
        r = admin_api.request(method, path, headers=H, **kw)
        assert r.status_code == 422 and r.json()["code"] == "invalid_request", (path, r.text)
    # the batch lane follows pcb_detector; it is never promoted on its own
    r = admin_api.post("/admin/models/pcb_detector_batch/promote", headers=H, json={"version": 1})
    assert r.status_code == 400 and r.json()["code"] == "model_admin_refused" and "follows" in r.json()["message"]
