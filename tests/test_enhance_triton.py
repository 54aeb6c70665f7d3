"""Enhancement models in the real Triton server: the face restorer answers the same as
PyTorch and onnxruntime on the same crops, face_enhance returns the photo with its faces
found where they were drawn, and concurrent photos' crops are restored in shared batches."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from enhance.pipeline import to_tensor
from enhance.synthetic import face_crop, face_photo
from export.enhance_nets import build
from inference import BadInput, InferenceError
from inference.repository_api import RepositoryAPI
from inference.sync import SyncTriton
from serving.ort_detector import OrtDetector
from serving.repository import LANE_MODELS
from tests.conftest import encode
from tests.triton_helpers import stub_pids

TOL = 1e-4
TIMEOUT_S = 300  # a photo's whole pipeline on a busy CPU: wait, as a caller without a deadline would


def test_restorer_parity_torch_onnx_triton(enhance_triton, enhance_repository):
    crops = to_tensor(np.stack([face_crop(i) for i in range(3)]))
    with torch.no_grad():
        ref = build("gfpgan", narrow=True).eval()(torch.from_numpy(crops)).numpy()  # same seed as the export
    ort_out = OrtDetector(enhance_repository / "face_restorer" / "1" / "model.onnx").run(crops)["output"]
    # the restorer alone, with the crops as its raw FP32 input (face_enhance calls it so)
    triton = SyncTriton(enhance_triton.grpc_url, TIMEOUT_S)
    tri = triton.infer_tensors("face_restorer", {"input": crops}).as_numpy("output")
    d_onnx, d_triton = float(np.abs(ort_out - ref).max()), float(np.abs(tri - ref).max())
    print(f"face_restorer on 3 crops: torch vs onnx {d_onnx:.2e}, torch vs triton {d_triton:.2e}")
    assert d_onnx < TOL and d_triton < TOL
    assert np.array_equal(tri, ort_out)  # Triton runs that very ONNX file


def test_face_enhance_finds_the_faces_where_they_are(enhance_triton):
    img, marks = face_photo(11, faces=3)
    r = SyncTriton(enhance_triton.grpc_url, TIMEOUT_S).enhance(encode(img), {"quality": "fast", "upscale": 2})
    assert r.faces == 3 and not r.info["no_face"]
    for m in marks:  # each drawn nose lies in one returned box
        assert sum(b[0] < m[2, 0] < b[2] and b[1] < m[2, 1] < b[3] for b in r.info["boxes"]) == 1
    out = cv2.imdecode(np.frombuffer(r.image, np.uint8), cv2.IMREAD_COLOR)
    assert out.shape == (960, 1280, 3)


def test_face_enhance_refuses_bad_input_per_request(enhance_triton):
    triton = SyncTriton(enhance_triton.grpc_url, TIMEOUT_S)
    with pytest.raises(BadInput) as e:
        triton.enhance(b"not an image", None)
    assert e.value.code == "unsupported_image"
    with pytest.raises(BadInput) as e:
        triton.enhance(encode(face_photo(1)[0]), {"tile": 5})
    assert e.value.code == "invalid_options"


def test_concurrent_photos_share_restorer_batches(enhance_triton):
    stats = RepositoryAPI(enhance_triton.http_url)
    before = stats.counts("face_restorer")
    photos = [encode(face_photo(300 + i, faces=2)[0]) for i in range(8)]
    # all eight in flight at once (the gateway's concurrent uploads, the batch engine's chunks)
    results = SyncTriton(enhance_triton.grpc_url, TIMEOUT_S).enhance_many(photos, {"quality": "fast"})
    assert not any(isinstance(r, InferenceError) for r in results), results
    assert all(r.faces == 2 for r in results)
    after = stats.counts_after("face_restorer", before, 16)
    stats.close()
    crops, executions = after.inference_count - before.inference_count, after.execution_count - before.execution_count
    assert crops == 16 and executions < 8, (crops, executions)  # > 2 crops per restorer run on average


def test_enhancement_takes_only_the_cpu_the_line_leaves(enhance_triton, triton):
    """Every thread of every enhancement stub (the photo work, the restorer's and the
    upsampler's onnxruntime pools) is SCHED_IDLE; the line's models stay normal."""
    import os

    from serving.cpu_priority import describe

    stubs = stub_pids(enhance_triton)
    assert {"face_enhance", "face_restorer", "bg_upsampler"} <= set(stubs)
    for model in ("face_enhance", "face_restorer", "bg_upsampler"):
        threads = [t for pid in stubs[model] for t in describe(pid)]
        assert threads and all(policy == os.SCHED_IDLE for _, policy, _ in threads), (model, threads)
    line = {m: pids for m, pids in stub_pids(triton).items() if m not in LANE_MODELS}  # the batch lane: idle
    assert "pcb_detector" in line and "pcb_board_fuse" in line
    for model, pids in line.items():
        assert all(policy == os.SCHED_OTHER and nice == 0 for pid in pids for _, policy, nice in describe(pid)), model


def test_cpu_priority_policies_in_a_process_of_their_own():
    import subprocess
    import sys

    code = ("import os, threading, time\n"
            "from serving import cpu_priority\n"
            "threading.Thread(target=time.sleep, args=(5,), daemon=True).start()\n"
            "print(cpu_priority.lower('nice:7'))\n"
            "print(sorted({(p, n) for _, p, n in cpu_priority.describe()}))\n"
            "try:\n    cpu_priority.lower('fast')\nexcept ValueError as e:\n    print('refused')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    assert out[0] == "nice:7" and out[1] == "[(0, 7)]" and out[2] == "refused"
