"""The seed's design, for comparison: a synchronous threaded HTTP server that runs
ultralytics in-process on every request (seed 001's Flask ``/predict``, same JSON shapes),
with the same demo model. ``python -m bench.seed_server --port P --weights W``."""

from __future__ import annotations

import argparse
import base64
import json
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import cv2
import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--weights", required=True)
    args = ap.parse_args()

    from ultralytics import YOLO

    model = YOLO(args.weights)
    model.predict(np.zeros((480, 640, 3), np.uint8), imgsz=320, device="cpu", verbose=False)  # warm-up

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *a):  # quiet
            pass

        def do_GET(self):
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b'{"status": "healthy"}')

        def do_POST(self):
            t0 = time.perf_counter()
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            frame = cv2.imdecode(np.frombuffer(base64.b64decode(body["frame"]), np.uint8), cv2.IMREAD_COLOR)
            r = model.predict(frame, imgsz=320, conf=0.25, device="cpu", verbose=False)[0]
            boxes = [{"x1": float(b[0]), "y1": float(b[1]), "x2": float(b[2]), "y2": float(b[3]),
                      "confidence": float(c), "class": r.names[int(k)]}
                     for b, c, k in zip(r.boxes.xyxy.numpy(), r.boxes.conf.numpy(), r.boxes.cls.numpy())]
            out = json.dumps({"status": "ok", "camera_id": body.get("camera_id"), "boxes": boxes,
                              "inference_time_ms": (time.perf_counter() - t0) * 1000}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

    ThreadingHTTPServer(("127.0.0.1", args.port), Handler).serve_forever()


if __name__ == "__main__":
    main()
