"""Encoded image files (and arrays) -> uint8 RGB arrays; every way a crawled file goes wrong -> BadRecord.

`decode_image` accepts what the sources put in `Record["image"]`: the encoded bytes of a JPEG, PNG
(8/16-bit, palette, grey, with alpha), WebP, GIF (first frame) or BMP file, or an already decoded
uint8 / uint16 array. It always returns a C-contiguous uint8 (H, W, 3) array:

- 16-bit samples are scaled (round(x * 255 / 65535)), never clipped;
- transparency (RGBA, LA, palette with a transparent index) is composited onto white;
- CMYK JPEGs go through their embedded ICC profile when they carry one (else PIL's conversion,
  which already undoes the inverted Adobe convention);
- the EXIF orientation tag is applied, so the array is the picture as a viewer shows it.

`decode_picture` does the same for encoded bytes but returns a PIL RGB image (what a resize needs,
without a round trip through numpy) and, given `min_side`, lets libjpeg decode a large JPEG at 1/2,
1/4 or 1/8 scale (DCT scaling: far less work than a full decode and a downscale) while the smaller
side stays >= `min_side`. Its `Picture` says where the full-size picture lies in the smaller image,
so callers keep full-size geometry.

PIL opens files lazily and, with `ImageFile.LOAD_TRUNCATED_IMAGES` left at its default False, only
the full decode (`load()`) notices a truncated file; every path here runs that decode exactly once.
Do not set `LOAD_TRUNCATED_IMAGES` elsewhere in the process: truncated files would then decode
silently with grey fill.

`decode_segmentation` returns the (H, W) map of class indices stored in a palette or greyscale PNG
(palette *indices*, never the palette colours).
"""
import io
import warnings
from typing import NamedTuple

import numpy as np
from PIL import ExifTags, Image, ImageCms, UnidentifiedImageError

from ldm_jax.data.records import BadRecord

# PIL's own warning threshold (about 9459 x 9459): larger images are refused before any pixel is
# decoded, so a tiny file that claims gigapixels cannot exhaust a worker's memory.
DEFAULT_MAX_PIXELS = 89_478_485

_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")
_SRGB = ImageCms.createProfile("sRGB")
_DCT_SCALED_FORMATS = ("JPEG", "MPO")  # MPO: the multi-picture JPEGs of cameras (PIL drafts the first)

# EXIF orientation -> (the PIL transpose that shows the picture upright, the same map on continuous
# pixel coordinates: (x, y, width, height) of the stored image -> (x', y') in the transposed one).
_ORIENTATIONS = {
    2: (Image.Transpose.FLIP_LEFT_RIGHT, lambda x, y, w, h: (w - x, y)),
    3: (Image.Transpose.ROTATE_180, lambda x, y, w, h: (w - x, h - y)),
    4: (Image.Transpose.FLIP_TOP_BOTTOM, lambda x, y, w, h: (x, h - y)),
    5: (Image.Transpose.TRANSPOSE, lambda x, y, w, h: (y, x)),
    6: (Image.Transpose.ROTATE_270, lambda x, y, w, h: (h - y, x)),
    7: (Image.Transpose.TRANSVERSE, lambda x, y, w, h: (h - y, w - x)),
    8: (Image.Transpose.ROTATE_90, lambda x, y, w, h: (y, w - x)),
}
_SWAPS_SIDES = (5, 6, 7, 8)

Box = tuple[float, float, float, float]


class Picture(NamedTuple):
    """A decoded picture: `image` (PIL, mode RGB, EXIF orientation applied) and the `width` x `height`
    of the full picture as a viewer shows it. After a DCT-scaled decode `image` is smaller than
    that: `box` = (x0, y0, x1, y1) is where the full picture lies in `image`'s pixel coordinates
    (a 1/s-scale decode rounds a partial block at the right / bottom edge up to a whole pixel, so
    after a flip or rotation the box can start a fraction of a pixel past 0)."""

    image: Image.Image
    width: int
    height: int
    box: Box


