"""The anomaly model (issue 17): the review policy, the map's crop, and the detector version
exported with the anomaly head on the real CPU Triton - parity with its PyTorch source (and
the detector's own outputs untouched), the outputs of both ensembles, a board the detector
passes sent to review with its own GPIO pin, a bad image failing alone, and the gateway's
answer, record, overlay and dashboard."""

from __future__ import annotations

import json
import time

import cv2
import numpy as np
import pytest
import torch

from inference import BadInput, contract, results
from inference.sync import SyncTriton
from pcb import taxonomy
from pcb.letterbox import geometry
from pcb.review import crop_map, review, unexplained
from pcb.synthetic import render_board, write_boards
from pcb.verdict import SideVerdict
from tests.conftest import WEIGHTS, encode, make_repository, start_triton

TAX = taxonomy.load()
REVIEW = TAX.anomaly.code


# -- the policy (pcb/review.py) ------------------------------------------------------------
T640 = geometry(640, 480, 320, 32).transform()  # 320x240 in a 320x256 input: one cell of padding on top


def test_review_needs_an_unexplained_anomaly_on_a_passed_side():
    amap = np.zeros((30, 40), np.float32)  # the cropped map of a 640x480 frame: 16 px cells
    amap[10, 20] = 1.6  # image x 320-336, y 152-168 (the crop starts at letterboxed row 8)
    passed = SideVerdict(TAX.ok.code, 1.0)
    none = np.zeros((0, 4))
    assert review(passed, amap, none, T640) == SideVerdict(REVIEW, pytest.approx(0.8))
    # a detected box over the hot cell explains it (a minor defect is anomalous too)
    assert review(passed, amap, np.array([[322, 154, 334, 166]]), T640) == passed
    # so does a box whose margin (2 cells) reaches it, not one three cells away
    assert review(passed, amap, np.array([[352, 154, 360, 166]]), T640) == passed
    assert review(passed, amap, np.array([[384, 154, 392, 166]]), T640).code == REVIEW
    # a box elsewhere does not
    assert review(passed, amap, np.array([[0, 0, 50, 50]]), T640).code == REVIEW
    # a named defect decides; below the threshold nothing changes
    solder = SideVerdict(TAX.verdict("solder_defect").code, 0.7)
    assert review(solder, amap, none, T640) == solder
    assert review(passed, amap * 0.5, none, T640) == passed


def test_review_fails_safe_on_a_broken_map():
    passed = SideVerdict(TAX.ok.code, 1.0)
    t = geometry(64, 64, 320, 32).transform()
    nan = np.full((40, 40), np.nan, np.float32)
    assert review(passed, nan, np.zeros((0, 4)), t) == SideVerdict(REVIEW, 1.0)
    assert unexplained(np.zeros((0, 0), np.float32), np.zeros((0, 4)), t) == 0.0
    # boxes outside the image, inverted, NaN or huge cannot crash the policy
    amap = np.ones((40, 40), np.float32) * 2
    assert review(passed, amap, np.array([[-50, -50, 1e9, 1e9]]), t) == passed
    for odd in ([[60, 60, 10, 10]], [[np.nan, 0, 5, 5]], [[1e300, 1e300, -1e300, -1e300]]):
        assert review(passed, amap, np.array(odd, np.float64), t).code == REVIEW


def test_the_map_is_cropped_to_the_image():
    # 640x480 -> 320x240 in a 320x256 rect input: 8 px of padding top and bottom = one cell
    amap = np.arange(32 * 40, dtype=np.float32).reshape(32, 40)
    assert crop_map(amap, geometry(640, 480, 320, 32).transform()).shape == (30, 40)
    # portrait: 240x320 in 256x320, padding left and right
    assert crop_map(np.zeros((40, 32), np.float32), geometry(480, 640, 320, 32).transform()).shape == (40, 30)
    # a sliver of an image still keeps one cell
    assert crop_map(np.zeros((2, 40), np.float32), geometry(4000, 10, 320, 32).transform()).shape[0] >= 1


def test_a_taxonomy_without_an_anomaly_policy_reviews_as_its_no_detection_verdict(tmp_path):
    import yaml

    doc = yaml.safe_load(taxonomy.TAXONOMY_FILE.read_text(encoding="utf-8"))
    doc.pop("anomaly")
    del doc["verdicts"]["review"]
    for v in doc["verdicts"].values():
        v["severity"] = max(v["severity"] - 1, 0)
    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    assert taxonomy.load(path).anomaly.name == "normal"


