"""Statistics count the plant's days (``PLANT_TIMEZONE``), against a real gateway process
on the machine's MariaDB: east of UTC a plant day starts on the previous UTC day, so rows a
second either side of local midnight land in the right day, and the answer echoes the plant
dates asked for (it used to echo the UTC date of the range's start: 2026-11-30 for a query
of 2026-12-01 in Seoul)."""

from __future__ import annotations

import uuid
from datetime import datetime

import httpx
import pytest

from store.models import Inspection
from store.session import make_engine, make_sessionmaker
from tests.conftest import fresh_mariadb
from tests.gateway_server import GatewayServer

TOKEN = "stats-admin"
# (created_at as stored: naive UTC, board verdict); Seoul is UTC+9 all year
ROWS = [
    (datetime(2026, 11, 30, 14, 59, 59), "solder_defect"),  # 2026-11-30 23:59:59 KST
    (datetime(2026, 11, 30, 15, 0, 0), "normal"),  # 2026-12-01 00:00:00 KST
    (datetime(2026, 12, 1, 14, 59, 59), "component_defect"),  # 2026-12-01 23:59:59 KST
    (datetime(2026, 12, 1, 15, 0, 0), "normal"),  # 2026-12-02 00:00:00 KST
]


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("stats")
    with fresh_mariadb() as name:
        url = f"mysql+pymysql://root:@127.0.0.1:3306/{name}"
        srv = GatewayServer({"TRITON_URL": "127.0.0.1:9", "DATABASE_URL": url, "OUTBOX_PATH": str(tmp / "o.db"),
                             "IMAGE_DIR": str(tmp / "img"), "ADMIN_TOKEN": TOKEN, "RATE_LIMIT_PER_S": "0",
                             "BATCH_DATA_DIR": str(tmp / "batch"), "PLANT_TIMEZONE": "Asia/Seoul"},
                            tmp / "gw.log").start()  # it migrates the fresh database
        engine = make_engine(url)
        try:
            with make_sessionmaker(engine)() as s:
                for at, verdict in ROWS:
                    _add(s, at, verdict, gpio_pin=23)
                # a side row (no GPIO decision) right inside the day: never counted
                _add(s, datetime(2026, 12, 1, 3, 0), "solder_defect", gpio_pin=None)
                s.commit()
            yield srv
        finally:
            srv.stop()
            engine.dispose()


def _add(s, at: datetime, verdict: str, gpio_pin: int | None) -> None:
    s.add(Inspection(id=str(uuid.uuid4()), board_id="S1", device_id="pi-left", camera_side="left", verdict=verdict,
                     verdict_code=0, confidence=0.9, board_verdict=verdict, gpio_pin=gpio_pin, latency_ms=10.0,
                     created_at=at))


def _stats(srv: GatewayServer, **params: str) -> dict:
    r = httpx.get(f"{srv.url}/api/statistics", params=params, headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 200, r.text
    return r.json()


def test_one_plant_day_east_of_utc_counts_its_own_midnights_and_echoes_its_date(gateway):
    day = _stats(gateway, start_date="2026-12-01", end_date="2026-12-01")
    assert (day["start_date"], day["end_date"]) == ("2026-12-01", "2026-12-01")
    assert day["total_inspections"] == 2 and day["normal_count"] == 1 and day["component_defect_count"] == 1
    assert day["solder_defect_count"] == 0 and day["defect_rate"] == 50.0
    before = _stats(gateway, start_date="2026-11-30", end_date="2026-11-30")
    assert (before["start_date"], before["end_date"]) == ("2026-11-30", "2026-11-30")
    assert before["total_inspections"] == 1 and before["solder_defect_count"] == 1
    after = _stats(gateway, start_date="2026-12-02", end_date="2026-12-02")
    assert (after["start_date"], after["end_date"]) == ("2026-12-02", "2026-12-02")
    assert after["total_inspections"] == 1 and after["normal_count"] == 1


def test_a_range_of_plant_days_is_echoed_as_asked(gateway):
    three = _stats(gateway, start_date="2026-11-30", end_date="2026-12-02")
    assert (three["start_date"], three["end_date"]) == ("2026-11-30", "2026-12-02")
    assert three["total_inspections"] == 4
    assert {v["name"]: v["count"] for v in three["verdicts"]} == {
        "normal": 2, "review": 0, "component_defect": 1, "solder_defect": 1, "discard": 0}
