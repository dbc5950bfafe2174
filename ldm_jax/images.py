"""Images in and out of the sampling pipeline: PIL <-> NHWC float arrays in [-1, 1], masks, grids.

The conventions are those of the reference scripts (CompVis `txt2img.py`, `img2img.py`,
`inpaint.py`): pixels map to [-1, 1] as x / 127.5 - 1; masks are thresholded at 0.5;
samples go back to 8-bit as uint8(255 * clip((x + 1) / 2, 0, 1)) (truncation, as the reference).
"""
import math
import os
from typing import Sequence, Union

import numpy as np
from PIL import Image

ImageLike = Union[str, os.PathLike, Image.Image, np.ndarray]


def load_image(image: ImageLike, mode: str = "RGB") -> Image.Image:
    """A PIL image from a path, a PIL image or a uint8 / float array (H, W[, C]), converted to `mode`."""
    if isinstance(image, Image.Image):
        return image.convert(mode)
    if isinstance(image, np.ndarray):
        array = image
        if array.dtype != np.uint8:
            # Floats in [0, 1] (masks, maps) become 8-bit.
            array = np.clip(np.round(np.asarray(array, np.float64) * 255.0), 0, 255).astype(np.uint8)
        return Image.fromarray(np.squeeze(array, -1) if array.ndim == 3 and array.shape[-1] == 1 else array
                               ).convert(mode)
    with Image.open(image) as opened:
        return opened.convert(mode)


def round_down_to_multiple(height: int, width: int, multiple: int) -> tuple[int, int]:
    """(height, width) rounded down to multiples of `multiple` (at least one multiple each)."""
    if multiple < 1:
        raise ValueError(f"multiple must be >= 1, got {multiple}")
    return max(multiple, height - height % multiple), max(multiple, width - width % multiple)


def resize(image: Image.Image, height: int, width: int, resample=Image.Resampling.LANCZOS) -> Image.Image:
    """`image` resized to (height, width) unless it already has that size."""
    if image.size == (width, height):
        return image
    return image.resize((width, height), resample=resample)


def image_to_array(image: ImageLike, height: int | None = None, width: int | None = None,
                   multiple: int = 1) -> np.ndarray:
    """An RGB image as a (1, H, W, 3) float32 array in [-1, 1].

    Resized to (height, width) when given, else to its own size rounded down to `multiple` (the
    pixel size of one UNet-compatible latent step, e.g. 64 for Stable Diffusion).
    """
    if isinstance(image, np.ndarray) and image.ndim == 4 and image.dtype.kind == "f":
        # Already model input (N, H, W, 3) in [-1, 1].
        if height is None or (image.shape[1], image.shape[2]) == (height, width):
            return image.astype(np.float32)
        image = ((image[0] + 1.0) / 2.0)
    pil = load_image(image, "RGB")
    if height is None or width is None:
        height, width = round_down_to_multiple(pil.height, pil.width, multiple)
    pil = resize(pil, height, width)
    return (np.asarray(pil, np.float32) / 127.5 - 1.0)[None]


def mask_to_array(mask: ImageLike, height: int, width: int) -> np.ndarray:
    """A mask image as a (1, H, W, 1) float32 array of {0, 1}: 1 where the image is to be generated.

    White (>= 0.5 after conversion to grey) means "generate", as in the reference inpainting scripts.
    """
    pil = resize(load_image(mask, "L"), height, width, resample=Image.Resampling.NEAREST)
    grey = np.asarray(pil, np.float32) / 255.0
    return (grey >= 0.5).astype(np.float32)[None, :, :, None]


def nearest_resize(x, height: int, width: int):
    """torch `F.interpolate(x, size=(height, width))` (mode "nearest") on NHWC: source index floor(o * in / out).

    A numpy array comes back as numpy, a jax array as jax: the source indices are numpy constants of
    the static shape, so the function also runs on traced arrays inside `jax.jit`.
    """
    if not hasattr(x, "shape"):  # lists and other array-likes; arrays are indexed as they are
        x = np.asarray(x)
    rows = np.minimum(np.floor(np.arange(height) * (x.shape[1] / height)).astype(np.int64), x.shape[1] - 1)
    cols = np.minimum(np.floor(np.arange(width) * (x.shape[2] / width)).astype(np.int64), x.shape[2] - 1)
    return x[:, rows][:, :, cols]


def mask_to_latent(mask: np.ndarray, latent_height: int, latent_width: int) -> np.ndarray:
    """A pixel mask (N, H, W, 1) brought to latent resolution by nearest-neighbour sampling, as the
    reference inpainting code does (`F.interpolate(mask, size=latent.shape[-2:])`)."""
    return nearest_resize(mask, latent_height, latent_width).astype(np.float32)


def segmentation_to_onehot(segmentation: ImageLike, n_classes: int, height: int | None = None,
                           width: int | None = None) -> np.ndarray:
    """A label map (path / PIL "L" or "P" image / int array (H, W)) as a (1, H, W, n_classes) one-hot array.

    Each pixel value is a class index; resizing uses nearest neighbours so labels stay labels.
    """
    if isinstance(segmentation, np.ndarray) and segmentation.dtype.kind in "iu":
        labels = segmentation
        if height is not None and width is not None and labels.shape != (height, width):
            labels = nearest_resize(labels[None, :, :, None], height, width)[0, :, :, 0]
    else:
        pil = segmentation if isinstance(segmentation, Image.Image) else load_image(segmentation, "L")
        if pil.mode not in ("L", "P"):
            pil = pil.convert("L")
        if height is not None and width is not None:
            pil = resize(pil, height, width, resample=Image.Resampling.NEAREST)
        labels = np.asarray(pil)
    labels = np.asarray(labels, np.int64)
    if labels.min() < 0 or labels.max() >= n_classes:
        raise ValueError(f"segmentation labels must lie in [0, {n_classes}); got values "
                         f"{int(labels.min())}..{int(labels.max())}")
    return np.eye(n_classes, dtype=np.float32)[labels][None]


def array_to_images(x: np.ndarray) -> list[Image.Image]:
    """Decoder output (N, H, W, 3) in [-1, 1] -> 8-bit RGB PIL images (clipped, truncated as the reference)."""
    x = np.asarray(x, np.float32)
    if x.ndim != 4 or x.shape[-1] not in (1, 3):
        raise ValueError(f"expected NHWC images with 1 or 3 channels, got shape {x.shape}")
    pixels = (255.0 * np.clip((x + 1.0) / 2.0, 0.0, 1.0)).astype(np.uint8)
    return [Image.fromarray(p[..., 0] if p.shape[-1] == 1 else p) for p in pixels]


def make_grid(images: Sequence[Image.Image], rows: int | None = None, padding: int = 0) -> Image.Image:
    """The images tiled row by row into one image: `rows` rows (default: about square)."""
    if not images:
        raise ValueError("make_grid needs at least one image")
    n = len(images)
    rows = rows or max(1, int(math.floor(math.sqrt(n))))
    if rows < 1:
        raise ValueError(f"rows must be >= 1, got {rows}")
    cols = int(math.ceil(n / rows))
    width = max(im.width for im in images)
    height = max(im.height for im in images)
    grid = Image.new("RGB", (cols * width + (cols - 1) * padding, rows * height + (rows - 1) * padding))
    for i, im in enumerate(images):
        row, col = divmod(i, cols)
        grid.paste(im.convert("RGB"), (col * (width + padding), row * (height + padding)))
    return grid
