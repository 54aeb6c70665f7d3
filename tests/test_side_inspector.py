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


def test_a_detector_failure_fails_its_group_as_the_services_fault(side, monkeypatch):
    def broken(images):
        raise RuntimeError("onnxruntime refused the shape")

    monkeypatch.setattr(side.detector, "run", broken)
    out = side.inspect([_req(encode(render_board(3).image))])
    assert isinstance(out[0], SideError) and out[0].code == "detector_failed" and not out[0].bad_input


def test_config_from_triton_parameters():
    cfg = SideConfig.from_strings({"imgsz": "416", "letterbox": "square", "conf_threshold": "0.4",
                                   "max_pixels": "1000000", "intra_op_threads": "2"})
    assert (cfg.imgsz, cfg.rect, cfg.post.nms.conf, cfg.max_pixels, cfg.intra_op_threads) == \
        (416, False, 0.4, 1_000_000, 2)
    assert SideConfig.from_strings({}).rect  # rect is the default form


def test_warm_up_runs_the_detector(repository):
    """The warm-up must reach onnxruntime: a request shaped as Triton hands it over, not a
    buffer the inspector refuses as a bad batch before the detector runs (which warmed nothing)."""
    s = SideInspector(repository / "pcb_detector" / "1" / "model.onnx")
    shapes = []
    run = s.detector.run
    s.detector.run = lambda images: shapes.append(images.shape) or run(images)  # type: ignore[method-assign]
    s.warm_up()
    assert len(shapes) == 1 and shapes[0][0] == 1
