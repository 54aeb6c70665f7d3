"""The live dashboard in a real headless Chromium (Debian's, driven by Playwright): it loads,
shows counts, fills up live (SSE) while inspections arrive, shows thumbnails with boxes and
the Pi status; a screenshot is taken and checked."""

from __future__ import annotations

import httpx
import numpy as np
import pytest

from pcb import taxonomy
from pcb.synthetic import render_board
from tests.browser import ARGS, CHROMIUM, wait_until
from tests.conftest import ROOT, encode
from tests.gateway_server import GatewayServer

TOKEN = "dash-admin"


@pytest.fixture(scope="module")
def gateway(triton, tmp_path_factory):
    d = tmp_path_factory.mktemp("dash")
    srv = GatewayServer({"TRITON_URL": triton.grpc_url, "DATABASE_URL": f"sqlite:///{d / 'g.db'}",
                         "OUTBOX_PATH": str(d / "o.db"), "IMAGE_DIR": str(d / "img"), "IMAGE_POLICY": "all",
                         "ADMIN_TOKEN": TOKEN, "PAIRING_WINDOW_MS": "400"}, d / "gateway.log").start()
    try:
        yield srv
    finally:
        srv.stop()


def _register(url: str, device: str, side: str, gpio: bool) -> str:
    r = httpx.post(f"{url}/admin/devices", headers={"Authorization": f"Bearer {TOKEN}"},
                   json={"device_id": device, "side": side, "drives_gpio": gpio})
    return r.json()["api_key"]


def _sign_in(page, url: str, key: str = TOKEN) -> None:
    """The dashboard needs a viewer: the login page exchanges the key for a session cookie."""
    page.goto(url + "/")
    assert "/login" in page.url  # no session yet: sent to sign in
    page.fill("#key", key)
    page.click("button[type=submit]")
    page.wait_for_url(url + "/")


def test_dashboard_fills_up_live(gateway):
    from playwright.sync_api import sync_playwright

    left = _register(gateway.url, "pi-left", "left", True)
    right = _register(gateway.url, "pi-right", "right", False)
    shots = ROOT / "build" / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        _sign_in(page, gateway.url)
        page.goto(gateway.url + "/")
        page.wait_for_selector("#conn.live", timeout=15000)
        assert page.locator(".card[data-verdict]").count() == len(taxonomy.load().verdicts)

        with httpx.Client(base_url=gateway.url, timeout=30) as c:
            for b in range(4):
                board = f"DASH-{b}"
                force = [["missing_component"], ["solder_bridge"], ["spurious_copper"], []][b]
                c.post("/v1/inspect", headers={"X-Device-Id": "pi-right", "X-API-Key": right},
                       files={"image": ("r.jpg", encode(render_board(400 + b, force=force).image), "image/jpeg")},
                       data={"board_id": board})
                r = c.post("/v1/inspect", headers={"X-Device-Id": "pi-left", "X-API-Key": left},
                           files={"image": ("l.jpg", encode(render_board(500 + b).image), "image/jpeg")},
                           data={"board_id": board})
                assert r.status_code == 200

        wait_until(page, "document.getElementById('total').textContent === '4'")
        wait_until(page, "document.querySelectorAll('#recent .item').length >= 8")
        # every thumbnail loads (boxes drawn server-side), also those answered a moment ago
        wait_until(page, "[...document.querySelectorAll('#recent img')].length >= 8 && "
                         "[...document.querySelectorAll('#recent img')].every(i => i.complete && i.naturalWidth > 0)")
        page.wait_for_selector("tr[data-device='pi-left'] .online", timeout=10000)
        counts = sum(int(page.inner_text(f"#count-{v}")) for v in
                     ("normal", "component_defect", "solder_defect", "discard"))
        assert counts == 4
        assert page.inner_text("#defect-rate").endswith("%")
        path = shots / "dashboard.png"
        page.screenshot(path=str(path), full_page=True)
        browser.close()

    import cv2

    img = cv2.imread(str(path))
    assert img is not None and img.shape[1] == 1400 and img.shape[0] >= 900
    assert float(np.std(img)) > 10  # not a blank page


