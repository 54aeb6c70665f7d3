"""Shadow before promote (issue 18): a deliberately different detector version runs beside
the served one under live traffic through a real gateway and Triton; the report shows the
disagreement; a promotion below the agreement floor is refused and one with the override
goes through. Plus the mirror's bounded queue (the line first) and lineage in /admin/models."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from gateway.services.shadow import ShadowMirror
from inference.results import SideResult
from pcb.synthetic import render_board, write_boards
from tests.conftest import WEIGHTS, encode, make_repository, start_triton
from tests.gateway_server import GatewayServer

TOKEN = "shadow-admin"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def line(tmp_path_factory):
    """Triton serving version 1; version 2 on disk is the same detector with an anomaly head
    calibrated to send about half of all good boards to review: a candidate that disagrees."""
    from export.anomaly_net import AnomalySpec
    from export.anomaly_target import add_version

    d = tmp_path_factory.mktemp("shadow")
    repo = make_repository(d / "model_repository")
    write_boards(d / "good", 40)
    add_version(repo, WEIGHTS, d / "good", AnomalySpec(bank=64, dims=16), far=0.5)  # served: still [1]
    triton = start_triton(repo, d / "triton.log")
    gw = GatewayServer({"TRITON_URL": triton.grpc_url, "TRITON_HTTP_URL": triton.http_url,
                        "MODEL_REPOSITORY": str(repo), "DATABASE_URL": f"sqlite:///{d / 'g.db'}",
                        "OUTBOX_PATH": str(d / "o.db"), "IMAGE_DIR": str(d / "img"), "IMAGE_POLICY": "none",
                        "ENHANCE_DIR": str(d / "enh"), "BATCH_DATA_DIR": str(d / "batch"), "ADMIN_TOKEN": TOKEN,
                        "RATE_LIMIT_PER_S": "0", "SHADOW_SHARE": "1.0"}, d / "gateway.log").start()
    try:
        key = httpx.post(f"{gw.url}/admin/devices", headers=ADMIN,
                         json={"device_id": "pi-l", "side": "left", "drives_gpio": True}).json()["api_key"]
        yield gw, {"X-Device-Id": "pi-l", "X-API-Key": key}
    finally:
        gw.stop()
        triton.stop()


def _served(gw) -> list[int]:
    rows = httpx.get(f"{gw.url}/admin/models", headers=ADMIN, timeout=30).json()
    return next(r["served"] for r in rows if r["model"] == "pcb_detector")


def test_shadow_reports_disagreement_and_the_floor_guards_promotion(line):
    gw, device = line
    assert httpx.post(f"{gw.url}/admin/models/pcb_detector/shadow", json={"version": 2}).status_code == 401
    r = httpx.post(f"{gw.url}/admin/models/pcb_detector/shadow", headers=ADMIN, json={"version": 2}, timeout=60)
    assert r.status_code == 200, r.text
    assert r.json() == {"model": "pcb_detector", "shadow": "pcb_detector_shadow", "version": 2}
    assert _served(gw) == [1]  # the shadow never changes what the line is served

    boards = 24
    with httpx.Client(base_url=gw.url, timeout=60) as c:
        for i in range(boards):
            a = c.post("/v1/inspect", headers=device, data={"board_id": f"SH-{i}"},
                       files={"image": ("b.jpg", encode(render_board(80_000 + i, defect_rate=0.0).image), "image/jpeg")})
            assert a.status_code == 200, a.text
            assert a.json()["model"]["version"] == 1
    deadline, rep = time.monotonic() + 60, {}
    while time.monotonic() < deadline:
        rep = httpx.get(f"{gw.url}/admin/models/pcb_detector/shadow", headers=ADMIN).json()
        if rep["samples"] >= boards and rep["mirror"]["mirrored"] >= boards:  # stored, then counted
            break
        time.sleep(0.2)
    assert rep["samples"] == boards and rep["version"] == 2 and rep["live_versions"] == [1]
    assert rep["agreement"] is not None and rep["agreement"] < 0.98
    assert {"served": "normal", "shadow": "review", "count": boards - round(rep["agreement"] * boards)} \
        in rep["disagreements"]
    assert rep["latency_ms"]["shadow_p50"] > 0 and rep["latency_ms"]["served_p50"] > 0
    assert rep["mirror"]["active_version"] == 2 and rep["mirror"]["mirrored"] == boards
    # both answers are stored whole (the detections), not only their verdicts
    import sqlite3

    db = sqlite3.connect(gw.env["DATABASE_URL"].removeprefix("sqlite:///"))
    stored = db.execute("SELECT live_detections, shadow_detections, live_verdict, shadow_verdict "
                        "FROM shadow_results").fetchall()
    db.close()
    assert len(stored) == boards and all(row[0] is not None and row[1] is not None for row in stored)

    # the dashboard shows the report to an admin (hidden from everyone else)
    from playwright.sync_api import sync_playwright

    from tests.browser import ARGS, CHROMIUM, wait_until

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(gw.url + "/")
        page.fill("#key", TOKEN)
        page.click("button[type=submit]")
        page.wait_for_url(gw.url + "/")
        wait_until(page, "!document.getElementById('shadow-section').hidden")
        summary = page.inner_text("#shadow-summary")
        assert f"{boards} sides compared" in summary and "normal→review" in summary
        assert "version 2 (running)" in page.inner_text("#shadow-title")
        browser.close()

    # below the floor: refused, nothing changes; with the override: promoted
    refused = httpx.post(f"{gw.url}/admin/models/pcb_detector/promote", headers=ADMIN,
                         json={"version": 2, "min_agreement": 0.98}, timeout=60)
    assert refused.status_code == 409 and refused.json()["code"] == "shadow_agreement_below_floor"
    assert _served(gw) == [1]
    ok = httpx.post(f"{gw.url}/admin/models/pcb_detector/promote", headers=ADMIN,
                    json={"version": 2, "min_agreement": 0.98, "override": True}, timeout=60)
    assert ok.status_code == 200 and ok.json()["served"] == [2]
    stop = httpx.delete(f"{gw.url}/admin/models/pcb_detector/shadow", headers=ADMIN, timeout=60)
    assert stop.status_code == 200 and stop.json()["version"] is None
    # the audit trail: each version's lineage, the anomaly fit included
    rows = httpx.get(f"{gw.url}/admin/models", headers=ADMIN, timeout=30).json()
    det = next(r for r in rows if r["model"] == "pcb_detector")
    assert det["lineage"]["2"]["anomaly"]["far"] == 0.5


def test_an_unknown_version_or_model_is_a_clear_refusal(line):
    gw, _ = line
    r = httpx.post(f"{gw.url}/admin/models/pcb_detector/shadow", headers=ADMIN, json={"version": 42}, timeout=30)
    assert r.status_code == 400 and r.json()["code"] == "model_admin_refused"
    r = httpx.post(f"{gw.url}/admin/models/nope/shadow", headers=ADMIN, json={"version": 1}, timeout=30)
    assert r.status_code == 404 and r.json()["code"] == "unknown_model"
    # only the detector can be shadowed (an ensemble has no side of its own to mirror to)
    r = httpx.post(f"{gw.url}/admin/models/pcb_inspect/shadow", headers=ADMIN, json={"version": 1}, timeout=30)
    assert r.status_code == 400 and r.json()["code"] == "model_admin_refused"
    r = httpx.get(f"{gw.url}/admin/models/pcb_detector/shadow", headers=ADMIN, params={"version": 99})
    assert r.status_code == 200 and r.json()["samples"] == 0 and r.json()["agreement"] is None


def test_the_mirror_drops_rather_than_waits():
    async def run():
        mirror = ShadowMirror(triton=None, sessions=None, share=1.0, queue_size=2)
        mirror.stats.version = 3  # a shadow is loaded; no worker drains the queue
        side = SideResult([], 0, 1.0, 1)
        t0 = time.perf_counter()
        for i in range(500):
            mirror.offer(f"i{i}", b"jpeg", side, 10.0)
        return mirror.stats, time.perf_counter() - t0

    stats, took = asyncio.run(run())
    assert (stats.offered, stats.dropped) == (500, 498) and took < 0.5
