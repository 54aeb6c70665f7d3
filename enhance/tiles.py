"""Tiled upsampling: the background upsampler sees fixed-size tiles (bounded memory, one
batch shape), each with ``pad`` pixels of context that are cut away again so the seams
vanish. Edge tiles are reflect-padded to full size so all tiles batch together."""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

# (N, 3, T, T) RGB float32 in [0, 1] -> (N, 3, s*T, s*T)
UpsampleFn = Callable[[np.ndarray], np.ndarray]


def split_tiles(img: np.ndarray, tile: int, pad: int) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """HxWx3 uint8 BGR -> (N, 3, tile+2pad, tile+2pad) RGB float32 tiles and their origins."""
    h, w = img.shape[:2]
    rows, cols = -(-h // tile), -(-w // tile)
    big = cv2.copyMakeBorder(img, pad, rows * tile - h + pad, pad, cols * tile - w + pad, cv2.BORDER_REFLECT_101)
    rgb = big[:, :, ::-1].astype(np.float32) / 255.0
    tiles, origins = [], []
    for r in range(rows):
        for c in range(cols):
            y, x = r * tile, c * tile
            tiles.append(rgb[y:y + tile + 2 * pad, x:x + tile + 2 * pad].transpose(2, 0, 1))
            origins.append((y, x))
    return np.ascontiguousarray(np.stack(tiles)), origins


def upsample_tiled(img: np.ndarray, fn: UpsampleFn, scale: int, tile: int = 400, pad: int = 10,
                   max_batch: int = 8) -> np.ndarray:
    """Upsample ``img`` (BGR uint8) by ``scale`` tile by tile; returns BGR uint8."""
    h, w = img.shape[:2]
    tile = max(16, min(tile, max(h, w)))  # a small image is one tile, not a padded big one
    tile += tile % 2  # the x2 network folds pixels in pairs
    tiles, origins = split_tiles(img, tile, pad)
    outs = [fn(tiles[i:i + max_batch]) for i in range(0, len(tiles), max_batch)]
    up = np.concatenate(outs)
    t, p = tile * scale, pad * scale
    canvas = np.zeros((-(-h // tile) * t, -(-w // tile) * t, 3), np.float32)
    for (y, x), out in zip(origins, up):
        canvas[y * scale:y * scale + t, x * scale:x * scale + t] = out[:, p:p + t, p:p + t].transpose(1, 2, 0)
    rgb = canvas[:h * scale, :w * scale]
    return np.clip(rgb[:, :, ::-1] * 255.0 + 0.5, 0, 255).astype(np.uint8)