def decode_image(data: bytes | np.ndarray, key: str, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """The image in `data` (encoded file bytes or an array) as a uint8 RGB array (H, W, 3).

    Raises `BadRecord(key, reason)` for empty, truncated, corrupt or unrecognised files, images
    larger than `max_pixels` and arrays of an unusable shape or dtype.
    """
    if isinstance(data, np.ndarray):
        return _array_to_rgb(data, key)
    return np.ascontiguousarray(np.asarray(decode_picture(data, key, max_pixels=max_pixels).image))


def decode_picture(data: bytes, key: str, *, min_side: int = 0, max_pixels: int = DEFAULT_MAX_PIXELS) -> Picture:
    """The picture in the encoded file `data` as an RGB PIL image, with its full size (see `Picture`).

    With `min_side > 0` a JPEG is decoded at the smallest DCT scale (1/2, 1/4, 1/8) whose smaller
    side is still >= `min_side`, so a caller that then resizes the smaller side to `min_side` only
    ever shrinks. Other formats, and `min_side=0`, decode at full size. Raises `BadRecord` like
    `decode_image`.
    """
    image = _open_checked(data, key, max_pixels)
    width, height = image.size
    box: Box = (0.0, 0.0, float(width), float(height))
    if min_side > 0 and image.format in _DCT_SCALED_FORMATS:
        # PIL takes the largest s in (1, 2, 4, 8) with min(width, height) // s >= min_side and
        # returns the full picture's extent in the smaller image, (0, 0, width / s, height / s).
        drafted = image.draft("RGB", (min_side, min_side))
        if drafted is not None:
            box = tuple(float(v) for v in drafted[1])
    _load(image, key)
    orientation = _exif_orientation(image)
    if orientation in _ORIENTATIONS:
        image, box = _transpose(image, box, orientation)
        if orientation in _SWAPS_SIDES:
            width, height = height, width
    try:
        rgb = _rgb_image(image)
    except (ValueError, OSError) as error:
        raise BadRecord(key, f"cannot convert a {image.format} image in colour mode {image.mode} to RGB: "
                             f"{error}") from error
    return Picture(rgb, width, height, box)


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
    image = _open_checked(data, key, max_pixels)
    _load(image, key)
    orientation = _exif_orientation(image)
    if orientation in _ORIENTATIONS:
        image, _ = _transpose(image, (0.0, 0.0, *map(float, image.size)), orientation)
    if image.mode in ("P", "L", "1"):
        return np.asarray(image, np.uint8)
    if image.mode in _SIXTEEN_BIT_MODES:
        return np.asarray(image).astype(np.int32)
    raise BadRecord(key, f"a segmentation map must be a single-channel image of class indices (palette "
                         f"or greyscale PNG), got a {image.format} image in colour mode {image.mode}")


def _open_checked(data, key: str, max_pixels: int) -> Image.Image:
    """`data` opened by PIL (lazily: header only) and size-checked; nothing decoded yet."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise BadRecord(key, f"expected the bytes of an encoded image file or a uint8 array, "
                             f"got {type(data).__name__}")
    if len(data) == 0:
        raise BadRecord(key, "empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            # Size is checked just below against our own limit, with a clearer message.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
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
    width, height = image.size
    if width <= 0 or height <= 0:
        raise BadRecord(key, f"{image.format} image has an empty size {width}x{height}")
    if width * height > max_pixels:
        raise BadRecord(key, f"{image.format} image of {width}x{height} = {width * height} pixels is larger "
                             f"than the limit of {max_pixels} pixels (a decompression bomb?)")
    return image


def _load(image: Image.Image, key: str) -> None:
    """The full decode: the only step that notices truncated or corrupt data."""
    try:
        image.load()
    except Exception as error:
        raise BadRecord(key, f"truncated or corrupt {image.format} data ({type(error).__name__}: "
                             f"{error})") from error


def _exif_orientation(image: Image.Image) -> int:
    """The EXIF (or XMP) orientation tag, 1 (upright) when absent or unreadable: broken metadata is
    no reason to lose the pixels."""
    try:
        return int(image.getexif().get(ExifTags.Base.Orientation, 1))
    except Exception:  # malformed EXIF blocks raise anything from SyntaxError to struct.error
        return 1


def _transpose(image: Image.Image, box: Box, orientation: int) -> tuple[Image.Image, Box]:
    """`image` turned upright as `orientation` says, and `box` carried along."""
    method, move = _ORIENTATIONS[orientation]
    width, height = image.size
    (ax, ay), (bx, by) = move(box[0], box[1], width, height), move(box[2], box[3], width, height)
    upright = image.transpose(method)
    upright.format = image.format  # for error messages
    return upright, (min(ax, bx), min(ay, by), max(ax, bx), max(ay, by))


def _rgb_image(image: Image.Image) -> Image.Image:
    """`image` in mode RGB (the same object when it already is one without transparency)."""
    mode = image.mode
    if mode == "RGB" and "transparency" not in image.info:
        return image
    if mode in _SIXTEEN_BIT_MODES:
        return Image.fromarray(_scale_16_to_8(np.asarray(image))).convert("RGB")
    if mode == "CMYK":
        return _cmyk_to_rgb(image)
    if mode in _ALPHA_MODES or "transparency" in image.info:
        return Image.fromarray(_composite_on_white(np.asarray(image.convert("RGBA"))))
    if mode == "F":
        raise ValueError("32-bit floating point images have no defined 8-bit scale")
    return image.convert("RGB")


def _format_from_magic(head: bytes) -> str | None:
    """The format whose signature `head` starts with, to tell a damaged image from a non-image."""
    for signature, name in ((b"\x89PNG", "PNG"), (b"\xff\xd8\xff", "JPEG"), (b"GIF8", "GIF"), (b"BM", "BMP")):
        if head.startswith(signature):
            return name
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "WebP"
    return None


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