def test_dashboard_shows_batch_job_progress(gateway):
    from playwright.sync_api import sync_playwright

    files = [("files", (f"{i}.jpg", encode(render_board(700 + i).image), "image/jpeg")) for i in range(6)]
    files.append(("files", ("broken.jpg", b"not a picture", "image/jpeg")))
    r = httpx.post(f"{gateway.url}/api/v1/jobs", files=files, data={"priority": "high", "name": "lot-42"}, timeout=30,
                   headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 201
    job = r.json()["job_id"]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        _sign_in(page, gateway.url)
        page.goto(gateway.url + "/")
        row = f"tr[data-job='{job}']"
        page.wait_for_selector(f"{row}[data-state='completed']", timeout=30000)
        assert page.inner_text(f"{row} .pct") == "100%"
        assert "6 / 1 / 0" in page.inner_text(row) and "high" in page.inner_text(row)
        page.locator("#jobs-section").screenshot(path=str(ROOT / "build" / "screenshots" / "dashboard_jobs.png"))
        browser.close()


def test_server_data_is_text_never_markup(gateway):
    """Stored XSS: a batch job named like a script is shown as its text, nothing runs, and the
    page is served with a Content-Security-Policy that allows no inline script."""
    from playwright.sync_api import sync_playwright

    name = '<img src=x onerror="window.__xss=1"><script>window.__xss=2</script>'
    files = [("files", ("a.jpg", encode(render_board(800).image), "image/jpeg"))]
    r = httpx.post(f"{gateway.url}/api/v1/jobs", files=files, data={"name": name}, timeout=30,
                   headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 201, r.text
    job = r.json()["job_id"]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page()
        _sign_in(page, gateway.url)
        response = page.goto(gateway.url + "/")
        csp = response.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp
        cell = page.locator(f"tr[data-job='{job}'] td").first
        cell.wait_for(timeout=15000)
        assert cell.inner_text() == name  # the text itself
        page.wait_for_timeout(500)
        assert page.evaluate("window.__xss") is None  # and nothing ran
        assert page.locator("tr[data-job] img").count() == 0
        browser.close()


def test_an_operator_marks_a_verdict_wrong_on_the_board_view(gateway):
    """Issue 18: "mark wrong" on a recent board opens the board view; a box dragged on the
    image is sent in the image's own pixels, stored with who marked it. A viewer gets the
    gateway's refusal as text."""
    from playwright.sync_api import sync_playwright

    admin = {"Authorization": f"Bearer {TOKEN}"}
    keys = {role: httpx.post(f"{gateway.url}/admin/principals", headers=admin,
                             json={"name": f"line-{role}", "role": role}).json()["api_key"]
            for role in ("operator", "viewer")}
    dev = _register(gateway.url, "pi-mark", "left", False)
    r = httpx.post(f"{gateway.url}/v1/inspect", headers={"X-Device-Id": "pi-mark", "X-API-Key": dev}, timeout=30,
                   files={"image": ("m.jpg", encode(render_board(900, size=(640, 480),
                                                                force=["missing_component", "solder_bridge"]).image),
                                    "image/jpeg")},
                   data={"board_id": "MARK-1"})
    assert r.status_code == 200
    iid = r.json()["inspection_id"]
    found = [(d["class"], [round(v) for v in d["box"]]) for d in r.json()["detections"]]
    item = f"#recent .item[data-id='{iid}']"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        _sign_in(page, gateway.url, keys["operator"])
        page.goto(gateway.url + "/")
        page.click(f"{item} button.mark", timeout=15000)
        page.select_option("#bv-kind", "false_accept")
        page.select_option("#bv-class", "short")
        wait_until(page, "document.getElementById('bv-img').naturalWidth === 640")
        # the detector's boxes are pre-filled (the labels must hold every defect on the image)
        wait_until(page, f"document.querySelectorAll('#bv-boxes .box').length === {len(found)}")
        box = page.locator("#bv-img").bounding_box()  # shown scaled: drag over its middle quarter
        page.mouse.move(box["x"] + box["width"] * 0.25, box["y"] + box["height"] * 0.25)
        page.mouse.down()
        page.mouse.move(box["x"] + box["width"] * 0.75, box["y"] + box["height"] * 0.75, steps=4)
        page.mouse.up()
        assert page.locator("#bv-boxes .box").count() == len(found) + 1
        assert found  # the forced defects were detected: the removal below runs
        if found:  # a wrong one is taken out
            page.click("#bv-list .boxdel >> nth=0")
            assert page.locator("#bv-boxes .box").count() == len(found)
            found = found[1:]
        page.fill("#bv-note", "a short under the connector")
        page.click("#bv-send")
        wait_until(page, "document.getElementById('bv-status').textContent.startsWith('saved')")
        assert "line-operator" in page.inner_text("#bv-status")
        shots = ROOT / "build" / "screenshots"
        shots.mkdir(parents=True, exist_ok=True)
        page.locator("#board-view").screenshot(path=str(shots / "dashboard_board_view.png"))
        browser.close()
        stored = httpx.get(f"{gateway.url}/api/feedback?inspection_id={iid}", headers=admin).json()["items"]
        assert len(stored) == 1 and stored[0]["kind"] == "false_accept" and stored[0]["principal"] == "line-operator"
        assert [(b["class"], b["box"]) for b in stored[0]["boxes"][:-1]] == found
        (x1, y1, x2, y2), cls = stored[0]["boxes"][-1]["box"], stored[0]["boxes"][-1]["class"]
        assert cls == "short" and abs(x1 - 160) < 8 and abs(y1 - 120) < 8 and abs(x2 - 480) < 8 and abs(y2 - 360) < 8

        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        _sign_in(page, gateway.url, keys["viewer"])
        page.goto(gateway.url + "/")
        page.click(f"{item} button.mark", timeout=15000)
        page.click("#bv-send")  # a false reject
        wait_until(page, "document.getElementById('bv-status').textContent.startsWith('not allowed')")
        assert "operator" in page.inner_text("#bv-status")
        browser.close()
