"""A verdict added to the taxonomy appears everywhere without another edit: a gateway started
with ``PCB_TAXONOMY`` naming a copy of taxonomy.yaml that has one more verdict
(``quarantine``) counts it in ``/api/statistics`` (``quarantine_count`` and the ``verdicts``
list, and in openapi.json), filters by it in ``/api/inspections``, lists it in
``/v1/taxonomy``, and the dashboard (headless Chromium) shows its card with its count.

The gateway runs without Triton (nothing listens at its TRITON_URL): the board decisions are
written straight into its SQLite database through ``store.models``, as the drainer would."""

from __future__ import annotations

import uuid
from datetime import timedelta

import httpx
import pytest
import yaml

from pcb import taxonomy
from serving.cpu_server import free_port
from store.models import Inspection, utcnow
from store.session import make_engine, make_sessionmaker
from tests.browser import ARGS, CHROMIUM, wait_until
from tests.gateway_server import GatewayServer

TOKEN = "taxonomy-admin"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _with_quarantine(dest) -> None:
    with open(taxonomy.TAXONOMY_FILE, encoding="utf-8") as f:
        doc = yaml.safe_load(f)
    doc["verdicts"]["quarantine"] = {"label": "격리", "severity": 5, "gpio": {"pin": 25, "duration_ms": 700}}
    doc["categories"]["pcb_minor"]["classes"].remove("pin_hole")
    doc["categories"]["suspect"] = {"verdict": "quarantine", "classes": ["pin_hole"]}
    dest.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    d = tmp_path_factory.mktemp("taxonomy")
    _with_quarantine(d / "taxonomy.yaml")
    assert taxonomy.load(d / "taxonomy.yaml").verdict("quarantine").code == 5  # the file itself is valid
    srv = GatewayServer({"PCB_TAXONOMY": str(d / "taxonomy.yaml"), "TRITON_URL": f"127.0.0.1:{free_port()}",
                         "DATABASE_URL": f"sqlite:///{d / 'g.db'}", "OUTBOX_PATH": str(d / "o.db"),
                         "IMAGE_DIR": str(d / "img"), "ENHANCE_DIR": str(d / "enh"),
                         "BATCH_DATA_DIR": str(d / "batch"), "ADMIN_TOKEN": TOKEN}, d / "gateway.log").start()
    _board_rows(f"sqlite:///{d / 'g.db'}")
    try:
        yield srv
    finally:
        srv.stop()


# board decisions today (the rows with a GPIO pin), and one side row that is not a decision
ROWS = [("normal", 0, 23), ("normal", 0, 23), ("solder_defect", 3, 27), ("quarantine", 5, 25), ("quarantine", 5, 25),
        ("quarantine", 5, None)]


def _board_rows(url: str) -> None:
    engine = make_engine(url)
    now = utcnow()
    with make_sessionmaker(engine).begin() as s:
        for i, (name, code, pin) in enumerate(ROWS):
            s.add(Inspection(id=str(uuid.uuid4()), board_id=f"T-{i}", device_id="pi-left", camera_side="left",
                             verdict=name, verdict_code=code, confidence=0.9, board_verdict=name,
                             board_verdict_code=code, pairing="single", boxes=[], gpio_pin=pin,
                             gpio_duration_ms=None if pin is None else 500, model_version=1, latency_ms=10.0 + i,
                             created_at=now - timedelta(seconds=i)))
    engine.dispose()


def test_statistics_count_the_new_verdict(gw):
    s = httpx.get(f"{gw.url}/api/statistics", headers=AUTH).json()
    assert s["quarantine_count"] == 2 and s["normal_count"] == 2 and s["solder_defect_count"] == 1
    assert s["component_defect_count"] == 0 and s["discard_count"] == 0
    assert s["total_inspections"] == 5 and s["defect_rate"] == 60.0  # everything but normal is a defect
    assert s["avg_latency_ms"] == 12.0
    assert s["verdicts"] == [
        {"name": "normal", "label": "정상", "code": 0, "count": 2},
        {"name": "review", "label": "검토", "code": 1, "count": 0},
        {"name": "component_defect", "label": "부품불량", "code": 2, "count": 0},
        {"name": "solder_defect", "label": "납땜불량", "code": 3, "count": 1},
        {"name": "discard", "label": "폐기", "code": 4, "count": 0},
        {"name": "quarantine", "label": "격리", "code": 5, "count": 2}]
    # the seed's field order, the new counts in their places among the others
    assert list(s)[:9] == ["start_date", "end_date", "total_inspections", "normal_count", "review_count",
                           "component_defect_count", "solder_defect_count", "discard_count", "quarantine_count"]
    spec = httpx.get(f"{gw.url}/openapi.json", headers=AUTH).json()
    assert "quarantine_count" in spec["components"]["schemas"]["Statistics"]["properties"]


def test_history_filters_by_the_new_verdict(gw):
    r = httpx.get(f"{gw.url}/api/inspections", params={"verdict": "quarantine"}, headers=AUTH)
    assert r.status_code == 200, r.text
    page = r.json()
    assert page["total"] == 3 and {i["verdict"] for i in page["items"]} == {"quarantine"}
    assert {i["verdict_label"] for i in page["items"]} == {"격리"}
    bad = httpx.get(f"{gw.url}/api/inspections", params={"verdict": "scrap"}, headers=AUTH)
    assert bad.status_code == 422 and bad.json()["code"] == "unknown_verdict"


def test_the_gpio_table_has_the_new_verdict(gw):
    t = httpx.get(f"{gw.url}/v1/taxonomy", headers=AUTH).json()
    assert {"code": "quarantine", "label": "격리", "severity": 5, "gpio": {"pin": 25, "duration_ms": 700}} \
        in t["verdicts"]
    assert {"id": 11, "name": "pin_hole", "category": "suspect", "verdict": "quarantine"} in t["classes"]


def test_the_dashboard_shows_a_card_for_the_new_verdict(gw):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(gw.url + "/")
        assert "/login" in page.url
        page.fill("#key", TOKEN)
        page.click("button[type=submit]")
        page.wait_for_url(gw.url + "/")
        wait_until(page, "document.querySelectorAll('.card[data-verdict]').length === 6")
        card = page.locator(".card[data-verdict='quarantine']")
        assert "격리" in card.inner_text() and "quarantine" in card.inner_text()
        assert page.inner_text("#count-quarantine") == "2"
        assert [page.inner_text(f"#count-{v}") for v in ("normal", "component_defect", "solder_defect", "discard")] \
            == ["2", "0", "1", "0"]
        assert page.inner_text("#total") == "5" and page.inner_text("#defect-rate") == "60.0 %"
        browser.close()


def test_load_follows_pcb_taxonomy_and_keeps_each_file_cached(tmp_path, monkeypatch):
    _with_quarantine(tmp_path / "t.yaml")
    monkeypatch.delenv("PCB_TAXONOMY", raising=False)
    packaged = taxonomy.load()
    monkeypatch.setenv("PCB_TAXONOMY", str(tmp_path / "t.yaml"))
    mine = taxonomy.load()
    assert mine is taxonomy.load()  # parsed once
    assert mine.verdict("quarantine").label == "격리" and mine.ok.name == "normal"
    assert mine.class_by_name("pin_hole").verdict.name == "quarantine"
    monkeypatch.delenv("PCB_TAXONOMY")
    assert taxonomy.load() is packaged and "quarantine" not in packaged.verdict_names
