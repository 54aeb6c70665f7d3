"""Gateway inspection routes against the real Triton server (foundation of issue 4)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from gateway.core.config import get_settings
from pcb.synthetic import render_board
from tests.conftest import encode


@pytest.fixture(scope="module")
def api(triton, monkeypatch_module):
    monkeypatch_module.setenv("TRITON_URL", triton.grpc_url)
    get_settings.cache_clear()
    from gateway.main import create_app

    with TestClient(create_app()) as c:
        yield c
    get_settings.cache_clear()


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def _jpeg(seed=1, **kw):
    return encode(render_board(seed, **kw).image)


def test_health(api):
    r = api.get("/health")
    assert r.status_code == 200 and r.json()["triton"] is True


def test_inspect_one_side(api):
    r = api.post("/v1/inspect", files={"image": ("b.jpg", _jpeg(5, force=["short"]), "image/jpeg")},
                 data={"device_id": "pi-1", "side": "left", "board_id": "B1"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["verdict"]["code"] in {"normal", "component_defect", "solder_defect", "discard"}
    assert body["model"] == {"name": "pcb_detector", "version": 1}
    assert set(body["timings_ms"]) == {"read", "inference", "total"}


def test_inspect_dual(api):
    r = api.post("/v1/inspect/dual",
                 files={"left": ("l.jpg", _jpeg(6), "image/jpeg"), "right": ("r.jpg", _jpeg(7), "image/jpeg")},
                 data={"device_id": "pi-1", "board_id": "B2"})
    assert r.status_code == 200, r.text
    body = r.json()
    pins = {"normal": 23, "component_defect": 17, "solder_defect": 27, "discard": 22}
    assert body["gpio"]["pin"] == pins[body["verdict"]["code"]]


@pytest.mark.parametrize("payload,ctype,status,code", [
    (b"hello world, not an image", "image/jpeg", 415, "unsupported_image"),
    (b"", "image/jpeg", 422, "empty_image"),
    (b"GIF89a....", "image/gif", 415, "unsupported_media_type"),
])
def test_bad_uploads_get_json_errors(api, payload, ctype, status, code):
    r = api.post("/v1/inspect", files={"image": ("x", payload, ctype)},
                 data={"device_id": "pi-1", "side": "left", "board_id": "B3"})
    assert r.status_code == status and r.json()["code"] == code


def test_truncated_jpeg_is_refused_by_the_pipeline(api):
    data = _jpeg(8)
    r = api.post("/v1/inspect", files={"image": ("t.jpg", data[: len(data) // 2], "image/jpeg")},
                 data={"device_id": "pi-1", "side": "left", "board_id": "B4"})
    assert r.status_code == 422 and r.json()["code"] == "invalid_image"


def test_missing_fields(api):
    r = api.post("/v1/inspect", files={"image": ("b.jpg", _jpeg(), "image/jpeg")}, data={"side": "top"})
    assert r.status_code == 422 and r.json()["code"] == "invalid_request"
    assert "device_id" in r.json()["fields"] and "side" in r.json()["fields"]
