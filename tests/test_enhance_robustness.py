"""One bad photo fails alone: ``face_enhance`` answers a pathological photo with its own
INVALID_ARG error while the photos batched with it succeed (in the real Triton server, with
both requests proven to share one ``execute``; and ``model.py``'s ``execute`` driven directly
with a stand-in for ``triton_python_backend_utils``); and degenerate strips (aspect ratio
over 20:1) are refused by the gateway with 422 ``image_aspect_ratio`` before Triton."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
import types

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient

from enhance.face_detect import make_detector
from enhance.options import MAX_OUTPUT_PIXELS
from enhance.request import RequestError, finish_request, prepare_request
from enhance.synthetic import face_photo
from inference import BadInput
from inference.repository_api import RepositoryAPI
from inference.sync import SyncTriton
from pcb.image_decode import MAX_ASPECT_RATIO
from pcb.synthetic import render_board
from settings.environment import get_settings
from tests.conftest import ROOT, encode, start_triton


def strip_jpeg() -> bytes:
    """The issue's photo: 65500 x 40, ~50 KB, under every size limit."""
    data = encode(np.full((40, 65500, 3), 128, np.uint8), quality=90)
    assert 40_000 < len(data) < 60_000
    return data


def strip_png() -> bytes:
    return encode(np.full((1, 100_000, 3), 90, np.uint8), ".png")


# -- enhance/request.py: every failure of one photo becomes that photo's error -------------------
class _Crashing:
    """A face detector that hits an OpenCV assertion, as the Haar path did on the strip."""

    def detect(self, img):
        cv2.resize(img, (0, 0), fx=0, fy=0)


def test_any_failure_of_one_photo_becomes_its_request_error():
    photo = encode(face_photo(3)[0])
    with pytest.raises(RequestError) as e:
        prepare_request(photo, None, _Crashing(), 16_000_000)
    assert e.value.code == "enhance_failed" and "error" in e.value.message
    with pytest.raises(RequestError) as e:
        prepare_request(strip_jpeg(), b'{"upscale": 1}', make_detector(), 16_000_000)
    assert e.value.code == "image_aspect_ratio"
    wide = encode(np.full((1000, 20000, 3), 90, np.uint8))  # 20:1 is allowed, but not at upscale 4
    with pytest.raises(RequestError) as e:
        prepare_request(wide, b'{"upscale": 4}', make_detector(), 40_000_000)
    assert e.value.code == "output_too_large" and str(MAX_OUTPUT_PIXELS) in e.value.message
    assert "upscale 1 fits" in e.value.message
    with pytest.raises(RequestError) as e:
        prepare_request(photo, b'{"tile": 5}', make_detector(), 16_000_000)
    assert e.value.code == "invalid_options"
    p, source = prepare_request(photo, b'{"quality": "fast"}', make_detector(), 16_000_000)
    assert len(p.crops) == 1
    with pytest.raises(RequestError) as e:  # the restorer answered for another number of faces
        finish_request(p, np.zeros((3, 3, 512, 512), np.float32), source, None)
    assert e.value.code == "enhance_failed"


def test_a_strip_no_longer_breaks_face_detection():
    img = np.full((40, 65500, 3), 128, np.uint8)  # decoded without the header rule, as a library user might
    assert make_detector().detect(img) == []


# -- model.py's execute, driven directly -------------------------------------------------------------
class _Tensor:
    def __init__(self, name, value):
        self._name, self._value = name, np.asarray(value)

    def name(self):
        return self._name

    def as_numpy(self):
        return self._value


class _TritonError(Exception):
    INVALID_ARG = "INVALID_ARG"

    def __init__(self, msg, code=None):
        super().__init__(msg)
        self.msg, self.code = msg, code

    def message(self):
        return self.msg


class _Response:
    def __init__(self, output_tensors=None, error=None):
        self.outputs = {t.name(): t for t in output_tensors or []}
        self._error = error

    def has_error(self):
        return self._error is not None

    def error(self):
        return self._error


def _stub_pb_utils(restorer_down: bool):
    """The parts of ``triton_python_backend_utils`` face_enhance uses; the BLS models answer
    in-process (restorer: the crops back, upsampler: x2 nearest)."""
    pb = types.ModuleType("triton_python_backend_utils")
    pb.Tensor, pb.TritonError, pb.InferenceResponse = _Tensor, _TritonError, _Response
    pb.get_input_tensor_by_name = lambda req, name: req.get(name)
    pb.get_output_tensor_by_name = lambda resp, name: resp.outputs[name]

    class InferenceRequest:
        def __init__(self, model_name, requested_output_names, inputs):
            self.model, self.x = model_name, inputs[0].as_numpy()

        def exec(self):
            if self.model == "face_restorer":
                if restorer_down:
                    return _Response(error=_TritonError("face_restorer is not ready"))
                return _Response([_Tensor("output", self.x)])
            return _Response([_Tensor("output", self.x.repeat(2, axis=2).repeat(2, axis=3))])

    pb.InferenceRequest = InferenceRequest
    return pb


