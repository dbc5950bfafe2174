"""Encoded image files (and arrays) -> uint8 RGB arrays; every way a crawled file goes wrong -> BadRecord.

`decode_image` accepts what the sources put in `Record["image"]`: the encoded bytes of a JPEG, PNG
(8/16-bit, palette, grey, with alpha), WebP, GIF (first frame) or BMP file, or an already decoded
uint8 / uint16 array. It always returns a C-contiguous uint8 (H, W, 3) array:

- 16-bit samples are scaled (round(x * 255 / 65535)), never clipped;
- transparency (RGBA, LA, palette with a transparent index) is composited onto white;
- CMYK JPEGs go through their embedded ICC profile when they carry one (else PIL's conversion,
  which already undoes the inverted Adobe convention);
- the EXIF orientation tag is applied, so the array is the picture as a viewer shows it.

PIL opens files lazily and, with `ImageFile.LOAD_TRUNCATED_IMAGES` left at its default False, only
the full decode (`load()`) notices a truncated file; this module always forces that decode. Do not
set `LOAD_TRUNCATED_IMAGES` elsewhere in the process: truncated files would then decode silently
with grey fill.

`decode_segmentation` returns the (H, W) map of class indices stored in a palette or greyscale PNG
(palette *indices*, never the palette colours).
"""
import io
import warnings

import numpy as np
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

from ldm_jax.data.records import BadRecord

# PIL's own warning threshold (about 9459 x 9459): larger images are refused before any pixel is
# decoded, so a tiny file that claims gigapixels cannot exhaust a worker's memory.
DEFAULT_MAX_PIXELS = 89_478_485

_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")
_SRGB = ImageCms.createProfile("sRGB")


