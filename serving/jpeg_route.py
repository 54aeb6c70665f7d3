"""Which encoded images the GPU decoder takes, read from the JPEG header alone.

nvJPEG (through torchvision) is given only the JPEGs it decodes the way OpenCV does on the
CPU path; everything else goes to ``pcb.image_decode.decode_image`` per request, so the
answer (pixels or the ``ImageError`` code) never depends on which decoder ran:

- PNG, BMP, anything not a JPEG: OpenCV (and its refusal codes);
- a JPEG without its end-of-image marker: OpenCV refuses it as truncated;
- an EXIF orientation other than 1: OpenCV rotates the picture, torchvision's GPU decode does
  not (``apply_exif_orientation`` is CPU-only), and ultralytics reads files with OpenCV;
- arithmetic-coded or lossless frames, CMYK/YCCK (4 components) and Adobe-transform JPEGs:
  beyond what nvJPEG is documented to decode like libjpeg. Line cameras send baseline
  YCbCr or greyscale JPEGs, which is what the GPU gets.
"""

from __future__ import annotations

import struct

# baseline, extended sequential and progressive Huffman: what nvJPEG decodes
_GPU_SOF = {0xC0, 0xC1, 0xC2}
_OTHER_SOF = {0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_ORIENTATION = 0x0112


def exif_orientation(segment: bytes) -> int | None:
    """The orientation tag of an APP1 ``Exif`` segment's first IFD, or None."""
    if not segment.startswith(b"Exif\0\0") or len(segment) < 14:
        return None
    tiff = segment[6:]
    order = {b"II": "<", b"MM": ">"}.get(tiff[:2])
    if order is None:
        return None
    (ifd,) = struct.unpack(order + "I", tiff[4:8])
    if ifd + 2 > len(tiff):
        return None
    (count,) = struct.unpack(order + "H", tiff[ifd:ifd + 2])
    for k in range(count):
        entry = tiff[ifd + 2 + 12 * k: ifd + 14 + 12 * k]
        if len(entry) < 12:
            return None
        tag, typ = struct.unpack(order + "HH", entry[:4])
        if tag == _ORIENTATION and typ == 3:  # SHORT, held in the value field itself
            return int(struct.unpack(order + "H", entry[8:10])[0])
    return None


def gpu_decodable(head: bytes) -> bool:
    """True when the JPEG's header describes a frame the GPU decodes like OpenCV does (see
    the module's docstring). ``head``: the file, or enough of it to reach the start of scan
    (an EXIF thumbnail can take 64 KiB); only segment headers are read, hopping over the
    segments' bodies."""
    if head[:2] != b"\xff\xd8":
        return False
    frame = False
    i = 2
    while i + 4 <= len(head):
        if head[i] != 0xFF:
            return False  # not a marker where one must be: let OpenCV judge it
        marker = head[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        if marker == 0xDA:  # start of scan: the header is over
            return frame
        (seg_len,) = struct.unpack(">H", head[i + 2:i + 4])
        seg = head[i + 4:i + 2 + seg_len]
        if marker in _OTHER_SOF:
            return False
        if marker in _GPU_SOF:
            if len(seg) < 6 or seg[5] not in (1, 3):
                return False
            frame = True
        elif marker == 0xE1 and exif_orientation(seg) not in (None, 1):
            return False
        elif marker == 0xEE and seg.startswith(b"Adobe"):
            return False
        i += 2 + seg_len
    return False  # no start of scan in the head: an odd file, OpenCV's to judge