def _load_face_enhance(monkeypatch, restorer_down=False):
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", _stub_pb_utils(restorer_down))
    spec = importlib.util.spec_from_file_location("face_enhance_model",
                                                  ROOT / "model_repository" / "face_enhance" / "1" / "model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = module.TritonPythonModel()
    params = {"restorer": "face_restorer", "upsampler": "bg_upsampler", "max_pixels": "16000000",
              "restorer_max_batch": "8", "face_detector": ""}
    model.initialize({"model_config": json.dumps({"parameters": {k: {"string_value": v} for k, v in params.items()}}),
                      "model_repository": str(ROOT / "model_repository" / "face_enhance"), "model_version": "1"})
    return model


def _request(data: bytes, options: dict | None = None, photos: int = 1) -> dict:
    req = {"IMAGE": _Tensor("IMAGE", np.array([[data]] * photos, dtype=np.object_))}
    if options is not None:
        req["OPTIONS"] = _Tensor("OPTIONS", np.array([[json.dumps(options).encode()]], dtype=np.object_))
    return req


def test_execute_fails_only_the_offending_requests(monkeypatch):
    model = _load_face_enhance(monkeypatch)
    good, (other, _) = encode(face_photo(5)[0]), face_photo(6, size=(600, 450))
    crash_shape = other.shape
    real = model.detector

    class CrashOnOne:  # an unforeseen OpenCV failure on one particular photo
        def detect(self, img):
            return _Crashing().detect(img) if img.shape == crash_shape else real.detect(img)

    model.detector = CrashOnOne()
    requests = [_request(good, {"quality": "fast"}), _request(strip_jpeg()), _request(encode(other)),
                _request(b"not an image"), _request(good, {"upscale": 3}), _request(good, photos=2),
                _request(encode(face_photo(7, faces=0)[0]), {"quality": "medium"})]
    responses = model.execute(requests)
    assert len(responses) == len(requests)
    codes = [r.error().message().split(":")[0] if r.has_error() else None for r in responses]
    assert codes == [None, "image_aspect_ratio", "enhance_failed", "unsupported_image", "invalid_options",
                     "bad_batch", None]
    assert all(r.error().code == "INVALID_ARG" for r in responses if r.has_error())
    out = cv2.imdecode(np.frombuffer(responses[0].outputs["IMAGE_OUT"].as_numpy()[0, 0], np.uint8),
                       cv2.IMREAD_COLOR)
    assert out.shape == (960, 1280, 3) and int(responses[0].outputs["FACES"].as_numpy()[0, 0]) == 1
    assert json.loads(responses[-1].outputs["INFO"].as_numpy()[0, 0])["background_upsampled"] is True


def test_a_restorer_outage_fails_only_the_photos_with_faces_and_is_not_their_fault(monkeypatch):
    model = _load_face_enhance(monkeypatch, restorer_down=True)
    responses = model.execute([_request(encode(face_photo(8)[0]), {"quality": "fast"}),
                               _request(encode(face_photo(9, faces=0)[0]), {"quality": "fast"})])
    assert responses[0].has_error() and responses[0].error().message().startswith("restorer_failed")
    assert responses[0].error().code is None  # a plain error: the batch engine retries it
    assert not responses[1].has_error()


# -- the real server: the strip and a good photo in one execute ------------------------------------
@pytest.fixture(scope="module")
def batching_triton(enhance_repository, tmp_path_factory):
    """The enhancement repository with face_enhance on one instance that waits up to 2 s to
    fill a batch of two: two concurrent photos are sure to share an execute."""
    repo = tmp_path_factory.mktemp("enhance_batched") / "model_repository"
    shutil.copytree(enhance_repository, repo)
    cfg = repo / "face_enhance" / "config.pbtxt"
    text = cfg.read_text()
    for old, new in (("count: 2 kind: KIND_CPU", "count: 1 kind: KIND_CPU"),
                     ("max_queue_delay_microseconds: 0", "max_queue_delay_microseconds: 2000000")):
        assert old in text
        text = text.replace(old, new)
    cfg.write_text(text)
    srv = start_triton(repo, tmp_path_factory.mktemp("enhance_batched_log") / "triton.log")
    try:
        yield srv
    finally:
        srv.stop()


def test_the_strip_and_a_good_photo_in_one_batch(batching_triton):
    stats = RepositoryAPI(batching_triton.http_url)
    before = stats.counts("face_enhance")
    good = encode(face_photo(21)[0])
    # both in flight at once: the batcher waits for the second and runs them together
    ok, bad = SyncTriton(batching_triton.grpc_url, timeout_s=60).enhance_many([good, strip_jpeg()],
                                                                               {"quality": "fast"})
    after = stats.counts_after("face_enhance", before, 2)
    stats.close()
    # one execute held both requests
    assert (after.inference_count - before.inference_count, after.execution_count - before.execution_count) == (2, 1)
    assert not isinstance(ok, Exception), ok
    assert ok.faces == 1 and len(ok.image) > 1000
    assert isinstance(bad, BadInput) and bad.code == "image_aspect_ratio"  # Triton's INVALID_ARG, the model's code


# -- the gateway: strips are 422 before Triton, on every upload route ----------------------------
@pytest.fixture(scope="module")
def api(triton, tmp_path_factory):
    from gateway.main import create_app

    d = tmp_path_factory.mktemp("gw_strips")
    mp = pytest.MonkeyPatch()
    for k, v in {"TRITON_URL": triton.grpc_url, "DATABASE_URL": f"sqlite:///{d / 'store'}",
                 "OUTBOX_PATH": str(d / "outbox.db"), "IMAGE_DIR": str(d / "images"),
                 "ENHANCE_DIR": str(d / "enhance"), "BATCH_DATA_DIR": str(d / "batch"),
                 "AUTH_MODE": "off"}.items():  # upload checks here; access rules are another test's
        mp.setenv(k, v)
    mp.delenv("REDIS_URL", raising=False)
    get_settings.cache_clear()
    try:
        with TestClient(create_app()) as c:
            _, c.key = c.app.state.devices.create("pi-left", "left", True)
            yield c
    finally:
        mp.undo()
        get_settings.cache_clear()


def test_strips_are_422_before_triton_on_every_upload_route(api, triton):
    stats = RepositoryAPI(triton.http_url)

    def preprocessed():  # the detector decodes each image first
        return stats.counts("pcb_detector").inference_count

    auth = {"X-Device-Id": "pi-left", "X-API-Key": api.key}
    board = encode(render_board(3).image)
    png = strip_png()
    before = preprocessed()
    calls = [
        api.post("/v1/inspect", headers=auth, files={"image": ("s.png", png, "image/png")},
                 data={"board_id": "S1"}),
        api.post("/v1/inspect/dual", headers=auth, data={"board_id": "S2"},
                 files={"left": ("l.jpg", board, "image/jpeg"), "right": ("r.jpg", strip_jpeg(), "image/jpeg")}),
        api.post("/api/v1/enhance", files={"file": ("s.png", png, "image/png")}),
        api.post("/api/v1/enhance/batch", files=[("files", ("a.jpg", board, "image/jpeg")),
                                                 ("files", ("s.png", png, "image/png"))]),
    ]
    for r in calls:
        assert r.status_code == 422, r.text
        body = r.json()
        assert body["code"] == "image_aspect_ratio" and ("100000x1" in body["message"] or "65500x40" in body["message"])
    assert preprocessed() == before  # nothing reached Triton
    # the limit itself: 20:1 is inspected, 21:1 is not
    edge = encode(np.full((32, 32 * int(MAX_ASPECT_RATIO), 3), 100, np.uint8))
    r = api.post("/v1/inspect", headers=auth, files={"image": ("e.jpg", edge, "image/jpeg")}, data={"board_id": "S3"})
    assert r.status_code == 200, r.text
    over = encode(np.full((32, 32 * int(MAX_ASPECT_RATIO) + 32, 3), 100, np.uint8))
    r = api.post("/v1/inspect", headers=auth, files={"image": ("o.jpg", over, "image/jpeg")}, data={"board_id": "S4"})
    assert r.status_code == 422 and r.json()["code"] == "image_aspect_ratio"


def test_board_fuse_fails_only_the_request_with_a_bad_verdict(monkeypatch):
    """pcb_board_fuse: a verdict code out of range fails its own request, the one batched
    with it is answered (it used to raise out of execute and fail both)."""
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", _stub_pb_utils(False))
    spec = importlib.util.spec_from_file_location("board_fuse_model",
                                                  ROOT / "model_repository" / "pcb_board_fuse" / "1" / "model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    def req(left: int, right: int) -> dict:
        return {"VERDICT_LEFT": _Tensor("VERDICT_LEFT", np.array([[left]], np.int32)),
                "CONFIDENCE_LEFT": _Tensor("CONFIDENCE_LEFT", np.array([[0.9]], np.float32)),
                "VERDICT_RIGHT": _Tensor("VERDICT_RIGHT", np.array([[right]], np.int32)),
                "CONFIDENCE_RIGHT": _Tensor("CONFIDENCE_RIGHT", np.array([[0.8]], np.float32))}

    good, bad = module.TritonPythonModel().execute([req(0, 2), req(0, 99)])
    assert not good.has_error() and bad.has_error() and "invalid_verdict" in bad.error().message()