# -- the exported model on the real Triton --------------------------------------------------
def _odd_board(seed: int) -> bytes:
    """A good board with a large foreign object on it: nothing the detector knows."""
    img = render_board(seed, defect_rate=0.0).image.copy()
    cv2.circle(img, (320, 240), 45, (230, 230, 240), -1)
    cv2.circle(img, (320, 240), 20, (20, 20, 160), -1)
    return encode(img)


@pytest.fixture(scope="module")
def anomaly_repo(tmp_path_factory):
    from export.anomaly_net import AnomalySpec
    from export.anomaly_target import add_version

    d = tmp_path_factory.mktemp("anomaly")
    repo = make_repository(d / "model_repository")
    write_boards(d / "good", 48)
    version, lineage = add_version(repo, WEIGHTS, d / "good", AnomalySpec(bank=256, dims=32), far=0.05, serve_only_new=True)
    return repo, version, lineage


@pytest.fixture(scope="module")
def anomaly_triton(anomaly_repo, tmp_path_factory):
    srv = start_triton(anomaly_repo[0], tmp_path_factory.mktemp("atriton") / "triton.log")
    try:
        yield srv
    finally:
        srv.stop()


def test_export_writes_the_version_with_its_lineage_and_parity(anomaly_repo):
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper

    from export.anomaly_net import AnomalyNet, Backbone, PatchHead
    from pcb.letterbox import letterbox

    repo, version, lineage = anomaly_repo
    vdir = repo / "pcb_detector" / str(version)
    saved = json.loads((vdir / "anomaly.json").read_text())
    assert saved["threshold"] > 0 and saved["fit_boards"] + saved["holdout_boards"] == 48
    assert saved["parity_max_abs_diff"] <= 1e-3 and saved == lineage
    # parity again, independently: the served file against a PyTorch net rebuilt from its bank
    model = onnx.load(str(vdir / "model.onnx"))
    consts = [numpy_helper.to_array(i) for i in model.graph.initializer]
    consts += [numpy_helper.to_array(a.t) for n in model.graph.node if n.op_type == "Constant" for a in n.attribute
               if a.name == "value"]
    # the bank as stored, or transposed by the exporter's constant folding
    bank = next(c if c.shape == (256, 32) else c.T for c in consts if c.shape in ((256, 32), (32, 256)))
    backbone = Backbone(WEIGHTS)
    net = AnomalyNet(backbone, PatchHead(backbone.channels, 32, 0, torch.from_numpy(bank.copy()))).eval()
    net.head.threshold.fill_(saved["threshold"])
    x = np.stack([letterbox(render_board(900 + i, defect_rate=0.0).image, 320, 32)[0] for i in range(3)])
    with_head = ort.InferenceSession(str(vdir / "model.onnx")).run(["output0", "anomaly_score", "anomaly_map"],
                                                                   {"images": x})
    o_score, o_map = with_head[1], with_head[2]
    with torch.no_grad():
        t_score, t_map = (t.numpy() for t in net(torch.from_numpy(x)))
    assert np.abs(o_map - t_map).max() <= 1e-3 and np.abs(o_score - t_score).max() <= 1e-3
    # the detector's own outputs are those of the version without the head, exactly
    plain = ort.InferenceSession(str(repo / "pcb_detector" / "1" / "model.onnx")).run(["output0"], {"images": x})
    assert np.array_equal(plain[0], with_head[0])


def test_a_version_without_the_head_answers_no_anomaly(triton):
    client = SyncTriton(triton.grpc_url, timeout_s=60)
    side = results.side(client.infer(contract.SINGLE_MODEL, client.request(contract.inspect_request,
                                                                            encode(render_board(5).image))))
    assert side.anomaly_score is None and side.anomaly_map is None


def test_inspect_answers_the_anomaly_and_reviews_what_the_detector_misses(anomaly_triton):
    client = SyncTriton(anomaly_triton.grpc_url, timeout_s=60)
    good = results.side(client.infer(contract.SINGLE_MODEL,
                                     client.request(contract.inspect_request,
                                                    encode(render_board(70_001, defect_rate=0.0).image))))
    assert good.anomaly_score is not None and good.anomaly_map.shape == (30, 40)
    odd = results.side(client.infer(contract.SINGLE_MODEL, client.request(contract.inspect_request, _odd_board(3))))
    assert odd.anomaly_score >= 1.0 > 0 and odd.anomaly_score > good.anomaly_score
    assert odd.verdict_code == REVIEW or odd.detections  # review, unless the detector named it
    hot = np.unravel_index(np.argmax(odd.anomaly_map), odd.anomaly_map.shape)
    assert abs(hot[0] - 15) <= 4 and abs(hot[1] - 20) <= 4  # where the object is (map cell 16 px)


