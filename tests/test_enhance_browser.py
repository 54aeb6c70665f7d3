"""The enhancement page in a real headless Chromium: photos dropped on the page (a real drop
event carrying real JPEG/PNG files) and chosen with the file picker upload as one batch,
each card shows its progress and, when done, before and after; the ZIP link appears at the
end and downloads the results. Screenshot in build/screenshots/enhance.png."""

from __future__ import annotations

import base64
import io
import zipfile

import cv2
import numpy as np
import pytest

from enhance.synthetic import face_photo
from tests.browser import ARGS, CHROMIUM, wait_until
from tests.conftest import ROOT, encode
from tests.gateway_server import GatewayServer


@pytest.fixture(scope="module")
def gateway(enhance_triton, tmp_path_factory):
    d = tmp_path_factory.mktemp("enhance_page")
    srv = GatewayServer({"TRITON_URL": enhance_triton.grpc_url, "DATABASE_URL": f"sqlite:///{d / 'g.db'}",
                         "OUTBOX_PATH": str(d / "o.db"), "IMAGE_DIR": str(d / "img"),
                         "ENHANCE_DIR": str(d / "enhance"), "AUTH_MODE": "off"}, d / "gateway.log").start()
    try:
        yield srv
    finally:
        srv.stop()


DROP = """([files]) => {
  const dt = new DataTransfer();
  for (const [name, type, b64] of files) {
    const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
    dt.items.add(new File([bytes], name, {type}));
  }
  document.getElementById('drop').dispatchEvent(new DragEvent('drop', {dataTransfer: dt, bubbles: true}));
}"""


def test_drop_photos_watch_progress_and_download_the_zip(gateway, tmp_path):
    from playwright.sync_api import sync_playwright

    dropped = []
    for i in range(4):
        img, _ = face_photo(500 + i, (480, 360), faces=1 + i % 2)
        ext, mime = (".png", "image/png") if i == 3 else (".jpg", "image/jpeg")
        dropped.append([f"face{i}{ext}", mime, base64.b64encode(encode(img, ext)).decode()])
    shots = ROOT / "build" / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1300, "height": 900}, accept_downloads=True)
        page.goto(gateway.url + "/enhance")
        page.evaluate(DROP, [dropped])
        assert page.locator(".item").count() == 4
        # the file picker replaces the selection: choose two real files from disk instead, then drop again
        picked = []
        for i in range(2):
            path = tmp_path / f"picked{i}.jpg"
            path.write_bytes(encode(face_photo(600 + i, (400, 300))[0]))
            picked.append(str(path))
        page.set_input_files("#files", picked)
        assert page.locator(".item").count() == 2
        page.evaluate(DROP, [dropped])
        page.select_option("#quality", "medium")
        page.fill("#tile", "256")
        page.click("#start")
        page.wait_for_selector("body[data-done='1']", timeout=60000)
        states = page.eval_on_selector_all(".item", "els => els.map(e => e.dataset.state)")
        assert states == ["completed"] * 4
        wait_until(page, "[...document.querySelectorAll('.item img.after')].every(i => i.complete && "
                         "i.naturalWidth > 0)")
        widths = page.eval_on_selector_all(".item img.after", "els => els.map(e => e.naturalWidth)")
        assert widths == [960] * 4  # upscale 2 of 480 px wide photos
        assert "4 completed" in page.inner_text("#summary")
        page.screenshot(path=str(shots / "enhance.png"), full_page=True)
        with page.expect_download() as dl:
            page.click("#zip")
        with zipfile.ZipFile(io.BytesIO(open(dl.value.path(), "rb").read())) as z:
            assert len([n for n in z.namelist() if n.startswith("enhanced_")]) == 4
        browser.close()
    shot = cv2.imread(str(shots / "enhance.png"))
    assert shot is not None and shot.shape[1] == 1300 and float(np.std(shot)) > 10
