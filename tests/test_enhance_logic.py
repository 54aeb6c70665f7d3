"""enhance/ without a server: Haar finds the synthetic faces, align -> paste-back keeps a face
where it was (at upscale 1 and 2), tiles are seamless, options and the no-face path behave,
and the task store expires what it should."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from enhance.align import FACE_SIZE, align_matrix, paste_face, template, warp_face
from enhance.face_detect import HaarFaceDetector, landmarks_from_box, landmarks_from_eyes
from enhance.options import MAX_OUTPUT_PIXELS, OptionError, OutputTooLarge, check_output_size, parse_options
from enhance.pipeline import enhance, from_tensor, to_tensor
from enhance.synthetic import face_photo
from enhance.tiles import upsample_tiled


def test_haar_finds_the_synthetic_faces_with_usable_landmarks():
    det = HaarFaceDetector()
    found = total = 0
    for seed in range(12):
        img, marks = face_photo(seed, faces=1 + seed % 3)
        faces = det.detect(img)
        total += len(marks)
        for m in marks:
            hit = [f for f in faces if f.box[0] < m[2, 0] < f.box[2] and f.box[1] < m[2, 1] < f.box[3]]
            if hit:
                found += 1
                eye = np.linalg.norm(m[1] - m[0])
                assert np.abs(hit[0].landmarks - m).max() < 0.35 * eye  # close enough to align
    assert found >= 0.9 * total, (found, total)


def test_landmark_geometry_from_an_injected_box_and_from_eyes():
    pts = landmarks_from_box(100, 50, 200, 200)
    assert pts[0, 0] < pts[2, 0] < pts[1, 0] and pts[0, 1] < pts[2, 1] < pts[3, 1]
    t = template()
    assert np.allclose(landmarks_from_eyes(t[0], t[1]), t, atol=3)  # the template's own proportions


def _face_centre_after(img, marks, upscale):
    """Paint the aligned crop solid white, paste it back: where does the white land?"""
    m = align_matrix(marks)
    white = np.full((FACE_SIZE, FACE_SIZE, 3), 255, np.uint8)
    canvas = cv2.resize(np.zeros_like(img), None, fx=upscale, fy=upscale, interpolation=cv2.INTER_NEAREST)
    out = paste_face(canvas, white, m, upscale)
    ys, xs = np.nonzero(out[:, :, 0] > 128)
    return np.array([xs.mean(), ys.mean()]) / upscale


@pytest.mark.parametrize("upscale", [1, 2])
def test_align_paste_round_trip_keeps_the_face_in_place(upscale):
    img, marks = face_photo(7, faces=2)
    for lm in marks:
        # the crop's centre maps back onto the face's centre (the template's middle)
        centre = cv2.invertAffineTransform(align_matrix(lm)) @ np.array([256, 256, 1.0])
        got = _face_centre_after(img, lm, upscale)
        assert np.linalg.norm(got - centre) < 3, (got, centre)
        assert np.linalg.norm(got - lm.mean(0)) < 0.5 * np.linalg.norm(lm[1] - lm[0])
    # the unchanged crop pasted back leaves the photo as it was (up to resampling)
    m = align_matrix(marks[0])
    back = paste_face(img.copy(), warp_face(img, m), m, 1)
    x1, y1 = (marks[0].min(0) - 10).astype(int)
    x2, y2 = (marks[0].max(0) + 10).astype(int)
    diff = np.abs(back[y1:y2, x1:x2].astype(int) - img[y1:y2, x1:x2].astype(int))
    assert diff.mean() < 4


def test_tiles_are_seamless():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (203, 317, 3), np.uint8)

    def nearest_x2(t):  # (N, 3, T, T) -> (N, 3, 2T, 2T)
        return t.repeat(2, axis=2).repeat(2, axis=3)

    out = upsample_tiled(img, nearest_x2, 2, tile=64, pad=6, max_batch=3)
    assert np.array_equal(out, cv2.resize(img, (634, 406), interpolation=cv2.INTER_NEAREST))


def test_tensor_conversion_round_trip():
    crops = np.random.default_rng(1).integers(0, 255, (2, 8, 8, 3), np.uint8)
    x = to_tensor(crops)
    assert x.shape == (2, 3, 8, 8) and x.min() >= -1 and x.max() <= 1
    assert np.array_equal(from_tensor(x), crops)


def test_options_presets_and_limits():
    assert parse_options(None).quality == "high"
    fast = parse_options('{"quality": "fast"}')
    assert fast.background is False and fast.tile == 512
    assert parse_options({"quality": "fast", "background": True}).background is True  # explicit wins
    for bad in ('{"tile": 100}', '{"tile": 600}', '{"quality": "best"}', '{"upscale": 3}', "[1]", "{",
                '{"colour": 1}', '{"weight": 2}'):
        with pytest.raises(OptionError):
            parse_options(bad)


@pytest.mark.parametrize("w,h,upscale,ok", [
    (4000, 4000, 2, True),  # 16 MP at x2: exactly the 64 MP bound
    (4000, 4000, 4, False),  # the 256 MP result the bound is for
    (2000, 2000, 4, True), (2001, 2000, 4, False),
    (20000, 1000, 2, False),  # 80 MP
    (30000, 100, 4, False),  # few pixels, but a side no encoder writes
    (1, 1, 4, True),
])
def test_output_size_is_input_times_upscale_squared(w, h, upscale, ok):
    if ok:
        check_output_size(w, h, upscale)
        assert (w * upscale) * (h * upscale) <= MAX_OUTPUT_PIXELS
    else:
        with pytest.raises(OutputTooLarge) as e:
            check_output_size(w, h, upscale)
        assert e.value.code == "output_too_large"


def test_pipeline_no_face_is_background_only_and_faces_are_counted():
    det = HaarFaceDetector()
    calls = []

    def identity(x):
        calls.append(len(x))
        return x

    blank = np.full((120, 160, 3), 90, np.uint8)
    r = enhance(blank, parse_options({"quality": "fast"}), det, identity)
    assert r.no_face and r.faces == 0 and r.image.shape == (240, 320, 3) and not calls
    img, marks = face_photo(3, faces=2)
    r = enhance(img, parse_options({"quality": "fast", "upscale": 1}), det, identity)
    assert r.faces == 2 and calls == [2]  # both crops in one restorer call
    assert np.abs(r.image.astype(int) - img.astype(int)).mean() < 2  # identity restorer: photo unchanged


def test_task_store_expiry(tmp_path):
    from gateway.services.enhance_tasks import Batch, Task, TaskStore

    s = TaskStore()
    t = Task(id="t1", filename="a.jpg", input_path=tmp_path / "a", options={}, batch_id="b1")
    s.add(Batch("b1", ["t1"], tmp_path), [t])
    assert s.counts()["queued"] == 1 and s.expired(0) == []  # unfinished: kept
    s.set_state(t, "completed")
    assert s.expired(3600) == []
    assert [b.id for b in s.expired(10, now=t.finished_at + 11)] == ["b1"]
    assert "t1" not in s.tasks and s.counts()["completed"] == 0
