"""The detector on the CPU: an ONNX file run by onnxruntime over a whole dynamic batch.

Used by the python-backend models of the CPU layout (the whole-side detector, the restorer
and the upsampler), by the in-process benchmark baseline and by the parity tests. Requests
that Triton's dynamic batcher hands over together are concatenated into one ``session.run``
call (the CPU detector is configured for one image per execution: see
export/detector_config.py).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort


class OrtDetector:
    def __init__(self, path: str | Path, threads: int = 0):
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads  # 0 = onnxruntime picks (one per core)
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # inside Triton the pre/post-processing processes share the cores: idle ORT threads
        # must sleep, not spin, or they steal the CPU the next image's decode needs
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]

    def run(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """(B, 3, S, S) float32 -> {output name: (B, ...)}."""
        outs = self.session.run(self.output_names, {self.input_name: images})
        return dict(zip(self.output_names, outs))

    def run_split(self, batches: list[np.ndarray]) -> list[dict[str, np.ndarray]]:
        """Run several requests' inputs as one batch and split the outputs back."""
        sizes = [b.shape[0] for b in batches]
        merged = self.run(batches[0] if len(batches) == 1 else np.concatenate(batches))
        bounds = np.cumsum([0] + sizes)
        return [{k: v[bounds[i]:bounds[i + 1]] for k, v in merged.items()} for i in range(len(sizes))]

    def run_isolated(self, batches: list[np.ndarray]) -> list[dict[str, np.ndarray] | Exception]:
        """``run_split``, but a call that fails is retried request by request, so only the
        requests that fail alone get their exception (one hostile input or one shape the
        file refuses never fails its batch neighbours); the rest get their outputs."""
        try:
            return list(self.run_split(batches))
        except Exception:  # noqa: BLE001 - find which requests it was
            if len(batches) == 1:
                raise
        results: list[dict[str, np.ndarray] | Exception] = []
        for b in batches:
            try:
                results.append(self.run_split([b])[0])
            except Exception as e:  # noqa: BLE001 - this request's own failure, handed back
                results.append(e)
        return results

    def run_requests(self, inputs: list[np.ndarray | Exception]) -> list[dict[str, np.ndarray] | Exception]:
        """One answer per request of a Triton batch: outputs, or the exception of a request
        that failed alone. Requests of one shape run as one call (``run_isolated``); an
        exception handed in (an input that could not be read) is that request's answer."""
        out: dict[int, dict[str, np.ndarray] | Exception] = {}
        groups: dict[tuple[int, ...], list[tuple[int, np.ndarray]]] = {}
        for i, x in enumerate(inputs):
            if isinstance(x, Exception):
                out[i] = x
            else:
                groups.setdefault(x.shape[1:], []).append((i, x))
        for group in groups.values():
            try:
                answers = self.run_isolated([x for _, x in group])
            except Exception as e:  # noqa: BLE001 - a lone request the ONNX file refuses
                answers = [e]
            for (i, _), a in zip(group, answers):
                out[i] = a
        return [out[i] for i in range(len(inputs))]
