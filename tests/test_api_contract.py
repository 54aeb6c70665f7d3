"""The public contract: every 2xx answer in ``openapi.json`` is documented (a JSON schema
that names its fields, or a declared non-JSON media type); the response models change no
answer (each answer is the route's own value, same keys, same order, same bytes); and
``InspectionRecord`` is the one shape of an inspection row from the service through the
outbox into the table, today's outbox rows included."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from gateway.services.db_writer import DbWriter
from gateway.services.outbox import Outbox, PendingRow
from inference.results import Detection, DualResult, SideResult
from pcb import taxonomy
from settings.environment import get_settings
from store.migrate import upgrade
from store.models import Inspection
from store.records import InspectionRecord
from store.session import make_engine, make_sessionmaker
from tests.conftest import encode

# answers that are not JSON: what their routes may send instead
NON_JSON = ("image/", "text/csv", "text/html", "text/event-stream", "application/zip")
SCALARS = {"string", "integer", "number", "boolean"}


def _code(verdict: str) -> int:
    return taxonomy.load().verdict(verdict).code


def _typed(schema: dict) -> bool:
    """A schema a client can be generated from: a model ($ref), a list or map of typed
    things, a scalar, or a union of those (null allowed beside them). ``{}`` and a bare
    ``{"type": "object"}`` say nothing and fail."""
    if "$ref" in schema:
        return True
    if "anyOf" in schema or "oneOf" in schema:
        options = [s for s in schema.get("anyOf", schema.get("oneOf")) if s.get("type") != "null"]
        return bool(options) and all(_typed(s) for s in options)
    kind = schema.get("type")
    if kind == "array":
        return _typed(schema.get("items") or {})
    if kind == "object":
        extra = schema.get("additionalProperties")
        return isinstance(extra, dict) and _typed(extra)
    return kind in SCALARS


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    d = tmp_path_factory.mktemp("contract")
    mp = pytest.MonkeyPatch()
    for k, v in {"AUTH_MODE": "off", "TRITON_URL": "127.0.0.1:9", "DATABASE_URL": f"sqlite:///{d / 'g.db'}",
                 "OUTBOX_PATH": str(d / "o.db"), "IMAGE_DIR": str(d / "img"), "IMAGE_POLICY": "all",
                 "ENHANCE_DIR": str(d / "enh"), "BATCH_DATA_DIR": str(d / "batch"), "PAIRING_WINDOW_MS": "300",
                 "SEED_COMPAT": "true", "RATE_LIMIT_PER_S": "0"}.items():
        mp.setenv(k, v)
    mp.delenv("REDIS_URL", raising=False)
    get_settings.cache_clear()
    yield d
    mp.undo()
    get_settings.cache_clear()


@pytest.fixture(scope="module")
def spec(env) -> dict:
    from gateway.main import create_app

    return create_app().openapi()


def test_every_2xx_answer_is_documented(spec):
    operations = 0
    problems = []
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            operations += 1
            ok = [(code, r) for code, r in op["responses"].items() if code.startswith("2")]
            if not ok:
                problems.append(f"{method.upper()} {path}: no 2xx answer")
            for code, r in ok:
                content = r.get("content") or {}
                if not content:
                    problems.append(f"{method.upper()} {path} {code}: no media type")
                for media, body in content.items():
                    if media == "application/json":
                        if not _typed(body.get("schema") or {}):
                            problems.append(f"{method.upper()} {path} {code}: untyped JSON {body.get('schema')}")
                    elif not media.startswith(NON_JSON):
                        problems.append(f"{method.upper()} {path} {code}: unexpected media type {media}")
    assert operations >= 45, operations
    assert not problems, problems


def test_the_checker_refuses_untyped_schemas():
    assert not _typed({}) and not _typed({"type": "object", "additionalProperties": True})
    assert not _typed({"type": "array", "items": {}}) and not _typed({"anyOf": [{}, {"type": "null"}]})
    assert _typed({"$ref": "#/x"}) and _typed({"type": "object", "additionalProperties": {"type": "string"}})


def test_non_json_answers_name_their_media_types(spec):
    media = {(m.upper(), p): sorted(op["responses"]["200"].get("content", {}))
             for p, ops in spec["paths"].items() for m, op in ops.items() if "200" in op["responses"]}
    assert media[("GET", "/api/defect-images/{inspection_id}")] == ["image/jpeg"]
    assert media[("GET", "/api/v1/download/{task_id}")] == ["image/jpeg", "image/png"]
    assert media[("GET", "/api/v1/batch/{batch_id}/download")] == ["application/zip"]
    assert media[("GET", "/api/v1/jobs/{job_id}/events")] == ["text/event-stream"]
    assert media[("GET", "/api/v1/jobs/{job_id}/results")] == ["application/json", "text/csv", "text/html"]


def test_statistics_document_every_taxonomy_verdict(spec):
    from pcb import taxonomy

    fields = spec["components"]["schemas"]["Statistics"]["properties"]
    for v in taxonomy.load().verdicts:
        assert fields[f"{v.name}_count"]["type"] == "integer"
    assert fields["verdicts"]["items"] == {"$ref": "#/components/schemas/VerdictCount"}


# -- the models change no answer ------------------------------------------------------------
def _det(x: float, cls: str, conf: float) -> Detection:
    return Detection(x, x + 20.5, x + 100.0, x + 80.25, conf, 0, cls)


class FakeTriton:
    """Answers like the Triton ensembles (typed results), with floats of every kind."""

    async def ready(self) -> bool:
        return True

    async def close(self) -> None:
        pass

    async def inspect(self, image: bytes) -> tuple[SideResult, float]:
        return SideResult([_det(10.0, "solder_bridge", 0.876543), _det(200.5, "short", 0.3)], _code("solder_defect"),
                          0.876543, 1), 3.25

    async def inspect_dual(self, left: bytes, right: bytes) -> DualResult:
        component = _code("component_defect")
        return DualResult(SideResult([], 0, 1.0, 1), SideResult([_det(5.0, "missing_component", 0.5)], component, 0.5, 1),
                          component, 0.5, 17, 500, 1, 4.5)


@pytest.fixture(scope="module")
def answers(env):
    """Every answer a response model shapes, next to the route's own value rendered as
    before (``jsonable_encoder`` then ``json.dumps``)."""
    import fastapi.routing
    from fastapi.encoders import jsonable_encoder

    from gateway.main import create_app

    seen: list[tuple[str, str, str]] = []
    original = fastapi.routing.serialize_response

    def dump(x) -> str:
        return json.dumps(x, ensure_ascii=False, allow_nan=False, separators=(",", ":"))

    async def compare(*, field=None, response_content=None, **kw):
        out = await original(field=field, response_content=response_content, **kw)
        if field is not None:
            seen.append((field.name, dump(jsonable_encoder(response_content)),
                         out.decode() if isinstance(out, bytes) else dump(out)))
        return out

    mp = pytest.MonkeyPatch()
    mp.setattr(fastapi.routing, "serialize_response", compare)
    try:
        with TestClient(create_app()) as c:
            c.app.state.triton = c.app.state.inspections.triton = FakeTriton()
            yield c, seen
    finally:
        mp.undo()


def test_response_models_change_no_answer(answers):
    c, seen = answers
    img = encode(np.full((64, 96, 3), 90, np.uint8))
    left = c.post("/admin/devices", json={"device_id": "pi-left", "side": "left", "drives_gpio": True}).json()
    right = c.post("/admin/devices", json={"device_id": "pi-right", "side": "right"}).json()
    lh = {"X-Device-Id": "pi-left", "X-API-Key": left["api_key"]}
    rh = {"X-Device-Id": "pi-right", "X-API-Key": right["api_key"]}
    p = c.post("/admin/principals", json={"name": "ops", "role": "operator"}).json()
    calls = [
        c.get("/health"), c.get("/health/live"), c.get("/health/ready"),
        c.get("/admin/devices"), c.get("/admin/principals"), c.delete(f"/admin/principals/{p['id']}"),
        c.post("/v1/heartbeat", headers=lh), c.post("/v1/line-session", headers=lh, json={"line_id": "L1"}),
        c.get("/v1/taxonomy"),
        c.post("/v1/inspect", headers=rh, files={"image": ("r.jpg", img, "image/jpeg")}, data={"board_id": "C1"}),
        c.post("/v1/inspect", headers={**lh, "Idempotency-Key": "k1"}, files={"image": ("l.jpg", img, "image/jpeg")},
               data={"board_id": "C1", "captured_at": str(time.time())}),
        # the retry: the stored first answer, through the same model
        c.post("/v1/inspect", headers={**lh, "Idempotency-Key": "k1"}, files={"image": ("l.jpg", img, "image/jpeg")},
               data={"board_id": "C1"}),
        c.post("/v1/inspect/dual", headers=lh, files={"left": ("l.jpg", img, "image/jpeg"),
                                                     "right": ("r.jpg", img, "image/jpeg")}, data={"board_id": "C2"}),
        c.post("/predict", headers=lh, json={"frame": _b64(img), "camera_id": "left", "timestamp": 1712345678.5}),
        c.post("/predict", headers=lh, json={"frame": _b64(img), "camera_id": "left", "timestamp": "t-1"}),
        c.post("/predict_dual", headers=lh, json={"frame_left": _b64(img), "frame_right": _b64(img)}),
        c.put("/admin/config", json={"values": {"line": "A", "shift": "2"}}),
        c.get("/admin/outbox/quarantine"), c.post("/admin/outbox/quarantine/retry", json={}),
        c.get("/api/system-status"), c.get("/api/v1/performance"), c.get("/api/v1/tuning"), c.get("/api/v1/jobs"),
    ]
    assert all(r.status_code == 200 for r in calls), \
        [(r.request.url.path, r.status_code, r.text[:200]) for r in calls if r.status_code != 200]
    deadline = time.monotonic() + 15  # the drainer writes the rows a moment later
    while c.get("/api/inspections").json()["total"] < 6 and time.monotonic() < deadline:
        time.sleep(0.1)
    reads = [c.get("/api/inspections?page_size=3"), c.get("/api/inspections?verdict=solder_defect"),
             c.get("/api/statistics"), c.get("/api/system-logs"), c.get("/api/config")]
    assert [r.status_code for r in reads] == [200] * 5
    page = reads[0].json()
    reads.append(c.get(f"/api/inspections?cursor={page['next_cursor']}&page_size=3"))
    assert reads[-1].status_code == 200
    stats = reads[2].json()
    # board decisions: C1's left side, the dual board, two /predict frames, one /predict_dual
    assert stats["total_inspections"] == 5 and sum(v["count"] for v in stats["verdicts"]) == 5

    assert len(seen) >= len(calls) + len(reads)
    changed = [(name, old, new) for name, old, new in seen if old != new]
    assert not changed, changed[:3]
    # and the Pi edge's fields are there, as it reads them
    inspect = calls[10].json()
    assert inspect["gpio"] == {"pin": 27, "duration_ms": 500} and inspect["board"]["pairing"] == "paired"
    assert inspect["detections"][0] == {"box": [10.0, 30.5, 110.0, 90.2], "class": "solder_bridge",
                                        "confidence": 0.8765}
    assert calls[11].json() == inspect
    assert list(calls[13].json()) == ["status", "camera_id", "timestamp", "defect_type", "confidence", "boxes",
                                      "inference_time_ms", "inspection_id"]
    assert calls[14].json()["timestamp"] == "t-1"


def test_an_unknown_verdict_filter_is_422_with_a_code(answers):
    c, _ = answers
    r = c.get("/api/inspections?verdict=quarantine")
    assert r.status_code == 422 and r.json()["code"] == "unknown_verdict"


def _b64(data: bytes) -> str:
    import base64

    return base64.b64encode(data).decode()


# -- one inspection record, service -> outbox -> table ----------------------------------------
# an outbox row as the gateway has written them (before InspectionRecord existed)
TODAYS_ROW = {"id": "3f0c9a52-6d0e-4f43-9a55-1c2d3e4f5a6b", "board_id": "L1-a1b2-000042", "device_id": "pi-left",
              "camera_side": "left", "verdict": "solder_defect", "verdict_code": 2, "confidence": 0.8765,
              "board_verdict": "solder_defect", "board_verdict_code": 2, "pairing": "paired",
              "boxes": [{"box": [10.0, 30.5, 110.0, 90.2], "class": "solder_bridge", "confidence": 0.8765}],
              "gpio_pin": 27, "gpio_duration_ms": 500, "image_path": "2026/11/23/3f0c9a52", "model_version": 1,
              "latency_ms": 12.5, "anomaly_score": 0.4321, "request_key": "pi-left:L1-a1b2-000042:left",
              "captured_at": "2026-11-23T09:59:59.500000",
              "created_at": "2026-11-23T10:00:00.123456"}
# and the smallest one an older gateway wrote (no board verdict, no image, no capture time)
OLD_ROW = {"id": "b", "board_id": "B0", "device_id": "pi-1", "camera_side": "left", "verdict": "normal",
           "verdict_code": 0, "confidence": 1.0, "boxes": [], "gpio_pin": 23, "gpio_duration_ms": 300,
           "model_version": 1, "latency_ms": 12.5, "created_at": "2026-11-23T10:00:00"}


def test_the_record_is_the_table():
    columns = {c.name for c in Inspection.__table__.columns}
    assert set(InspectionRecord.model_fields) == columns


def test_todays_outbox_rows_still_load_and_keep_their_format():
    record = InspectionRecord.from_outbox(TODAYS_ROW)
    assert record.to_outbox() == TODAYS_ROW  # written back byte for byte (keys, order, dates)
    assert list(record.to_outbox()) == list(TODAYS_ROW)
    row = record.to_model()
    assert row.created_at.microsecond == 123456 and row.boxes == TODAYS_ROW["boxes"]
    old = InspectionRecord.from_outbox(OLD_ROW).to_model()
    assert old.board_verdict is None and old.pairing == "single" and old.captured_at is None


def test_a_key_the_table_lacks_fails_in_the_record():
    with pytest.raises(ValidationError):
        InspectionRecord.from_outbox({**TODAYS_ROW, "verdict_label": "납땜불량"})
    with pytest.raises(ValidationError):
        InspectionRecord.from_outbox({k: v for k, v in TODAYS_ROW.items() if k != "verdict"})


def test_the_writer_drains_todays_rows_and_refuses_a_bad_one(tmp_path):
    url = f"sqlite:///{tmp_path / 'g.db'}"
    upgrade(url)
    sessions = make_sessionmaker(make_engine(url))
    box = Outbox(tmp_path / "o.db")
    for payload in (TODAYS_ROW, OLD_ROW):
        box.put(payload["id"], "inspection", payload)
    writer = DbWriter(sessions)
    writer(box.peek())
    with sessions() as s:
        got = s.get(Inspection, TODAYS_ROW["id"])
        assert got.board_verdict == "solder_defect" and got.captured_at.isoformat() == TODAYS_ROW["captured_at"]
        assert s.get(Inspection, "b") is not None
    bad = PendingRow("c", "inspection", {**OLD_ROW, "id": "c", "colour": "red"}, 0)
    with pytest.raises(ValidationError) as e:
        writer([bad])
    assert writer.rejects(e.value)  # the row's fault: quarantined, never retried forever
