"""The CPU layout's whole-side model, in process (serving/side_inspector.py): one batch of
requests in, one answer or one error per request out, whatever its neighbours hold."""

from __future__ import annotations

import numpy as np
import pytest

from pcb.side_config import SideConfig
from pcb.synthetic import render_board
from serving.side_inspector import SideError, SideInspector
from tests.conftest import encode


@pytest.fixture(scope="module")
def side(repository) -> SideInspector:
    s = SideInspector(repository / "pcb_detector" / "1" / "model.onnx")
    s.warm_up()
    return s


def _req(data: bytes) -> np.ndarray:
    return np.frombuffer(data, np.uint8)[None]


def test_a_batch_of_mixed_sizes_and_bad_images_answers_each_request(side):
    boards = [encode(render_board(40 + i, size=size).image)
              for i, size in enumerate([(640, 480), (640, 480), (480, 640), (800, 600)])]
    truncated = boards[0][: len(boards[0]) // 2]
    two_in_one = np.stack([np.frombuffer(boards[0][:100], np.uint8)] * 2)  # batch of 2 in one request
    requests = [_req(boards[0]), _req(truncated), _req(boards[1]), two_in_one,
                _req(boards[2]), _req(b"not an image at all" * 3), _req(boards[3])]
    out = side.inspect(requests)
    assert len(out) == len(requests)
    errors = {i: o.code for i, o in enumerate(out) if isinstance(o, SideError)}
    assert errors == {1: "invalid_image", 3: "bad_batch", 5: "unsupported_image"}
    assert all(out[i].bad_input for i in errors)
    for i in (0, 2, 4, 6):
        o = out[i]
        assert o["DETECTIONS"].shape[0] == 1 and o["DETECTIONS"].shape[2] == 6
        assert o["CLASS_NAMES"].shape == o["DETECTIONS"].shape[:2]
        assert o["version"].tolist() == [[1]]
    # alone or in a batch of other shapes, a board gets the same answer
    alone = side.inspect([_req(boards[2])])[0]
    np.testing.assert_allclose(alone["DETECTIONS"], out[4]["DETECTIONS"], atol=1e-4)


def test_a_detector_failure_fails_only_the_request_that_fails_alone(side, monkeypatch):
    """onnxruntime refusing a batch (an image it cannot take, OOM, a shape) is retried image by
    image: only the image that fails alone gets the error, as the service's fault (not 4xx)."""
    real = side.detector.run
    poison = encode(render_board(4, size=(640, 480)).image)
    poisoned = side._prepare(_req(poison)).chw  # what the detector would be handed for it

    def refuses_the_poison(images):
        if any(np.array_equal(x, poisoned) for x in images):
            raise RuntimeError("onnxruntime refused the batch")
        return real(images)

    monkeypatch.setattr(side.detector, "run", refuses_the_poison)
    boards = [encode(render_board(i, size=(640, 480)).image) for i in (5, 6)]
    out = side.inspect([_req(boards[0]), _req(poison), _req(boards[1])])
    assert isinstance(out[1], SideError) and out[1].code == "detector_failed" and not out[1].bad_input
    assert not isinstance(out[0], SideError) and not isinstance(out[2], SideError)
    alone = side.inspect([_req(boards[0])])[0]
    np.testing.assert_allclose(alone["DETECTIONS"], out[0]["DETECTIONS"], atol=1e-4)


def test_config_from_triton_parameters():
    cfg = SideConfig.from_strings({"imgsz": "416", "letterbox": "square", "conf_threshold": "0.4",
                                   "max_pixels": "1000000", "intra_op_threads": "2"})
    assert (cfg.imgsz, cfg.rect, cfg.post.nms.conf, cfg.max_pixels, cfg.intra_op_threads) == \
        (416, False, 0.4, 1_000_000, 2)
    assert SideConfig.from_strings({}).rect  # rect is the default form


def test_onnxruntime_refusing_one_request_fails_that_request_only(repository):
    """The adapters' batch call (serving/ort_detector.py, also under face_restorer and
    bg_upsampler): a real onnxruntime refusal (a float64 tensor poisons the concatenated batch)
    is retried request by request; the good requests get exactly their lone answers."""
    from serving.ort_detector import OrtDetector

    det = OrtDetector(repository / "pcb_detector" / "1" / "model.onnx", 1)
    rng = np.random.default_rng(0)
    good = [rng.random((1, 3, 256, 320), dtype=np.float32) for _ in range(2)]
    bad = rng.random((1, 3, 256, 320))  # float64: the graph takes float32 only
    out = det.run_isolated([good[0], bad, good[1]])
    assert isinstance(out[1], Exception)
    for i, g in ((0, good[0]), (2, good[1])):
        np.testing.assert_allclose(out[i]["output0"], det.run(g)["output0"], atol=1e-5)
    from onnxruntime.capi.onnxruntime_pybind11_state import InvalidArgument

    with pytest.raises(InvalidArgument):  # a lone request that fails raises, as run does
        det.run_isolated([bad])


def test_warm_up_runs_the_detector(repository):
    """The warm-up must reach onnxruntime: a request shaped as Triton hands it over, not a
    buffer the inspector refuses as a bad batch before the detector runs (which warmed nothing)."""
    s = SideInspector(repository / "pcb_detector" / "1" / "model.onnx")
    shapes = []
    run = s.detector.run
    s.detector.run = lambda images: shapes.append(images.shape) or run(images)  # type: ignore[method-assign]
    s.warm_up()
    assert len(shapes) == 1 and shapes[0][0] == 1


def test_a_preprocess_fault_fails_only_its_request(side, monkeypatch):
    """A fault past the image checks (a decoder bug, a letterbox that raises) used to escape
    ``inspect`` and fail the whole batch: it is now that request's ``preprocess_failed``
    (the service's fault, retryable), and its neighbours are answered."""
    import serving.side_inspector as mod
    from inference.errors import SERVICE_CODES, model_code

    real_letterbox, real_decode = mod.letterbox, mod.decode_image

    def letterbox_fails_on_800x600(img, *args):
        if img.shape[:2] == (600, 800):
            raise ValueError("letterbox fault")
        return real_letterbox(img, *args)

    def decoder_fails_on_short_data(data, *args):
        if len(data) < 64:
            raise RuntimeError("decoder fault")
        return real_decode(data, *args)

    monkeypatch.setattr(mod, "letterbox", letterbox_fails_on_800x600)
    monkeypatch.setattr(mod, "decode_image", decoder_fails_on_short_data)
    boards = [encode(render_board(50 + i, size=size).image) for i, size in enumerate([(640, 480), (800, 600),
                                                                                      (640, 480)])]
    out = side.inspect([_req(boards[0]), _req(boards[1]), _req(boards[2]), _req(b"\xff\xd8" * 10)])
    for i in (1, 3):
        assert isinstance(out[i], SideError) and out[i].code == "preprocess_failed" and not out[i].bad_input
        assert model_code(str(out[i]))[0] in SERVICE_CODES  # the gateway answers 503, not 4xx
    for i in (0, 2):
        assert not isinstance(out[i], SideError), out[i]
        alone = side.inspect([_req(boards[i])])[0]
        np.testing.assert_allclose(alone["DETECTIONS"], out[i]["DETECTIONS"], atol=1e-4)


def test_detector_template_fails_only_the_request_that_fails_alone(repository, monkeypatch):
    """serving/templates/detector_model.py (the split layout's ONNX detector) used to answer
    every request of a batch with the error when one input broke the call: now a request
    onnxruntime refuses (float64), or one without its input, fails alone; the others, of
    either shape, get exactly their lone answers."""
    import importlib.util
    import json
    import sys

    from serving.ort_detector import OrtDetector
    from tests.conftest import ROOT
    from tests.test_enhance_robustness import _stub_pb_utils, _Tensor

    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", _stub_pb_utils(False))
    spec = importlib.util.spec_from_file_location("detector_model_template",
                                                  ROOT / "serving" / "templates" / "detector_model.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = module.TritonPythonModel()
    model.initialize({"model_config": json.dumps({"parameters": {"intra_op_threads": {"string_value": "1"}}}),
                      "model_repository": str(repository / "pcb_detector"), "model_version": "1"})
    rng = np.random.default_rng(1)
    wide = [rng.random((1, 3, 256, 320), dtype=np.float32) for _ in range(2)]
    tall = rng.random((1, 3, 320, 256), dtype=np.float32)
    bad = rng.random((1, 3, 256, 320))  # float64: poisons the concatenated call of its shape
    requests = [{"images": _Tensor("images", wide[0])}, {"images": _Tensor("images", bad)},
                {"images": _Tensor("images", tall)}, {}, {"images": _Tensor("images", wide[1])}]
    responses = model.execute(requests)
    assert len(responses) == len(requests)
    assert [r.has_error() for r in responses] == [False, True, False, True, False]
    assert all(responses[i].error().message().startswith("detector_failed: ") for i in (1, 3))
    det = OrtDetector(repository / "pcb_detector" / "1" / "model.onnx", 1)
    for i, x in ((0, wide[0]), (2, tall), (4, wide[1])):
        np.testing.assert_allclose(responses[i].outputs["output0"].as_numpy(), det.run(x)["output0"], atol=1e-5)
