"""Decoding latents bigger than memory allows: overlapping latent tiles, decoded one by one and blended.

Every tile has the same latent size (the last tile of a row / column is shifted back to end at the
border), so the decoder compiles once. Each decoded tile is weighted by a ramp that rises linearly
over the overlap from its inner edges (weight 1 at the image border), and the weighted tiles are
averaged; the outer half of each overlap gets weight 0, so for a decoder whose receptive field
reaches less than half the overlap this equals plain decoding (up to float rounding); the
first-stage decoders have GroupNorm (image-wide statistics) and a middle attention block, so there
the tiles differ slightly from the whole, and the ramps hide the seams.
"""
from typing import Callable

import jax.numpy as jnp
import numpy as np

DEFAULT_MAX_DECODE_PIXELS = 1024 * 1024   # above this many output pixels, the pipeline decodes in tiles


def tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of `tile` covering [0, size) with at least `overlap` shared between neighbours."""
    if tile >= size:
        return [0]
    if not 0 <= overlap < tile:
        raise ValueError(f"overlap must be in [0, tile={tile}), got {overlap}")
    stride = tile - overlap
    starts = list(range(0, size - tile, stride)) + [size - tile]
    return sorted(set(starts))


def _ramp(length: int, ramp: int, rise_at_start: bool, fall_at_end: bool) -> np.ndarray:
    """1-D blending weights over an inner edge of `ramp` pixels: zero over its outer half (where a
    tile's pixels miss context beyond the tile), then a linear rise to 1."""
    weights = np.ones(length, np.float32)
    if ramp > 0:
        dead = ramp // 2
        edge = np.zeros(ramp, np.float32)
        edge[dead:] = (np.arange(ramp - dead, dtype=np.float32) + 1.0) / (ramp - dead)
        if rise_at_start:
            weights[:ramp] = np.minimum(weights[:ramp], edge)
        if fall_at_end:
            weights[-ramp:] = np.minimum(weights[-ramp:], edge[::-1])
    return weights


def decode_tiled(decode: Callable, latents, tile: int, overlap: int, factor: int):
    """`decode(latents)` computed tile by tile: latent tiles of `tile` x `tile` with `overlap`
    latent pixels shared, `factor` pixels per latent pixel. Returns (N, H*factor, W*factor, C)."""
    latents = jnp.asarray(latents)
    n, height, width, _ = latents.shape
    rows, cols = tile_starts(height, tile, overlap), tile_starts(width, tile, overlap)
    if len(rows) == 1 and len(cols) == 1:
        return decode(latents)
    th, tw = min(tile, height), min(tile, width)
    out, total = None, None
    ramp = overlap * factor
    for i, y in enumerate(rows):
        wy = _ramp(th * factor, ramp, i > 0, i < len(rows) - 1)
        for j, x in enumerate(cols):
            wx = _ramp(tw * factor, ramp, j > 0, j < len(cols) - 1)
            piece = np.asarray(decode(latents[:, y:y + th, x:x + tw]), np.float32)
            if out is None:
                out = np.zeros((n, height * factor, width * factor, piece.shape[-1]), np.float32)
                total = np.zeros((1, height * factor, width * factor, 1), np.float32)
            weight = (wy[:, None] * wx[None, :])[None, :, :, None]
            ys, xs = slice(y * factor, (y + th) * factor), slice(x * factor, (x + tw) * factor)
            out[:, ys, xs] += weight * piece
            total[:, ys, xs] += weight
    return jnp.asarray(out / total)


def needs_tiling(height: int, width: int, max_pixels: int | None) -> bool:
    """Whether an image of height x width pixels exceeds the plain-decoding budget `max_pixels`."""
    return max_pixels is not None and height * width > max_pixels
