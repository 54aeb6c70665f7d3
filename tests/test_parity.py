"""Exported models agree with their source.

1. The ONNX file (the model Triton's CPU layout runs) against the PyTorch model it was
   exported from, on the same tensors: raw outputs within 1e-3 (max abs).
2. The whole Triton ``pcb_inspect`` ensemble, in both layouts (the CPU layout's whole-side
   model and the split GPU layout), against ultralytics' default ``predict`` on the .pt, on
   images of odd sizes and formats: every box matched at IoU >= 0.9 with the same class and
   score within 0.02, and the same verdict. Both letterbox the rect way (pad the short side
   to a multiple of 32 only: 640x480 -> 320x256, pcb/letterbox.py); with ``letterbox:
   square`` the models match ``predict(rect=False)`` instead, checked too.
3. ``pcb_dual_inspect`` against two single calls fused in Python (pcb/verdict.py).
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from ultralytics import YOLO

from inference.sync import SyncTriton
from pcb import taxonomy
from pcb.synthetic import render_board
from pcb.verdict import SideVerdict, fuse, side_verdict
from serving.ort_detector import OrtDetector
from tests.conftest import WEIGHTS, encode
from tests.triton_helpers import dual_inspect, inspect, iou, match_detections

MIN_IOU, SCORE_TOL = 0.9, 0.02


@pytest.fixture(scope="module")
def yolo():
    return YOLO(str(WEIGHTS))


@pytest.fixture(scope="module", params=["cpu", "split"])
def client(request):
    srv = request.getfixturevalue("triton" if request.param == "cpu" else "split_triton")
    return SyncTriton(srv.grpc_url)


def _cases(tmp_path):
    """(name, encoded bytes, file path) of odd sizes and formats, with defects in them."""
    cases = []
    boards = [render_board(900 + i, size=(640, 480), force=f) for i, f in enumerate(
        [["solder_bridge", "spurious_copper"], ["missing_component", "short"], ["open_circuit"],
         ["damaged_pad", "cold_joint", "pin_hole"], []])]
    big = cv2.resize(render_board(950, size=(960, 540), force=["misaligned_component", "mouse_bite"]).image,
                     (1920, 1080))
    tall = cv2.resize(render_board(951, size=(480, 640), force=["insufficient_solder"]).image, (333, 777))
    grey = cv2.cvtColor(render_board(952, force=["spur", "short"]).image, cv2.COLOR_BGR2GRAY)
    rgba = cv2.cvtColor(render_board(953, force=["damaged_pad"]).image, cv2.COLOR_BGR2BGRA)
    rgba[..., 3] = 200
    items = [(f"board{i}.jpg", b.image, ".jpg") for i, b in enumerate(boards)]
    items += [("1920x1080.jpg", big, ".jpg"), ("333x777.jpg", tall, ".jpg"),
              ("grey.png", grey, ".png"), ("alpha.png", rgba, ".png")]
    for name, img, ext in items:
        data = encode(img, ext)
        path = tmp_path / name
        path.write_bytes(data)
        cases.append((name, data, path))
    return cases


def _ultralytics(yolo, path, **kw) -> np.ndarray:
    r = yolo.predict(str(path), imgsz=320, conf=0.25, iou=0.7, device="cpu", verbose=False, **kw)[0]
    b = r.boxes
    return np.concatenate([b.xyxy.numpy(), b.conf.numpy()[:, None], b.cls.numpy()[:, None]], 1)


def test_onnx_matches_pytorch(repository, yolo):
    det = OrtDetector(repository / "pcb_detector" / "1" / "model.onnx")
    x = np.random.default_rng(0).random((4, 3, 320, 320), dtype=np.float32)
    model = yolo.model.float().eval()
    with torch.no_grad():
        ref = model(torch.from_numpy(x))
    ref = (ref[0] if isinstance(ref, (list, tuple)) else ref).numpy()
    out = det.run(x)
    assert out["output0"].shape == ref.shape
    diff = float(np.abs(out["output0"] - ref).max())
    print(f"ONNX vs PyTorch raw output, max abs diff: {diff:.2e}")
    assert diff < 1e-3
    assert out["version"].tolist() == [[1]] * 4  # the stamped version, one per batch row


def test_triton_ensemble_matches_ultralytics(client, yolo, tmp_path):
    _matches_ultralytics(lambda data: inspect(client, data), lambda path: _ultralytics(yolo, path), tmp_path)


def test_square_letterbox_matches_ultralytics_rect_false(repository, yolo, tmp_path):
    """The other form, in process (the same SideInspector the CPU layout's model runs)."""
    from pcb.side_config import SideConfig
    from serving.side_inspector import SideInspector

    side = SideInspector(repository / "pcb_detector" / "1" / "model.onnx", SideConfig(rect=False))

    def ours(data: bytes) -> dict:
        out = side.inspect([np.frombuffer(data, np.uint8)[None]])[0]
        assert isinstance(out, dict), out
        return {"detections": out["DETECTIONS"][0], "verdict": int(out["VERDICT"][0, 0]),
                "confidence": float(out["CONFIDENCE"][0, 0]),
                "class_names": [n.decode() for n in out["CLASS_NAMES"][0]]}

    _matches_ultralytics(ours, lambda path: _ultralytics(yolo, path, rect=False), tmp_path)


def _matches_ultralytics(run, reference, tmp_path) -> None:
    worst_iou, worst_score, n_boxes = 1.0, 0.0, 0
    for name, data, path in _cases(tmp_path):
        ref = reference(path)
        got = run(data)
        problems = match_detections(ref, got["detections"], MIN_IOU, SCORE_TOL)
        assert not problems, f"{name}: {problems}"
        want = side_verdict(ref[:, 5].astype(int), ref[:, 4])
        assert got["verdict"] == want.code, name
        assert got["confidence"] == pytest.approx(want.confidence, abs=SCORE_TOL), name
        names = taxonomy.load().class_names
        assert got["class_names"] == [names[int(c)] for c in got["detections"][:, 5]]
        # how close, for the record
        for d in ref:
            same = [e for e in got["detections"] if int(e[5]) == int(d[5])]
            if same:
                best = max(same, key=lambda e: iou(d, e))
                worst_iou = min(worst_iou, iou(d, best))
                worst_score = max(worst_score, abs(best[4] - d[4]))
                n_boxes += 1
    print(f"parity over {n_boxes} boxes on 9 images: min IoU {worst_iou:.6f}, max score diff {worst_score:.2e}")
    assert n_boxes > 0, "the demo detector found nothing on boards full of defects"


def test_dual_ensemble_matches_two_single_calls_fused(client, tmp_path):
    cases = _cases(tmp_path)
    for (ln, left, _), (rn, right, _) in zip(cases, cases[1:] + cases[:1]):
        a, b = inspect(client, left), inspect(client, right)
        dual = dual_inspect(client, left, right)
        assert not match_detections(a["detections"], dual["left_detections"], 0.999, 1e-5)
        assert not match_detections(b["detections"], dual["right_detections"], 0.999, 1e-5)
        board = fuse(SideVerdict(a["verdict"], a["confidence"]), SideVerdict(b["verdict"], b["confidence"]))
        assert (dual["left_verdict"], dual["right_verdict"]) == (a["verdict"], b["verdict"])
        assert dual["board_verdict"] == board.code, (ln, rn)
        assert dual["board_confidence"] == pytest.approx(board.confidence, abs=1e-6)
        assert (dual["gpio_pin"], dual["gpio_duration_ms"]) == (board.gpio_pin, board.gpio_duration_ms)
