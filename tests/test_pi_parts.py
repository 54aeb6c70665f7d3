"""Edge pieces without a gateway: configuration, frame sources (the real OpenCV capture path
over a video file standing in for the camera), overlay, SIGTERM handling."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest

from pcb.synthetic import render_board
from pi_edge.capture import FileSource, SyntheticBoards, open_source
from pi_edge.config import load_config
from tests.conftest import ROOT


def test_yaml_then_env(tmp_path, monkeypatch):
    p = tmp_path / "edge.yaml"
    p.write_text("device_id: pi-7\nside: right\nfps: 5\njpeg_quality: 90\n")
    monkeypatch.setenv("PI_EDGE_FPS", "8")
    cfg = load_config(p)
    assert (cfg.device_id, cfg.side, cfg.fps, cfg.jpeg_quality, cfg.timeout_s) == ("pi-7", "right", 8.0, 90, 5.0)


def test_requests_on_the_wire_follow_the_latency_budget(tmp_path):
    """Unset, the sender's depth holds one latency budget of frames at the capture rate."""
    from pi_edge.config import EdgeConfig, in_flight_limit

    def depth(**kw) -> int:
        return in_flight_limit(EdgeConfig(**kw))
    assert depth() == 3  # 300 ms at 10 fps
    assert depth(fps=35) == 11 and depth(fps=20, latency_budget_ms=400) == 8
    assert depth(fps=4) == 2 and depth(fps=0) == 2  # never under two; unpaced sources keep two
    assert depth(fps=10_000) == 32  # a mistyped rate opens no hundreds of connections
    assert depth(fps=35, max_in_flight=2) == 2  # an explicit depth stands
    p = tmp_path / "edge.yaml"
    p.write_text("fps: 25\nmax_in_flight: null\nlatency_budget_ms: 200\n")
    assert in_flight_limit(load_config(p)) == 5
    for bad in (0, -1, float("inf"), float("nan")):
        with pytest.raises(ValueError):
            EdgeConfig(latency_budget_ms=bad)
    assert depth(fps=float("inf")) == 2 and depth(fps=float("nan")) == 2


def _video(path, n=5):
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (640, 480))
    for i in range(n):
        w.write(render_board(i).image)
    w.release()


def test_opencv_capture_path_over_a_video_file(tmp_path):
    _video(tmp_path / "line.avi")
    src = open_source(f"camera:{tmp_path / 'line.avi'}")
    frames = list(src.frames())
    src.close()
    assert len(frames) == 5 and frames[0].shape == (480, 640, 3)
    assert len(list(open_source(f"video:{tmp_path / 'line.avi'}").frames())) == 5


def test_folder_and_synthetic_sources(tmp_path):
    for i in range(3):
        cv2.imwrite(str(tmp_path / f"{i}.jpg"), render_board(i).image)
    (tmp_path / "notes.txt").write_text("not an image")
    assert len(list(FileSource(tmp_path).frames())) == 3
    left = list(SyntheticBoards("left", 640, 480, count=2).frames())
    again = list(SyntheticBoards("left", 640, 480, count=2).frames())
    right = list(SyntheticBoards("right", 640, 480, count=2).frames())
    assert np.array_equal(left[1], again[1]) and not np.array_equal(left[1], right[1])


def test_sigterm_stops_cleanly_and_drives_pins_low(tmp_path):
    env = {**os.environ, "PI_EDGE_GATEWAY_URL": "http://127.0.0.1:9", "PI_EDGE_LOG_DIR": str(tmp_path),
           "PI_EDGE_SPOOL_DIR": str(tmp_path / "spool"), "PI_EDGE_FPS": "2"}
    p = subprocess.Popen([sys.executable, "-m", "pi_edge", "--simulate"], cwd=ROOT, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    time.sleep(4)
    p.send_signal(signal.SIGTERM)
    out, _ = p.communicate(timeout=20)
    assert p.returncode == 0, out[-2000:]
    assert "all sorter pins low" in out
    # the gateway was unreachable: what was captured went to the spool, not lost
    assert any((tmp_path / "spool").rglob("*.jpg"))
