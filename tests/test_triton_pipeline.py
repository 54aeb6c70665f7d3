"""The model repository on the real CPU Triton server: ensembles, errors, batching, in both
layouts (the CPU layout's whole-side detector, and the split GPU layout with onnxruntime
standing in for TensorRT), the split one also with its GPU pre-processing adapter run on the
CPU (``split-torch``: torchvision decode, torch letterbox, DLPack outputs)."""

from __future__ import annotations

from contextlib import contextmanager

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from inference import BadInput, InferenceError
from inference.repository_api import RepositoryAPI
from inference.sync import SyncTriton
from pcb import taxonomy
from pcb.synthetic import render_board
from tests.conftest import ROOT, encode
from tests.triton_helpers import dual_inspect, inspect


def test_every_config_in_the_repository_parses():
    for path in sorted([*(ROOT / "model_repository").glob("*/config.pbtxt"),
                        *(ROOT / "serving" / "split_layout").glob("*/config.pbtxt")]):
        cfg = model_config_pb2.ModelConfig()
        text_format.Parse(path.read_text(), cfg)
        assert cfg.name == path.parent.name


LAYOUT_MODELS = {
    "cpu": ("pcb_detector", "pcb_board_fuse", "pcb_inspect", "pcb_dual_inspect", "pcb_anomaly"),
    "split": ("pcb_preprocess", "pcb_detector", "pcb_postprocess", "pcb_board_fuse",
              "pcb_inspect", "pcb_dual_inspect"),
}
LAYOUT_MODELS["split-torch"] = LAYOUT_MODELS["split"]
SERVERS = {"cpu": "triton", "split": "split_triton", "split-torch": "split_torch_triton"}


@pytest.fixture(scope="module", params=list(SERVERS))
def layout(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def server(layout, request):
    return request.getfixturevalue(SERVERS[layout])


@pytest.fixture(scope="module")
def client(server):
    return SyncTriton(server.grpc_url)


@pytest.fixture(scope="module")
def repository_api(server):
    api = RepositoryAPI(server.http_url)
    yield api
    api.close()


def test_models_are_ready(client, layout, repository_api):
    for m in LAYOUT_MODELS[layout]:
        assert client.model_ready(m), m
    assert not client.model_ready("no_such_model")
    assert layout.startswith("split") or not client.model_ready("pcb_preprocess")
    if layout.startswith("split"):  # which pre-processing the server really loaded
        decode = repository_api.config("pcb_preprocess")["parameters"]["decode"]["string_value"]
        assert decode == {"split": "cpu", "split-torch": "torch-cpu"}[layout]


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
    pins = {"normal": (23, 300), "review": (24, 400), "component_defect": (17, 500), "solder_defect": (27, 500),
            "discard": (22, 500)}
    assert (out["gpio_pin"], out["gpio_duration_ms"]) == pins[taxonomy.load().verdict(out["board_verdict"]).name]


@pytest.mark.parametrize("payload,code", [
    (b"this is not an image" * 4, "unsupported_image"),
    (b"\xff\xd8\xff\xe0" + b"\0" * 40, "invalid_image"),
])
def test_bad_image_is_a_clear_refusal(client, payload, code):
    with pytest.raises(BadInput) as e:  # Triton's INVALID_ARGUMENT, the model's own code
        client.inspect(payload)
    assert e.value.code == code and not e.value.retryable


@contextmanager
def widened(repository_api, model: str):
    """``model`` reloaded (repository API, config override) with a long queue delay, so
    concurrent requests surely land in shared batches (on a CPU the configs queue for 0 us,
    and whether requests meet then depends on timing); the disk config is restored after."""
    original = repository_api.config(model)
    cfg = {**original, "dynamic_batching": {"preferred_batch_size": [16], "max_queue_delay_microseconds": 300_000}}
    repository_api.load(model, cfg)
    try:
        yield model
    finally:
        # a plain reload keeps an override while the files on disk are unchanged
        repository_api.load(model, original)


def test_bad_image_fails_only_its_own_request_in_a_batch(client, repository_api, layout):
    good = [encode(render_board(100 + i).image) for i in range(15)]
    truncated = good[0][: len(good[0]) // 3]
    payloads = good[:7] + [truncated] + good[7:]

    first = LAYOUT_MODELS[layout][0]  # where images are decoded
    with widened(repository_api, first):
        before = repository_api.counts(first)
        answers = client.inspect_many(payloads)  # all requests in flight at once
        after = repository_api.counts_after(first, before, len(payloads))
    errors = [i for i, r in enumerate(answers) if isinstance(r, InferenceError)]
    assert errors == [7]
    assert isinstance(answers[7], BadInput) and answers[7].code == "invalid_image"
    assert all(r.detector_version == 1 for i, r in enumerate(answers) if i != 7)
    # the requests really were batched together (fewer executions than requests)
    assert after.inference_count - before.inference_count == len(payloads)
    assert after.execution_count - before.execution_count < len(payloads)


def test_detector_batches_dynamically(client, repository_api):
    imgs = [encode(render_board(300 + i).image) for i in range(16)]
    with widened(repository_api, "pcb_detector"):
        before = repository_api.counts("pcb_detector")
        assert not any(isinstance(r, InferenceError) for r in client.inspect_many(imgs))
        after = repository_api.counts_after("pcb_detector", before, len(imgs))
    assert after.inference_count - before.inference_count == 16
    assert after.execution_count - before.execution_count < 16


def test_metrics_endpoint_exports_inference_counters(server, client):
    import urllib.request

    inspect(client, encode(render_board(1).image))
    text = urllib.request.urlopen(server.metrics_url, timeout=5).read().decode()
    assert 'nv_inference_request_success{model="pcb_inspect"' in text
    assert "nv_inference_queue_duration_us" in text