def test_pcb_anomaly_answers_the_score_and_map_alone(anomaly_triton, triton):
    """``pcb_anomaly``: the anomaly model's own entry point (a view of the detector's head),
    with per-request errors; a detector without the head answers -1 and an empty map."""
    from inference.sync import SyncTriton as Sync

    odd = _odd_board(5)
    r = Sync(anomaly_triton.grpc_url, timeout_s=60).infer("pcb_anomaly", SyncTriton(anomaly_triton.grpc_url)
                                                          .request(contract.inspect_request, odd))
    score, amap = float(r.as_numpy("ANOMALY_SCORE").reshape(-1)[0]), r.as_numpy("ANOMALY_MAP")
    assert score >= 1.0 and amap.shape[-2:] == (30, 40) and float(amap.max()) == pytest.approx(score)
    with pytest.raises(BadInput) as e:
        Sync(anomaly_triton.grpc_url).infer("pcb_anomaly", Sync(anomaly_triton.grpc_url)
                                            .request(contract.inspect_request, odd[:200]))
    assert e.value.code == "invalid_image"
    plain = Sync(triton.grpc_url).infer("pcb_anomaly", Sync(triton.grpc_url).request(contract.inspect_request, odd))
    assert float(plain.as_numpy("ANOMALY_SCORE").reshape(-1)[0]) == -1.0 and plain.as_numpy("ANOMALY_MAP").size == 0


def test_another_frame_size_is_answered_without_the_anomaly(anomaly_triton):
    """The head knows the scale of the boards it was fitted on (640x480): a crop or another
    camera would look anomalous all over, so it is not applied there (no score, no review)."""
    client = SyncTriton(anomaly_triton.grpc_url, timeout_s=60)
    crop = render_board(70_010, defect_rate=0.0).image[:, 80:560]  # 480x480
    side = results.side(client.infer(contract.SINGLE_MODEL, client.request(contract.inspect_request, encode(crop))))
    assert side.anomaly_score is None and side.verdict_code != REVIEW


def test_dual_sends_the_board_to_review_with_its_own_pin(anomaly_triton):
    client = SyncTriton(anomaly_triton.grpc_url, timeout_s=60)
    left = encode(render_board(70_002, defect_rate=0.0).image)
    r = results.dual(client.infer(contract.DUAL_MODEL, client.request(contract.dual_request, left, _odd_board(3))), 0)
    assert r.right.anomaly_score >= 1.0 and r.left.anomaly_score is not None
    if r.right.verdict_code == REVIEW and r.left.verdict_code <= REVIEW:
        assert r.board_verdict_code == REVIEW
        assert (r.gpio_pin, r.gpio_duration_ms) == (TAX.anomaly.gpio.pin, TAX.anomaly.gpio.duration_ms)


