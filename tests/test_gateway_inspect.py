"""Gateway inspection routes against the real Triton server (SQLite, in-process pairing)."""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient

from pcb.synthetic import render_board
from settings.environment import get_settings
from tests.conftest import encode


@pytest.fixture(scope="module")
def gateway_env(triton, tmp_path_factory):
    d = tmp_path_factory.mktemp("gw")
    mp = pytest.MonkeyPatch()
    mp.setenv("TRITON_URL", triton.grpc_url)
    mp.setenv("DATABASE_URL", f"sqlite:///{d / 'store'}")
    mp.setenv("OUTBOX_PATH", str(d / "outbox.db"))
    mp.setenv("PAIRING_WINDOW_MS", "500")
    mp.setenv("ADMIN_TOKEN", "inspect-admin")
    mp.setenv("SEED_COMPAT", "true")
    mp.delenv("REDIS_URL", raising=False)
    get_settings.cache_clear()
    yield
    mp.undo()
    get_settings.cache_clear()


@pytest.fixture(scope="module")
def api(gateway_env):
    from gateway.main import create_app

    # operator routes need a role: the client carries the admin token (devices send theirs)
    with TestClient(create_app(), headers={"Authorization": "Bearer inspect-admin"}) as c:
        devices = c.app.state.devices
        _, c.left_key = devices.create("pi-left", "left", True)
        _, c.right_key = devices.create("pi-right", "right", False)
        yield c


def _auth(api, who="left"):
    return {"X-Device-Id": f"pi-{who}", "X-API-Key": api.left_key if who == "left" else api.right_key}


def _jpeg(seed=1, **kw):
    return encode(render_board(seed, **kw).image)


def test_health(api):
    r = api.get("/health")
    assert r.status_code == 200 and r.json()["triton"] is True


def test_paired_sides(api):
    r = api.post("/v1/inspect", headers=_auth(api, "right"),
                 files={"image": ("b.jpg", _jpeg(5, force=["short"]), "image/jpeg")}, data={"board_id": "B1"})
    assert r.status_code == 200, r.text
    assert r.json()["gpio"] is None
    left = api.post("/v1/inspect", headers=_auth(api), files={"image": ("b.jpg", _jpeg(6), "image/jpeg")},
                    data={"board_id": "B1", "side": "left"})
    body = left.json()
    assert body["board"]["pairing"] == "paired" and body["gpio"]["pin"] in (17, 22, 23, 27)
    assert body["model"] == {"name": "pcb_detector", "version": 1}
    assert set(body["timings_ms"]) == {"upload", "inference", "pairing_wait", "total"}


def test_inspect_dual(api):
    r = api.post("/v1/inspect/dual", headers=_auth(api),
                 files={"left": ("l.jpg", _jpeg(6), "image/jpeg"), "right": ("r.jpg", _jpeg(7), "image/jpeg")},
                 data={"board_id": "B2"})
    assert r.status_code == 200, r.text
    body = r.json()
    pins = {"normal": 23, "review": 24, "component_defect": 17, "solder_defect": 27, "discard": 22}
    assert body["gpio"]["pin"] == pins[body["verdict"]["code"]]


def test_unknown_device_and_wrong_key_are_401(api):
    files = {"image": ("b.jpg", _jpeg(), "image/jpeg")}
    for headers in ({"X-Device-Id": "pi-x", "X-API-Key": "nope"}, {"X-Device-Id": "pi-left", "X-API-Key": "wrong"},
                    {}):
        r = api.post("/v1/inspect", headers=headers, files=files, data={"board_id": "B9"})
        assert r.status_code == 401 and r.json()["code"] == "unknown_device"


def test_wrong_side_is_refused(api):
    r = api.post("/v1/inspect", headers=_auth(api, "right"), files={"image": ("b.jpg", _jpeg(), "image/jpeg")},
                 data={"board_id": "B8", "side": "left"})
    assert r.status_code == 400 and r.json()["code"] == "wrong_side"


