"""Pure logic of pcb/: letterbox, NMS and the transform back, checked against ultralytics'
own implementation; image decoding refusals; verdicts and fusion."""

import numpy as np
import pytest
import torch
from ultralytics.data.augment import LetterBox
from ultralytics.utils import nms as ul_nms
from ultralytics.utils.ops import scale_boxes

from pcb import taxonomy
from pcb.image_decode import ImageError, decode_image
from pcb.letterbox import letterbox, to_image
from pcb.nms import NmsConfig, nms
from pcb.verdict import SideVerdict, fuse, side_verdict
from tests.conftest import encode


@pytest.mark.parametrize("rect", [False, True])
@pytest.mark.parametrize("shape", [(480, 640), (1080, 1920), (777, 333), (320, 320), (17, 900)])
def test_letterbox_matches_ultralytics(shape, rect):
    """Square: LetterBox(auto=False); rect: LetterBox(auto=True, stride=32), what ultralytics'
    predict uses on a .pt (640x480 -> 320x256)."""
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (*shape, 3), dtype=np.uint8)
    ours, transform = letterbox(img, 320, 32 if rect else 0)
    ref = LetterBox((320, 320), auto=rect, stride=32)(image=img)
    ref = ref[..., ::-1].transpose(2, 0, 1).astype(np.float32) / 255
    assert ours.shape == ref.shape
    if rect and shape == (480, 640):
        assert ours.shape == (3, 256, 320)
    np.testing.assert_allclose(ours, ref, atol=1e-6)
    # and boxes go back exactly as ultralytics' scale_boxes sends them
    boxes = rng.uniform(0, 320, (20, 4)).astype(np.float32)
    boxes[:, 2:] = boxes[:, :2] + rng.uniform(1, 60, (20, 2))
    want = scale_boxes(ours.shape[1:], torch.tensor(boxes.copy()), shape).numpy()
    np.testing.assert_allclose(to_image(boxes.copy(), transform), want, atol=1e-3)


def test_nms_matches_ultralytics():
    rng = np.random.default_rng(1)
    for trial in range(5):
        pred = np.zeros((16, 2100), np.float32)
        pred[:2] = rng.uniform(0, 320, (2, 2100))
        pred[2:4] = rng.uniform(4, 80, (2, 2100))
        pred[4:] = rng.uniform(0, 1, (12, 2100)) ** (4 + 4 * trial)  # mostly low, some high
        ours = nms(pred, NmsConfig(conf=0.25, iou=0.7))
        ref = ul_nms.non_max_suppression(torch.tensor(pred[None]), conf_thres=0.25, iou_thres=0.7)[0].numpy()
        assert ours.shape == ref.shape, trial
        # equal scores may come out in either order: compare in one canonical order
        def canon(d):
            return d[np.lexsort((d[:, 1], d[:, 0], -d[:, 4]))]
        np.testing.assert_allclose(canon(ours), canon(ref), atol=1e-4)


def test_nms_empty():
    assert nms(np.zeros((16, 2100), np.float32)).shape == (0, 6)


def _jpeg(h=64, w=80):
    return encode(np.full((h, w, 3), 128, np.uint8))


def test_decode_refusals():
    with pytest.raises(ImageError) as e:
        decode_image(b"")
    assert e.value.code == "empty_image"
    with pytest.raises(ImageError) as e:
        decode_image(b"GIF89a" + b"\0" * 100)
    assert e.value.code == "unsupported_image"
    jpg = _jpeg()
    with pytest.raises(ImageError) as e:
        decode_image(jpg[: len(jpg) // 2])
    assert e.value.code == "invalid_image"
    # a 100000 x 100000 PNG header: refused from the header, nothing allocated
    import struct
    import zlib
    ihdr = struct.pack(">IIBBBBB", 100000, 100000, 8, 2, 0, 0, 0)
    png = b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    with pytest.raises(ImageError) as e:
        decode_image(png)
    assert e.value.code == "image_too_large"


def _png_header(w: int, h: int) -> bytes:
    import struct
    import zlib
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))


def test_strips_are_refused_from_the_header():
    """Longest side over MAX_ASPECT_RATIO (20) times the shortest: ``image_aspect_ratio``,
    before decoding; frames (4:3), photos (16:9) and panoramas up to 20:1 pass."""
    from pcb.image_decode import MAX_ASPECT_RATIO, check_header

    assert MAX_ASPECT_RATIO == 20
    for w, h in ((640, 480), (1920, 1080), (8000, 1000), (2000, 100), (100, 2000)):
        assert check_header(_png_header(w, h)) == (w, h)
    for w, h in ((100_000, 1), (1, 100_000), (2001, 100), (65500, 40)):
        with pytest.raises(ImageError) as e:
            check_header(_png_header(w, h))
        assert e.value.code == "image_aspect_ratio" and f"{w}x{h}" in e.value.message
    with pytest.raises(ImageError) as e:  # and through the decoder the Triton models use
        decode_image(encode(np.full((40, 65500, 3), 128, np.uint8)))
    assert e.value.code == "image_aspect_ratio"


def test_decode_grey_and_alpha_become_bgr():
    grey = encode(np.full((30, 40), 200, np.uint8), ".png")
    rgba = encode(np.full((30, 40, 4), 90, np.uint8), ".png")
    assert decode_image(grey).shape == (30, 40, 3)
    assert decode_image(rgba).shape == (30, 40, 3)


def test_side_verdict_most_severe_wins_and_confidence_is_max():
    # spur (normal, .9) + missing_component (component, .4) -> component_defect, conf .9
    code = {v.name: v.code for v in taxonomy.load().verdicts}
    v = side_verdict(np.array([10, 7]), np.array([0.9, 0.4]))
    assert v.code == code["component_defect"] and v.confidence == pytest.approx(0.9)
    v = side_verdict(np.array([7, 0, 3]), np.array([0.5, 0.3, 0.6]))
    assert v.code == code["discard"]
    assert side_verdict(np.array([]), np.array([])) == SideVerdict(0, 1.0)


def test_fuse():
    code = {v.name: v.code for v in taxonomy.load().verdicts}
    component, solder, discard = code["component_defect"], code["solder_defect"], code["discard"]
    b = fuse(SideVerdict(component, 0.8), SideVerdict(solder, 0.6))
    assert (b.code, b.confidence, b.gpio_pin, b.gpio_duration_ms, b.decided_by) == (solder, 0.6, 27, 500, "right")
    b = fuse(SideVerdict(0, 1.0), SideVerdict(0, 0.7))
    assert (b.code, b.confidence, b.gpio_pin, b.gpio_duration_ms, b.decided_by) == (0, 1.0, 23, 300, "both")
    b = fuse(None, SideVerdict(discard, 0.9))
    assert (b.code, b.gpio_pin, b.decided_by) == (discard, 22, "right")
    with pytest.raises(ValueError):
        fuse(None, None)
