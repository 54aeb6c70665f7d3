"""One side of a board in one step: decode -> letterbox -> onnxruntime -> NMS -> verdict.

The CPU layout's ``pcb_detector`` runs this whole pipeline in one python-backend model
(serving/templates/inspect_model.py), where the GPU layout splits it over three models
(pcb_preprocess -> TensorRT pcb_detector -> pcb_postprocess). On a CPU every hop between
python-backend models costs a copy through shared memory and a wake-up of another stub
process; one step also means one dynamic batcher, so the line's priority level holds for
the whole request (Triton honours priority only at an ensemble's first step). Same
outputs in both layouts; the logic lives in pcb/ and is shared with the GPU layout's models.

Requests the dynamic batcher hands over together run as one onnxruntime call per input
shape (a camera sends one size, so one call in practice). A request that fails (a bad
image) fails alone, never its neighbours.

A detector version exported with the anomaly head (``python -m export anomaly``,
export/anomaly_net.py) answers an anomaly map from the same run: cropped to the image, it
goes out as ``ANOMALY_SCORE``/``ANOMALY_MAP`` and decides the review verdict (pcb/review.py).
A version without the head answers score -1 and an empty map ("not served").
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pcb import taxonomy
from pcb.image_decode import ImageError, decode_image
from pcb.letterbox import letterbox
from pcb.postprocess import postprocess
from pcb.review import crop_map, review
from pcb.side_config import DETECTOR_STRIDE, SideConfig
from serving.ort_detector import OrtDetector


class SideError(Exception):
    """One request's failure: ``code`` is the stable error code the gateway maps
    (inference/errors.py); ``bad_input`` says whether the caller is at fault."""

    def __init__(self, code: str, message: str, bad_input: bool):
        super().__init__(f"{code}: {message}")
        self.code, self.bad_input = code, bad_input


@dataclass
class _Prepared:
    chw: np.ndarray
    transform: np.ndarray


class SideInspector:
    def __init__(self, onnx_path: str | Path, cfg: SideConfig | None = None):
        self.cfg = cfg = cfg or SideConfig()
        self.detector = OrtDetector(onnx_path, cfg.intra_op_threads)
        self.tax = taxonomy.load()
        self.names = np.array([n.encode() for n in self.tax.class_names], dtype=np.object_)
        # the anomaly head knows one camera's scale: the size its good boards had
        meta = self.detector.session.get_modelmeta().custom_metadata_map
        size = meta.get("anomaly_source_wh", "")
        self.anomaly_wh = tuple(int(v) for v in size.split("x")) if "x" in size else None

    def _anomaly_applies(self, transform: np.ndarray) -> bool:
        """The head's bank holds patches at the scale of the boards it was fitted on; another
        frame size (a second camera, a crop, a zoom) would look anomalous all over, so there
        the side is answered without an anomaly (score -1, "not served for this size")."""
        return self.anomaly_wh is not None and (int(transform[4]), int(transform[5])) == self.anomaly_wh

    def warm_up(self) -> None:
        """One inference at the line's shape before the model reports ready: onnxruntime
        plans its kernels and allocates its arena on the first run, which would otherwise
        land on the first board after a start or a hot-swap."""
        import cv2

        frame = np.full((480, 640, 3), 114, np.uint8)
        # one request as Triton hands it over: (1, bytes); imencode's (bytes,) buffer would be
        # refused as a bad batch before the detector ever ran, warming nothing
        out = self.inspect([cv2.imencode(".jpg", frame)[1].reshape(1, -1)])[0]
        if isinstance(out, SideError):
            raise out

    def inspect(self, images: list[np.ndarray]) -> list[dict[str, np.ndarray] | SideError]:
        """Encoded images (uint8 arrays of shape (1, bytes), one per request) -> per request either its output
        tensors (each with a leading batch axis of 1) or its error."""
        prepared: list[_Prepared | SideError] = [self._prepare(b) for b in images]
        raw = self._detect([p for p in prepared if isinstance(p, _Prepared)])
        out: list[dict[str, np.ndarray] | SideError] = []
        for p in prepared:
            if isinstance(p, SideError):
                out.append(p)
                continue
            r = raw[id(p)]
            out.append(r if isinstance(r, SideError) else self._finish(*r, p))
        return out

    def _prepare(self, data: np.ndarray) -> _Prepared | SideError:
        if data.ndim != 2 or data.shape[0] != 1:
            return SideError("bad_batch", "send one encoded image per request", bad_input=True)
        try:
            img = decode_image(data[0], self.cfg.max_pixels)
            chw, transform = letterbox(img, self.cfg.imgsz, DETECTOR_STRIDE if self.cfg.rect else 0)
        except ImageError as e:
            return SideError(e.code, e.message, bad_input=True)
        except Exception as e:  # noqa: BLE001 - a decoder or letterbox fault on this image: this request only
            return SideError("preprocess_failed", f"{type(e).__name__}: {e}", bad_input=False)
        return _Prepared(chw, transform)

    def _detect(self, prepared: list[_Prepared]) -> dict[int, tuple[np.ndarray, int, np.ndarray | None] | SideError]:
        """One onnxruntime call per input shape; raw output, stamped version and (with the
        anomaly head) the anomaly map per image."""
        groups: dict[tuple[int, ...], list[_Prepared]] = {}
        for p in prepared:
            groups.setdefault(p.chw.shape, []).append(p)
        result: dict[int, tuple[np.ndarray, int, np.ndarray | None] | SideError] = {}
        for group in groups.values():
            try:  # one call per shape; a failing call is retried image by image (run_isolated)
                outs = self.detector.run_isolated([p.chw[None] for p in group])
            except Exception as e:  # noqa: BLE001 - a lone image the ONNX file refuses
                outs = [e]
            for p, out in zip(group, outs):
                result[id(p)] = (SideError("detector_failed", str(out), bad_input=False) if isinstance(out, Exception)
                                 else (out["output0"][0], int(out["version"][0, 0]),
                                       out["anomaly_map"][0] if "anomaly_map" in out else None))
        return result

    def _finish(self, raw: np.ndarray, version: int, amap: np.ndarray | None,
                p: _Prepared) -> dict[str, np.ndarray] | SideError:
        try:
            det, verdict = postprocess(raw, p.transform, self.cfg.post)
            if amap is None or not self._anomaly_applies(p.transform):
                score, cropped = np.float32(-1.0), np.zeros((0, 0), np.float32)
            else:
                cropped = np.ascontiguousarray(crop_map(amap, p.transform), np.float32)
                score = cropped.max()
                verdict = review(verdict, cropped, det[:, :4], p.transform, self.tax)
        except Exception as e:  # noqa: BLE001 - this request only
            return SideError("postprocess_failed", str(e), bad_input=False)
        return {
            "ANOMALY_SCORE": np.array([[score]], np.float32),
            "ANOMALY_MAP": cropped[None],
            "DETECTIONS": det[None],
            "CLASS_NAMES": self.names[det[:, 5].astype(np.int64)][None],
            "VERDICT": np.array([[verdict.code]], np.int32),
            "CONFIDENCE": np.array([[verdict.confidence]], np.float32),
            "version": np.array([[version]], np.int32),
        }