def test_idempotent_retry(api):
    h = {**_auth(api, "right"), "Idempotency-Key": "retry-1"}
    a = api.post("/v1/inspect", headers=h, files={"image": ("b.jpg", _jpeg(11), "image/jpeg")}, data={"board_id": "B3"})
    b = api.post("/v1/inspect", headers=h, files={"image": ("b.jpg", _jpeg(11), "image/jpeg")}, data={"board_id": "B3"})
    assert a.status_code == b.status_code == 200 and a.json() == b.json()


@pytest.mark.parametrize("payload,ctype,status,code", [
    (b"hello world, not an image", "image/jpeg", 415, "unsupported_image"),
    (b"", "image/jpeg", 422, "empty_image"),
    (b"GIF89a....", "image/gif", 415, "unsupported_media_type"),
])
def test_bad_uploads_get_json_errors(api, payload, ctype, status, code):
    r = api.post("/v1/inspect", headers=_auth(api, "right"), files={"image": ("x", payload, ctype)},
                 data={"board_id": "B4"})
    assert r.status_code == status and r.json()["code"] == code


def test_truncated_jpeg_is_refused_by_the_pipeline(api):
    data = _jpeg(8)
    r = api.post("/v1/inspect", headers=_auth(api, "right"),
                 files={"image": ("t.jpg", data[: len(data) // 2], "image/jpeg")}, data={"board_id": "B5"})
    assert r.status_code == 422 and r.json()["code"] == "invalid_image"


def test_missing_fields(api):
    r = api.post("/v1/inspect", headers=_auth(api, "right"), files={"image": ("b.jpg", _jpeg(), "image/jpeg")},
                 data={"side": "top"})
    assert r.status_code == 422 and r.json()["code"] == "invalid_request"
    assert "board_id" in r.json()["fields"] and "side" in r.json()["fields"]


def test_rows_reach_the_database(api):
    import time

    from sqlalchemy import func, select

    from store.models import Inspection

    deadline = time.monotonic() + 10
    while api.app.state.outbox.depth() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert api.app.state.outbox.depth() == 0
    with api.app.state.sessions() as s:
        n = s.scalar(select(func.count()).select_from(Inspection))
    assert n >= 4  # B1 x2, B2, B3 once (the retry wrote nothing)


def _b64(data: bytes) -> str:
    import base64

    return base64.b64encode(data).decode()


def test_seed_predict_shapes(api):
    # switched on for this gateway (SEED_COMPAT=true); a call acts as the device whose key it sends
    r = api.post("/predict", headers=_auth(api, "right"),
                 json={"frame": _b64(_jpeg(20)), "camera_id": "right", "timestamp": 1.5})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "ok" and body["camera_id"] == "right" and body["timestamp"] == 1.5
    assert body["defect_type"] in {"정상", "부품불량", "납땜불량", "폐기"}
    assert isinstance(body["boxes"], list) and "inference_time_ms" in body
    d = api.post("/predict_dual", headers=_auth(api),
                 json={"frame_left": _b64(_jpeg(21)), "frame_right": _b64(_jpeg(22))}).json()
    labels = {"정상": 23, "부품불량": 17, "납땜불량": 27, "폐기": 22}
    assert d["gpio_signal"]["pin"] == labels[d["final_defect_type"]]
    assert set(d["left_result"]) == {"defect_type", "confidence", "boxes"}


def test_seed_predict_bad_input(api):
    h = _auth(api)
    assert api.post("/predict", headers=h, json={"frame": "%%%not-base64"}).json()["code"] == "invalid_base64"
    assert api.post("/predict", headers=h, json={"camera_id": "left"}).json()["code"] == "invalid_request"
    r = api.post("/predict", headers=h, json={"frame": _b64(b"not an image at all")})
    assert r.status_code in (415, 422) and "code" in r.json()


def test_operator_history_statistics_and_images(api):
    # a board that surely has a defect on the left, so its image is kept (policy: defects)
    r = api.post("/v1/inspect/dual", headers=_auth(api),
                 files={"left": ("l.jpg", _jpeg(31, force=["missing_component", "short"]), "image/jpeg"),
                        "right": ("r.jpg", _jpeg(32), "image/jpeg")}, data={"board_id": "B-img"})
    iid = r.json()["inspection_id"]
    page = api.get("/api/inspections", params={"page": 1, "page_size": 5}).json()
    assert page["total"] >= 1 and len(page["items"]) <= 5
    assert api.get("/api/inspections", params={"verdict": "bogus"}).status_code == 422
    stats = api.get("/api/statistics").json()
    assert set(stats) >= {"total_inspections", "normal_count", "review_count", "component_defect_count",
                          "solder_defect_count", "discard_count", "defect_rate"}
    assert stats["total_inspections"] == (stats["normal_count"] + stats["review_count"]
                                          + stats["component_defect_count"] + stats["solder_defect_count"]
                                          + stats["discard_count"])
    if r.json()["left"]["verdict"]["code"] != "normal":
        import time

        deadline = time.monotonic() + 10
        while api.app.state.outbox.depth() and time.monotonic() < deadline:
            time.sleep(0.1)
        img = api.get(f"/api/defect-images/{iid}", params={"side": "left"})
        assert img.status_code == 200 and img.headers["content-type"] == "image/jpeg"
        raw = api.get(f"/api/defect-images/{iid}", params={"side": "left", "annotated": False})
        assert raw.content[:2] == b"\xff\xd8" and raw.content != img.content
    assert api.get("/api/defect-images/nope").json()["code"] == "image_not_found"
    status = api.get("/api/system-status").json()
    assert status["database"] is True and status["triton"] is True
    assert {d["device_id"]: d["online"] for d in status["devices"]}["pi-left"] is True


def test_metrics_exposes_gateway_series(api):
    text = api.get("/metrics").text
    for series in ("gateway_requests_total", "gateway_request_duration_seconds_bucket",
                   "gateway_verdicts_total", "gateway_triton_duration_seconds_bucket",
                   "gateway_pairing_total", "gateway_outbox_depth", "gateway_outbox_write_seconds_bucket"):
        assert series in text, series
    assert 'outcome="paired"' in text


def test_request_id_is_echoed(api):
    r = api.get("/health", headers={"X-Request-Id": "abc123"})
    assert r.headers["X-Request-Id"] == "abc123"


def test_partial_board_is_logged(api):
    import time

    r = api.post("/v1/inspect", headers=_auth(api), files={"image": ("b.jpg", _jpeg(40), "image/jpeg")},
                 data={"board_id": "B-alone"})
    assert r.json()["board"]["partial"] is True
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        logs = api.get("/api/system-logs", params={"level": "warning"}).json()["items"]
        if any("B-alone" in x["message"] and x["source"] == "pairing" for x in logs):
            break
        time.sleep(0.2)
    else:
        raise AssertionError("no system log for the partial board")


def test_history_pages_by_cursor_as_deep_as_it_goes(api):
    """The cursor walks the whole history newest first without offsets or counts; page
    numbers stay for the seed's client up to a bounded depth."""
    for i in range(7):
        api.post("/v1/inspect", headers=_auth(api, "right"), files={"image": ("r.jpg", _jpeg(60 + i), "image/jpeg")},
                 data={"board_id": f"CUR-{i}"})
    time.sleep(1.5)  # outbox -> database
    first = api.get("/api/inspections", params={"page_size": 3}).json()
    total = first["total"]
    seen, cursor = [i["id"] for i in first["items"]], first["next_cursor"]
    while cursor:
        page = api.get("/api/inspections", params={"page_size": 3, "cursor": cursor}).json()
        assert page["total"] is None  # no count per page
        seen += [i["id"] for i in page["items"]]
        cursor = page["next_cursor"]
    assert len(seen) == len(set(seen)) == total >= 7
    stamps = [i["created_at"] for i in api.get("/api/inspections", params={"page_size": 500}).json()["items"]]
    assert stamps == sorted(stamps, reverse=True)
    bad = api.get("/api/inspections", params={"cursor": "%%%"})
    assert bad.status_code == 422 and bad.json()["code"] == "invalid_cursor"
    deep = api.get("/api/inspections", params={"page": 5000, "page_size": 500})
    assert deep.status_code == 422 and deep.json()["code"] == "page_too_deep"
