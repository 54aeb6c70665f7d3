"""Options of one enhancement request, with the quality presets and their limits. The
gateway validates them on upload; the Triton model parses the same JSON again."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

PRESETS = {
    # fast: faces only, background resized (no upsampler); medium: + the upsampler on big
    # tiles; high: + smaller tiles with more overlap
    "fast": {"background": False, "tile": 512, "tile_pad": 8},
    "medium": {"background": True, "tile": 512, "tile_pad": 10},
    "high": {"background": True, "tile": 400, "tile_pad": 16},
}
TILE_MIN, TILE_MAX = 256, 512
UPSCALES = (1, 2, 4)
# One result photo: a 16 MP upload at x2, or 4 MP at x4. The result is held decoded (3 bytes
# a pixel, plus the upsampler's float tiles) while it is built: 64 MP is ~190 MB, 256 MP
# would be ~770 MB in one Triton instance for one request.
MAX_OUTPUT_PIXELS = 64_000_000
MAX_OUTPUT_SIDE = 65500  # what OpenCV's JPEG/PNG encoders accept


class OptionError(ValueError):
    code = "invalid_options"


class OutputTooLarge(OptionError):
    code = "output_too_large"


def check_output_size(width: int, height: int, upscale: int, max_pixels: int = MAX_OUTPUT_PIXELS) -> None:
    """Refuse a photo whose result (input x upscale squared) is over the bound, before any
    work: the gateway on the upload's header, the batch engine per item, the model again."""
    w, h = width * upscale, height * upscale
    if w * h > max_pixels or max(w, h) > MAX_OUTPUT_SIDE:
        fits = [u for u in UPSCALES if (width * u) * (height * u) <= max_pixels and max(width, height) * u <= MAX_OUTPUT_SIDE]
        hint = f"; upscale {max(fits)} fits" if fits else ""
        raise OutputTooLarge(f"{width}x{height} at upscale {upscale} is a {w}x{h} result, over the limit of "
                             f"{max_pixels} pixels{hint}")


@dataclass(frozen=True)
class EnhanceOptions:
    upscale: int = 2  # seed: upscale 2
    quality: str = "high"
    background: bool = True  # RealESRGAN background upsampling (tiled)
    tile: int = 400
    tile_pad: int = 16
    weight: float = 0.5  # restored face blended with the aligned original (seed: 0.5)
    max_faces: int = 20

    def to_json(self) -> str:
        return json.dumps(asdict(self))


def parse_options(raw: str | bytes | dict | None) -> EnhanceOptions:
    """JSON (or a dict) -> validated options. Unset fields come from the preset, then from
    the defaults; an explicit field wins over the preset."""
    if raw in (None, "", b""):
        data: dict = {}
    elif isinstance(raw, dict):
        data = dict(raw)
    else:
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise OptionError("options are not valid JSON") from None
        if not isinstance(data, dict):
            raise OptionError("options must be a JSON object")
    known = set(EnhanceOptions.__dataclass_fields__)
    unknown = set(data) - known
    if unknown:
        raise OptionError(f"unknown options: {', '.join(sorted(unknown))}")
    quality = data.get("quality", "high")
    if quality not in PRESETS:
        raise OptionError(f"quality must be one of {', '.join(PRESETS)}")
    merged = {**PRESETS[quality], **{k: v for k, v in data.items() if v is not None}}
    try:
        opts = EnhanceOptions(upscale=int(merged.get("upscale", 2)), quality=quality,
                              background=bool(merged["background"]), tile=int(merged["tile"]),
                              tile_pad=int(merged["tile_pad"]), weight=float(merged.get("weight", 0.5)),
                              max_faces=int(merged.get("max_faces", 20)))
    except (TypeError, ValueError):
        raise OptionError("options have the wrong types") from None
    if opts.upscale not in UPSCALES:
        raise OptionError(f"upscale must be one of {UPSCALES}")
    if not TILE_MIN <= opts.tile <= TILE_MAX:
        raise OptionError(f"tile must be within {TILE_MIN}-{TILE_MAX}")
    if not 0 <= opts.tile_pad <= 64:
        raise OptionError("tile_pad must be within 0-64")
    if not 0.0 <= opts.weight <= 1.0:
        raise OptionError("weight must be within 0-1")
    if not 0 <= opts.max_faces <= 50:
        raise OptionError("max_faces must be within 0-50")
    return opts
