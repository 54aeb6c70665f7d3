"""Model names, tensor names and request builders: what goes over the wire to each model.

The builders take a tritonclient ``InferInput`` class, so the same request is built for the
gRPC aio client (the gateway) and the sync one (workers, demo, benchmarks): the two
modules define distinct but identically shaped classes.
"""

from __future__ import annotations

import json

import numpy as np
from tritonclient.utils import np_to_triton_dtype

SINGLE_MODEL = "pcb_inspect"  # one encoded image -> detections, verdict
DUAL_MODEL = "pcb_dual_inspect"  # both sides of a board -> each side + the board's verdict and pulse
ENHANCE_MODEL = "face_enhance"  # one encoded photo + options JSON -> the enhanced photo
DETECTOR_MODEL = "pcb_detector"  # the CPU layout's whole side: called directly only in shadow
SHADOW_SUFFIX = "_shadow"  # pcb_detector_shadow: a candidate version beside the served one


def shadow_model(model: str = DETECTOR_MODEL) -> str:
    """The name a shadowed version is loaded under (serving/admin.py ``shadow``), so the
    ensembles, which follow the highest served version of ``model``, never see it."""
    return model + SHADOW_SUFFIX


# The batch lane (serving/batch_lane.py): the served detector again, on CPU the line leaves,
# behind a one-step ensemble with pcb_inspect's tensors. Batch re-inspection goes there when it
# is loaded (the CPU layout), so an archive never queues in the instances the sorter's boards use.
BATCH_LANE_MODEL = "pcb_inspect_batch"
BATCH_LANE_DETECTOR = "pcb_detector_batch"
# present only in the split (GPU) layout: the first step, the one with priority levels
SPLIT_FIRST_STEP = "pcb_preprocess"

# Priority levels (lower is served first): the sorter's boards at the top, batch
# re-inspection below; a request without one (perf_analyzer, a script) gets the lower level.
# Only the GPU layout's first step, pcb_preprocess, has levels: on the CPU levels would switch
# off Triton's prefetching (export/detector_config.py), and there batch work has a lane of its
# own instead. A model without levels serves every request at its default, in arrival order.
PRIORITY_LINE = 1
PRIORITY_BACKGROUND = 2
PRIORITY_LEVELS = 2

# The models whose queues a request of each entry model waits in (statistics): the CPU layout
# serves the side in pcb_detector alone, the GPU layout splits it in three; whichever are
# loaded count.
QUEUE_MODELS = {SINGLE_MODEL: ("pcb_preprocess", "pcb_detector", "pcb_postprocess"),
                DUAL_MODEL: ("pcb_preprocess", "pcb_detector", "pcb_postprocess", "pcb_board_fuse"),
                BATCH_LANE_MODEL: (BATCH_LANE_DETECTOR,),
                ENHANCE_MODEL: ("face_enhance", "face_restorer", "bg_upsampler")}

SIDE_OUTPUTS = ("DETECTIONS", "VERDICT", "CONFIDENCE", "DETECTOR_VERSION")
DUAL_OUTPUTS = (*(f"{s}_{o}" for s in ("LEFT", "RIGHT") for o in SIDE_OUTPUTS),
                "BOARD_VERDICT", "BOARD_CONFIDENCE", "GPIO_PIN", "GPIO_DURATION_MS")
ENHANCE_OUTPUTS = ("IMAGE_OUT", "FACES", "INFO")


def tensor_input(infer_input, name: str, array: np.ndarray):
    """Any numpy array as the tensor ``name``, its Triton type from its dtype (a single
    model's own input, e.g. the face restorer's FP32 crops)."""
    inp = infer_input(name, list(array.shape), np_to_triton_dtype(array.dtype))
    inp.set_data_from_numpy(array)
    return inp


def image_input(infer_input, name: str, data: bytes):
    """Encoded image bytes as the ``[1, n]`` UINT8 tensor the pre-processors decode."""
    arr = np.frombuffer(data, np.uint8)[None]
    inp = infer_input(name, list(arr.shape), "UINT8")
    inp.set_data_from_numpy(arr)
    return inp


def bytes_input(infer_input, name: str, data: bytes):
    """One ``[1, 1]`` BYTES element (a photo, an options JSON)."""
    inp = infer_input(name, [1, 1], "BYTES")
    inp.set_data_from_numpy(np.array([[data]], dtype=np.object_))
    return inp


def inspect_request(infer_input, image: bytes) -> list:
    return [image_input(infer_input, "IMAGE", image)]


def dual_request(infer_input, left: bytes, right: bytes) -> list:
    return [image_input(infer_input, "LEFT_IMAGE", left), image_input(infer_input, "RIGHT_IMAGE", right)]


def enhance_request(infer_input, photo: bytes, options: dict | bytes | None) -> list:
    raw = options if isinstance(options, bytes) else json.dumps(options or {}).encode()
    return [bytes_input(infer_input, "IMAGE", photo), bytes_input(infer_input, "OPTIONS", raw)]
