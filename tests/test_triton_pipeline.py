"""The model repository on the real CPU Triton server: ensembles, errors, batching, in both
layouts (the CPU layout's whole-side detector, and the split GPU layout with onnxruntime
standing in for TensorRT)."""

from __future__ import annotations

import json
from contextlib import contextmanager

import pytest
import tritonclient.http as http
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2
from tritonclient.utils import InferenceServerException

from pcb.synthetic import render_board
from tests.conftest import ROOT, encode
from tests.triton_helpers import dual_inspect, image_input, inspect


def test_every_config_in_the_repository_parses():
    for path in sorted([*(ROOT / "model_repository").glob("*/config.pbtxt"),
                        *(ROOT / "serving" / "split_layout").glob("*/config.pbtxt")]):
        cfg = model_config_pb2.ModelConfig()
        text_format.Parse(path.read_text(), cfg)
        assert cfg.name == path.parent.name


LAYOUT_MODELS = {
    "cpu": ("pcb_detector", "pcb_board_fuse", "pcb_inspect", "pcb_dual_inspect"),
    "split": ("pcb_preprocess", "pcb_detector", "pcb_postprocess", "pcb_board_fuse",
              "pcb_inspect", "pcb_dual_inspect"),
}


@pytest.fixture(scope="module", params=["cpu", "split"])
def layout(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def server(layout, request):
    return request.getfixturevalue("triton" if layout == "cpu" else "split_triton")


@pytest.fixture(scope="module")
def client(server):
    return http.InferenceServerClient(server.http_url, concurrency=16)


def test_models_are_ready(client, layout):
    for m in LAYOUT_MODELS[layout]:
        assert client.is_model_ready(m), m


def test_single_inspection_answers_in_image_pixels(client):
    board = render_board(7, size=(800, 600), force=["solder_bridge", "missing_component"])
    out = inspect(client, encode(board.image))
    det = out["detections"]
    assert det.shape[1] == 6
    assert out["version"] == 1
    assert len(out["class_names"]) == len(det)
    if len(det):
        assert (det[:, [0, 2]] <= 800).all() and (det[:, [1, 3]] <= 600).all()
        assert (det[:, 4] > 0.25).all()
    assert out["verdict"] in (0, 1, 2, 3)


def test_dual_inspection_answers_board_verdict_and_gpio(client):
    left = encode(render_board(11, force=["missing_component"]).image)
    right = encode(render_board(12, force=[]).image)
    out = dual_inspect(client, left, right)
    assert out["board_verdict"] == max(out["left_verdict"], out["right_verdict"])
    pins = {0: (23, 300), 1: (17, 500), 2: (27, 500), 3: (22, 500)}
    assert (out["gpio_pin"], out["gpio_duration_ms"]) == pins[out["board_verdict"]]


@pytest.mark.parametrize("payload,code", [
    (b"this is not an image" * 4, "unsupported_image"),
    (b"\xff\xd8\xff\xe0" + b"\0" * 40, "invalid_image"),
])
def test_bad_image_is_a_clear_400(client, payload, code):
    with pytest.raises(InferenceServerException) as e:
        client.infer("pcb_inspect", [image_input("IMAGE", payload)])
    assert e.value.status() == "400"
    assert code in e.value.message()


@contextmanager
def widened(client, model: str):
    """``model`` reloaded (repository API, config override) with a long queue delay, so
    concurrent requests surely land in shared batches (on a CPU the configs queue for 0 us,
    and whether requests meet depends on timing); the disk config is restored after."""
    original = client.get_model_config(model)
    cfg = json.loads(json.dumps(original))
    cfg["dynamic_batching"] = {"preferred_batch_size": [16], "max_queue_delay_microseconds": 300_000}
    client.load_model(model, config=json.dumps(cfg))
    try:
        yield model
    finally:
        # a plain reload keeps an override while the files on disk are unchanged
        client.load_model(model, config=json.dumps(original))


@pytest.fixture
def wide_batching(client, layout):
    """The layout's first model widened."""
    with widened(client, LAYOUT_MODELS[layout][0]) as model:
        yield model


def test_bad_image_fails_only_its_own_request_in_a_batch(client, wide_batching):
    good = [encode(render_board(100 + i).image) for i in range(15)]
    truncated = good[0][: len(good[0]) // 3]
    payloads = good[:7] + [truncated] + good[7:]

    def stats():
        s = client.get_inference_statistics(wide_batching)["model_stats"][0]
        return int(s["inference_count"]), int(s["execution_count"])

    inf0, exe0 = stats()
    # async_infer: all requests in flight at once on the client's connection pool
    pending = [client.async_infer("pcb_inspect", [image_input("IMAGE", p)]) for p in payloads]
    results = []
    for req in pending:
        try:
            results.append(req.get_result())
        except InferenceServerException as e:
            results.append(e)
    inf1, exe1 = stats()
    errors = [i for i, r in enumerate(results) if isinstance(r, InferenceServerException)]
    assert errors == [7]
    assert "invalid_image" in results[7].message()
    assert all(r.as_numpy("DETECTIONS") is not None for i, r in enumerate(results) if i != 7)
    # the requests really were batched together (fewer executions than requests)
    assert inf1 - inf0 == len(payloads)
    assert exe1 - exe0 < len(payloads)


def test_detector_batches_dynamically(client):
    with widened(client, "pcb_detector"):
        _detector_batches(client)


def _detector_batches(client):
    det0 = client.get_inference_statistics("pcb_detector")["model_stats"][0]
    imgs = [encode(render_board(300 + i).image) for i in range(16)]
    for req in [client.async_infer("pcb_inspect", [image_input("IMAGE", d)]) for d in imgs]:
        req.get_result()
    det1 = client.get_inference_statistics("pcb_detector")["model_stats"][0]
    assert int(det1["inference_count"]) - int(det0["inference_count"]) == 16, client.get_inference_statistics("pcb_detector")
    assert int(det1["execution_count"]) - int(det0["execution_count"]) < 16, (det0, det1)


def test_metrics_endpoint_exports_inference_counters(server, client):
    import urllib.request

    inspect(client, encode(render_board(1).image))
    text = urllib.request.urlopen(server.metrics_url, timeout=5).read().decode()
    assert 'nv_inference_request_success{model="pcb_inspect"' in text
    assert "nv_inference_queue_duration_us" in text