def decode_image(data: bytes | np.ndarray, key: str, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """The image in `data` (encoded file bytes or an array) as a uint8 RGB array (H, W, 3).

    Raises `BadRecord(key, reason)` for empty, truncated, corrupt or unrecognised files, images
    larger than `max_pixels` and arrays of an unusable shape or dtype.
    """
    if isinstance(data, np.ndarray):
        return _array_to_rgb(data, key)
    with _open_fully(data, key, max_pixels) as image:
        try:
            return np.ascontiguousarray(_pil_to_rgb(image))
        except (ValueError, OSError) as error:
            raise BadRecord(key, f"cannot convert a {image.format} image in colour mode {image.mode} to RGB: "
                                 f"{error}") from error


def decode_segmentation(data: bytes | np.ndarray, key: str, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """The (H, W) map of integer class indices in `data`: a palette / greyscale PNG or an array.

    Palette images give their palette indices; 8-bit maps come back as uint8, 16-bit ones as int32.
    """
    if isinstance(data, np.ndarray):
        array = data[..., 0] if data.ndim == 3 and data.shape[-1] == 1 else data
        if array.ndim != 2 or not (array.dtype.kind in "iu" or array.dtype == bool):
            raise BadRecord(key, f"a segmentation map must be an (H, W) integer array of class indices, "
                                 f"got shape {data.shape} and dtype {data.dtype}")
        return array.astype(np.uint8) if array.dtype == bool else array
    with _open_fully(data, key, max_pixels) as image:
        if image.mode in ("P", "L"):
            return np.asarray(image, np.uint8)
        if image.mode == "1":
            return np.asarray(image, np.uint8)
        if image.mode in _SIXTEEN_BIT_MODES:
            return np.asarray(image).astype(np.int32)
        raise BadRecord(key, f"a segmentation map must be a single-channel image of class indices (palette "
                             f"or greyscale PNG), got a {image.format} image in colour mode {image.mode}")


class _open_fully:
    """Context manager: `data` opened with PIL, size-checked, fully decoded and EXIF-oriented."""

    def __init__(self, data, key: str, max_pixels: int):
        self._data, self._key, self._max_pixels = data, key, max_pixels
        self._opened = None

    def __enter__(self) -> Image.Image:
        key, data = self._key, self._data
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise BadRecord(key, f"expected the bytes of an encoded image file or a uint8 array, "
                                 f"got {type(data).__name__}")
        if len(data) == 0:
            raise BadRecord(key, "empty file (0 bytes)")
        try:
            with warnings.catch_warnings():
                # Size is checked just below against our own limit, with a clearer message.
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                self._opened = Image.open(io.BytesIO(data))
        except UnidentifiedImageError as error:
            kind = _format_from_magic(bytes(data[:12]))
            if kind:
                raise BadRecord(key, f"truncated or corrupt {kind} file: its header cannot be parsed "
                                     f"({len(data)} bytes)") from error
            raise BadRecord(key, f"not an image file: no decoder recognises these {len(data)} bytes "
                                 f"(they start with {bytes(data[:16])!r})") from error
        except Image.DecompressionBombError as error:
            raise BadRecord(key, f"refused as a possible decompression bomb: {error}") from error
        except Exception as error:  # any plugin failure on untrusted bytes makes the record unusable
            kind = _format_from_magic(bytes(data[:12]))
            what = f"truncated or corrupt {kind} file" if kind else "unreadable image header"
            raise BadRecord(key, f"{what} ({type(error).__name__}: {error})") from error
        image = self._opened
        width, height = image.size
        if width <= 0 or height <= 0:
            raise BadRecord(key, f"{image.format} image has an empty size {width}x{height}")
        if width * height > self._max_pixels:
            raise BadRecord(key, f"{image.format} image of {width}x{height} = {width * height} pixels is larger "
                                 f"than the limit of {self._max_pixels} pixels (a decompression bomb?)")
        try:
            image.load()  # the full decode: the only step that notices truncated or corrupt data
        except Exception as error:
            raise BadRecord(key, f"truncated or corrupt {image.format} data ({type(error).__name__}: "
                                 f"{error})") from error
        return _apply_exif_orientation(image)

    def __exit__(self, *exc_info):
        if self._opened is not None:
            self._opened.close()
        return False


def _format_from_magic(head: bytes) -> str | None:
    """The format whose signature `head` starts with, to tell a damaged image from a non-image."""
    for signature, name in ((b"\x89PNG", "PNG"), (b"\xff\xd8\xff", "JPEG"), (b"GIF8", "GIF"), (b"BM", "BMP")):
        if head.startswith(signature):
            return name
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "WebP"
    return None


def _apply_exif_orientation(image: Image.Image) -> Image.Image:
    """`image` rotated / flipped as its EXIF orientation tag says; unchanged if that tag is unreadable
    (broken metadata is no reason to lose the pixels)."""
    try:
        oriented = ImageOps.exif_transpose(image)
    except Exception:  # malformed EXIF blocks raise anything from SyntaxError to struct.error
        return image
    if oriented is not image:
        oriented.format = image.format
    return oriented


def _pil_to_rgb(image: Image.Image) -> np.ndarray:
    mode = image.mode
    if mode == "RGB" and "transparency" not in image.info:
        return np.asarray(image)
    if mode in _SIXTEEN_BIT_MODES:
        grey = _scale_16_to_8(np.asarray(image))
        return np.repeat(grey[..., None], 3, axis=-1)
    if mode == "CMYK":
        return np.asarray(_cmyk_to_rgb(image))
    if mode in _ALPHA_MODES or "transparency" in image.info:
        return _composite_on_white(np.asarray(image.convert("RGBA")))
    if mode == "F":
        raise ValueError("32-bit floating point images have no defined 8-bit scale")
    return np.asarray(image.convert("RGB"))


def _cmyk_to_rgb(image: Image.Image) -> Image.Image:
    profile = image.info.get("icc_profile")
    if profile:
        try:
            return ImageCms.profileToProfile(image, ImageCms.ImageCmsProfile(io.BytesIO(profile)), _SRGB,
                                             outputMode="RGB")
        except (ImageCms.PyCMSError, OSError, ValueError):
            pass  # a broken profile: fall back to the plain conversion below
    return image.convert("RGB")


def _scale_16_to_8(values: np.ndarray) -> np.ndarray:
    """16-bit samples to 8-bit by rounding x * 255 / 65535 (65535 -> 255, 32896 -> 128)."""
    wide = np.clip(values.astype(np.int64), 0, 65535)
    return ((wide * 255 + 32767) // 65535).astype(np.uint8)


def _composite_on_white(rgba: np.ndarray) -> np.ndarray:
    """RGBA uint8 -> RGB uint8 over a white background, rounded to nearest."""
    rgba = rgba.astype(np.uint32)
    alpha = rgba[..., 3:]
    return ((rgba[..., :3] * alpha + 255 * (255 - alpha) + 127) // 255).astype(np.uint8)


def _array_to_rgb(array: np.ndarray, key: str) -> np.ndarray:
    if array.dtype == bool:
        array = array.astype(np.uint8) * 255
    elif array.dtype == np.uint16:
        array = _scale_16_to_8(array)
    elif array.dtype != np.uint8:
        raise BadRecord(key, f"a decoded image must be a uint8 (or uint16) array, got dtype {array.dtype}")
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim == 2:
        return np.repeat(array[..., None], 3, axis=-1)
    if array.ndim == 3 and array.shape[-1] == 3:
        return np.ascontiguousarray(array)
    if array.ndim == 3 and array.shape[-1] == 4:
        return _composite_on_white(array)
    raise BadRecord(key, f"a decoded image must be (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), got shape {array.shape}")