def test_a_bad_image_fails_alone_beside_the_anomaly_model(anomaly_triton):
    client = SyncTriton(anomaly_triton.grpc_url, timeout_s=60)
    good = encode(render_board(70_003, defect_rate=0.0).image)
    answers = client.inspect_many([good, good[: len(good) // 3], good])
    assert isinstance(answers[1], BadInput) and answers[1].code == "invalid_image"
    assert all(isinstance(a, results.SideResult) for a in (answers[0], answers[2]))


# -- the gateway: answer, record, overlay ---------------------------------------------------
@pytest.fixture(scope="module")
def anomaly_gateway(anomaly_triton, tmp_path_factory):
    import httpx

    from tests.gateway_server import GatewayServer

    d = tmp_path_factory.mktemp("agw")
    srv = GatewayServer({"TRITON_URL": anomaly_triton.grpc_url, "DATABASE_URL": f"sqlite:///{d / 'g.db'}",
                         "OUTBOX_PATH": str(d / "o.db"), "IMAGE_DIR": str(d / "img"), "IMAGE_POLICY": "all",
                         "ENHANCE_DIR": str(d / "enh"), "BATCH_DATA_DIR": str(d / "batch"),
                         "ADMIN_TOKEN": "anomaly-admin", "RATE_LIMIT_PER_S": "0"}, d / "gateway.log").start()
    try:
        admin = {"Authorization": "Bearer anomaly-admin"}
        key = httpx.post(f"{srv.url}/admin/devices", headers=admin,
                         json={"device_id": "pi-solo", "side": "left", "drives_gpio": True}).json()["api_key"]
        yield srv, {"X-Device-Id": "pi-solo", "X-API-Key": key}, admin
    finally:
        srv.stop()


def test_the_gateway_answers_records_and_overlays_the_anomaly(anomaly_gateway):
    import httpx

    srv, device, admin = anomaly_gateway
    r = httpx.post(f"{srv.url}/v1/inspect", headers=device, timeout=60,
                   files={"image": ("b.jpg", _odd_board(3), "image/jpeg")}, data={"board_id": "ANOM-1"})
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["anomaly_score"] >= 1.0
    if answer["verdict"]["code"] == "review":  # a lone frame decides its board: the review pin
        assert answer["gpio"] == {"pin": TAX.anomaly.gpio.pin, "duration_ms": TAX.anomaly.gpio.duration_ms}
        assert answer["verdict"]["label"] == "검토"
    iid = answer["inspection_id"]
    deadline = time.monotonic() + 15  # the drainer writes the row a moment later
    rows: list = []
    while not rows and time.monotonic() < deadline:
        items = httpx.get(f"{srv.url}/api/inspections", headers=admin, params={"device_id": "pi-solo"}).json()["items"]
        rows = [i for i in items if i["id"] == iid]
        time.sleep(0.1)
    assert rows and rows[0]["anomaly_score"] == answer["anomaly_score"]
    plain = httpx.get(f"{srv.url}/api/defect-images/{iid}", headers=admin)
    heat = httpx.get(f"{srv.url}/api/defect-images/{iid}", headers=admin, params={"overlay": "anomaly"})
    assert plain.status_code == heat.status_code == 200 and heat.headers["content-type"] == "image/jpeg"
    a = cv2.imdecode(np.frombuffer(plain.content, np.uint8), cv2.IMREAD_COLOR).astype(np.int16)
    b = cv2.imdecode(np.frombuffer(heat.content, np.uint8), cv2.IMREAD_COLOR).astype(np.int16)
    # the heat map sits where the object is, not all over the board
    centre = np.abs(a[200:280, 280:360] - b[200:280, 280:360]).mean()
    corner = np.abs(a[:60, :60] - b[:60, :60]).mean()
    assert centre > 10 * max(corner, 0.5), (centre, corner)
    bad = httpx.get(f"{srv.url}/api/defect-images/{iid}", headers=admin, params={"overlay": "gradcam"})
    assert bad.status_code == 422 and bad.json()["code"]
    stats = httpx.get(f"{srv.url}/api/statistics", headers=admin).json()
    assert "review_count" in stats


def test_an_overlay_without_a_map_is_a_clear_404(tmp_path):
    from gateway.services.image_store import ImageStore

    store = ImageStore(tmp_path, "all")
    stem = store.stem("x")
    store.save(stem, "left", encode(render_board(1).image))
    with pytest.raises(FileNotFoundError):
        store.annotated(stem, "left", [], overlay="anomaly")
    amap = np.zeros((30, 40), np.float32)
    amap[0, 0] = np.nan  # a broken map still stores (as "hot"), never raises
    store.save(stem, "right", encode(render_board(1).image), amap)
    assert store.map_path(stem, "right").exists()
    assert store.annotated(stem, "right", [], overlay="anomaly")[:2] == b"\xff\xd8"
    # pruning takes the map with its image
    store.max_age_s = -1
    assert store.prune() == 2 and not store.map_path(stem, "right").exists()


def test_the_dashboard_shows_the_heat_map(anomaly_gateway):
    import httpx
    from playwright.sync_api import sync_playwright

    from tests.browser import ARGS, CHROMIUM, wait_until

    srv, device, _ = anomaly_gateway
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(srv.url + "/")
        page.fill("#key", "anomaly-admin")
        page.click("button[type=submit]")
        page.wait_for_url(srv.url + "/")
        page.wait_for_selector("#conn.live", timeout=15000)
        assert page.locator(".card[data-verdict='review']").count() == 1
        r = httpx.post(f"{srv.url}/v1/inspect", headers=device, timeout=60,
                       files={"image": ("b.jpg", _odd_board(4), "image/jpeg")}, data={"board_id": "ANOM-DASH"})
        assert r.status_code == 200, r.text
        # the board's thumbnail is the overlay, loaded, with the score in its line
        wait_until(page, "[...document.querySelectorAll('#recent img.heat')].some(i => "
                         "i.src.includes('overlay=anomaly') && i.complete && i.naturalWidth > 0)")
        assert "anomaly " in page.inner_text("#recent")
        browser.close()
