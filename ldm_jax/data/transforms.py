"""Record -> training example: decode if needed, resize, crop, flip, scale to [-1, 1].

    transform = ImageTransform(256, random_crop=True, flip=True, min_size=128)
    example = transform(record, rng)   # {"key", "image": float32 (256, 256, 3) in [-1, 1], "label", ...}

What happens to each field:
- "image": encoded bytes are decoded by `ldm_jax.data.decode.decode_picture`;
  a uint8 array (H, W, 3), or grey (H, W) / (H, W, 1), is used as is. The smaller side is resized to
  `size` (PIL, antialiased when shrinking; bicubic by default), then a (size, size) crop is taken
  from the centre or at random, optionally mirrored left-right with probability 1/2, and the pixels
  are mapped to float32 x / 127.5 - 1.
- "segmentation": decoded by `decode_segmentation` when bytes; resized with NEAREST to the same
  size as the image, cropped and flipped the same way; it keeps its integer dtype (uint8 or int32).
- "boxes": relative (x0, y0, w, h) boxes follow the crop and flip; boxes left outside the crop are
  dropped; the other fields of each box dict are kept.
- "label" becomes np.int32, "caption" and "class_name" stay str, "key" is kept; every other field
  is dropped.
A record without a usable image, smaller than `min_size`, or with a field of the wrong kind raises
`BadRecord(key, reason)`.

Doing less work than "decode, resize, crop" (what fast loaders do), with the same geometry:
- Only the region that survives the crop is resampled: `Image.resize(box=...)` maps the crop's
  source rectangle straight to (size, size), the same filter taps as resizing everything and
  cropping afterwards, minus the pixels that would be thrown away.
- With `fast_downscale` (the default) a JPEG at least twice `size` on its smaller side is decoded
  at 1/2, 1/4 or 1/8 scale by libjpeg's DCT scaling, never below `size`, so the final resize
  still shrinks; and a downscale by 6x or more (PNG, WebP, ...) first shrinks by an integer factor,
  leaving at least 3x to the filter (PIL's `reducing_gap=3`). Both change pixels only by
  resampling differences (PSNR against `fast_downscale=False` about 40 dB and more, tested above
  35 dB in tests/data/test_transforms.py) and halve the time per JPEG of 512 px and more.
  `fast_downscale=False` decodes fully and resamples once, as the plain PIL reference does (to
  the fixed-point rounding of PIL's filter weights: at most 1 level of 255 apart).
- No copy is made that is not needed: no numpy round trip before the resize, the float
  conversion runs in place, and in the pipeline (`worker_example` / `finish_batch`) the pixels
  travel as uint8 and become float32 once per batch in the consuming process.
"""
import operator

import numpy as np
from PIL import Image

from ldm_jax.data.records import BadRecord, Record

# Config name -> PIL filter for the image resize. PIL filters are antialiased when shrinking
# (the kernel widens with the scale), unlike a plain point-sampled bicubic.
RESAMPLING = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "area": Image.Resampling.BOX,
    "lanczos": Image.Resampling.LANCZOS,
}

OUTPUT_KEYS = ("key", "image", "label", "caption", "class_name", "segmentation", "boxes")

# Downscales by more than this factor first shrink by an integer factor (PIL's `reducing_gap`):
# at 3 the result is, per PIL, indistinguishable in most cases from one fair resample.
REDUCING_GAP = 3.0


def to_model_range(image: np.ndarray) -> np.ndarray:
    """uint8 pixels -> float32 in [-1, 1] (x / 127.5 - 1, as the reference)."""
    # In place on the one new array: temporaries of this size each cost a fresh allocation.
    scaled = image.astype(np.float32)
    scaled /= np.float32(127.5)
    scaled -= np.float32(1.0)
    return scaled


def from_model_range(image: np.ndarray) -> np.ndarray:
    """float pixels in [-1, 1] -> uint8 (rounded, clipped)."""
    return np.clip(np.round((np.asarray(image, np.float32) + 1.0) * 127.5), 0, 255).astype(np.uint8)


def record_key(record: Record) -> str:
    """The record's key, or a placeholder naming the missing key for error messages."""
    key = record.get("key") if isinstance(record, dict) else None
    return key if isinstance(key, str) else "<record without a key>"


def load_picture(record: Record, min_side: int = 0):
    """The record's image as a `ldm_jax.data.decode.Picture` (a PIL RGB image and its full size):
    encoded bytes are decoded (a JPEG maybe at a reduced DCT scale that keeps the smaller side
    >= `min_side`), a uint8 (H, W, 3) or grey (H, W) / (H, W, 1) array is checked and wrapped."""
    from ldm_jax.data.decode import Picture, decode_picture

    data = record.get("image")
    if isinstance(data, (bytes, bytearray, memoryview)):
        return decode_picture(bytes(data), record_key(record), min_side=min_side)
    array = _checked_array(data, record_key(record))
    height, width = array.shape[:2]
    return Picture(Image.fromarray(array), width, height, (0.0, 0.0, float(width), float(height)))


def _checked_array(data, key: str) -> np.ndarray:
    if not isinstance(data, np.ndarray):
        raise BadRecord(key, f"'image' must be encoded bytes or a uint8 (H, W, 3) array, got "
                             f"{type(data).__name__}")
    if data.dtype != np.uint8:
        raise BadRecord(key, f"'image' array must be uint8, got {data.dtype}")
    if data.ndim == 3 and data.shape[-1] == 1:
        data = data[:, :, 0]
    if data.ndim == 2:
        data = np.repeat(data[:, :, None], 3, axis=-1)
    if data.ndim != 3 or data.shape[-1] != 3 or 0 in data.shape:
        raise BadRecord(key, f"'image' array must be (H, W, 3), got shape {data.shape}")
    return data


def load_segmentation(record: Record, height: int, width: int) -> np.ndarray:
    """The record's segmentation map (H, W) of class indices, matching the image's (height, width)."""
    key = record_key(record)
    data = record["segmentation"]
    if isinstance(data, (bytes, bytearray, memoryview)):
        from ldm_jax.data.decode import decode_segmentation
        data = decode_segmentation(bytes(data), key)
    if not isinstance(data, np.ndarray) or data.dtype.kind not in "iub":
        raise BadRecord(key, f"'segmentation' must be PNG bytes or an integer (H, W) array, got "
                             f"{getattr(data, 'dtype', type(data).__name__)}")
    if data.ndim == 3 and data.shape[-1] == 1:
        data = data[:, :, 0]
    if data.shape != (height, width):
        raise BadRecord(key, f"'segmentation' is {data.shape} but the image is ({height}, {width})")
    if data.dtype == np.uint8:
        return data
    if data.size and (data.min() < 0 or data.max() > np.iinfo(np.int32).max):
        raise BadRecord(key, f"'segmentation' class indices must be >= 0 and fit int32, got "
                             f"{int(data.min())}..{int(data.max())}")
    return data.astype(np.int32)


def resized_shape(height: int, width: int, size: int) -> tuple[int, int]:
    """(height, width) scaled so that the smaller side is exactly `size`."""
    scale = size / min(height, width)
    return max(size, round(height * scale)), max(size, round(width * scale))


def crop_region(full: tuple[int, int], resized: tuple[int, int], origin: tuple[int, int],
                size: int) -> tuple[float, float, float, float]:
    """The (x0, y0, x1, y1) rectangle of a (height, width) = `full` picture that ends up in the
    (size, size) crop at `origin` = (top, left) of the picture resized to `resized`."""
    (height, width), (resized_height, resized_width), (top, left) = full, resized, origin
    x_scale, y_scale = width / resized_width, height / resized_height
    return left * x_scale, top * y_scale, (left + size) * x_scale, (top + size) * y_scale


def crop_resize(image: Image.Image, region, size: int, resample, *, source_box=None,
                full_size: tuple[int, int] | None = None, reducing_gap: float | None = None) -> np.ndarray:
    """The `region` (x0, y0, x1, y1) of a picture resampled to (size, size), as a numpy array.

    `image` holds the picture whose full (height, width) is `full_size` (default: the image's own)
    inside `source_box` (default: all of it): a picture decoded at a reduced scale keeps its
    full-size geometry this way.
    """
    width, height = image.size
    box_x0, box_y0, box_x1, box_y1 = source_box or (0.0, 0.0, float(width), float(height))
    full_height, full_width = full_size or (height, width)
    x_scale, y_scale = (box_x1 - box_x0) / full_width, (box_y1 - box_y0) / full_height
    x0, y0, x1, y1 = region
    box = (box_x0 + x0 * x_scale, box_y0 + y0 * y_scale, box_x0 + x1 * x_scale, box_y0 + y1 * y_scale)
    return np.asarray(image.resize((size, size), resample, box=box, reducing_gap=reducing_gap))


def crop_origin(height: int, width: int, size: int, rng: np.random.Generator | None) -> tuple[int, int]:
    """(top, left) of a (size, size) crop: uniformly random when `rng` is given, else centred."""
    if rng is None:
        return (height - size) // 2, (width - size) // 2
    return int(rng.integers(0, height - size + 1)), int(rng.integers(0, width - size + 1))


def transform_boxes(boxes, key: str, *, resized: tuple[int, int], origin: tuple[int, int], size: int,
                    flip: bool) -> list[dict]:
    """Relative (x0, y0, w, h) boxes of the full image -> boxes of the crop (and its mirror)."""
    if not isinstance(boxes, (list, tuple)):
        raise BadRecord(key, f"'boxes' must be a list of {{'category', 'bbox'}} dicts, got {type(boxes).__name__}")
    height, width = resized
    top, left = origin
    result = []
    for box in boxes:
        try:
            x0, y0, w, h = (float(v) for v in box["bbox"])
        except (KeyError, TypeError, ValueError) as error:
            raise BadRecord(key, f"a box must hold 'bbox': (x0, y0, w, h) relative, got {box!r}") from error
        # To crop pixels, then relative to the crop, clipped to it.
        x_lo, x_hi = (x0 * width - left) / size, ((x0 + w) * width - left) / size
        y_lo, y_hi = (y0 * height - top) / size, ((y0 + h) * height - top) / size
        x_lo, x_hi, y_lo, y_hi = (min(max(v, 0.0), 1.0) for v in (x_lo, x_hi, y_lo, y_hi))
        if x_hi <= x_lo or y_hi <= y_lo:
            continue  # outside the crop
        if flip:
            x_lo, x_hi = 1.0 - x_hi, 1.0 - x_lo
        result.append({**box, "bbox": (x_lo, y_lo, x_hi - x_lo, y_hi - y_lo)})
    return result


class ImageTransform:
    """A record -> example transform for grain's random map (see the module docstring).

    Args:
      size: side of the square output image.
      random_crop: a uniformly random crop (else the centre crop).
      flip: mirror left-right with probability 1/2.
      min_size: records whose smaller side is below this raise BadRecord (0: no limit).
      resample: the image's resize filter, a key of RESAMPLING.
      fast_downscale: decode big JPEGs at a reduced DCT scale and pre-shrink large downscales by an
        integer factor (module docstring); False resamples the fully decoded image once.
    """

    def __init__(self, size: int, *, random_crop: bool = False, flip: bool = False, min_size: int = 0,
                 resample: str = "bicubic", fast_downscale: bool = True):
        if size < 1:
            raise ValueError(f"size must be >= 1, got {size}")
        if resample not in RESAMPLING:
            raise ValueError(f"resample must be one of {sorted(RESAMPLING)}, got {resample!r}")
        self.size = int(size)
        self.random_crop = bool(random_crop)
        self.flip = bool(flip)
        self.min_size = int(min_size)
        self.resample = resample
        self.fast_downscale = bool(fast_downscale)

    def __repr__(self) -> str:
        return (f"ImageTransform({self.size}, random_crop={self.random_crop}, flip={self.flip}, "
                f"min_size={self.min_size}, resample={self.resample!r}, fast_downscale={self.fast_downscale})")

    def __call__(self, record: Record, rng: np.random.Generator | None = None) -> dict:
        example = self.worker_example(record, rng)
        example["image"] = to_model_range(example["image"])
        return example

    def finish_batch(self, batch: dict) -> dict:
        """A batch of `worker_example` outputs -> the batch of `self(record, rng)` outputs, bit for bit
        (run once per batch by the pipeline's consuming process)."""
        return {**batch, "image": to_model_range(batch["image"])}

    def worker_example(self, record: Record, rng: np.random.Generator | None = None) -> dict:
        """`self(record, rng)` with the image left as uint8 (size, size, 3) pixels: a quarter of the
        bytes to stack and to move between processes (see `finish_batch`)."""
        if not isinstance(record, dict):
            raise BadRecord("<not a record>", f"a record must be a dict, got {type(record).__name__}")
        key = record_key(record)
        if (self.random_crop or self.flip) and rng is None:
            raise ValueError("this ImageTransform draws random crops or flips: call it with an rng")
        picture = load_picture(record, self.size if self.fast_downscale else 0)
        height, width = picture.height, picture.width
        if min(height, width) < self.min_size:
            raise BadRecord(key, f"the image is {width}x{height}, smaller than min_size {self.min_size}")
        resized = resized_shape(height, width, self.size)
        top, left = crop_origin(*resized, self.size, rng if self.random_crop else None)
        flip = self.flip and bool(rng.random() < 0.5)
        region = crop_region((height, width), resized, (top, left), self.size)

        pixels = crop_resize(picture.image, region, self.size, RESAMPLING[self.resample], source_box=picture.box,
                             full_size=(height, width), reducing_gap=REDUCING_GAP if self.fast_downscale else None)
        example = {"key": key, "image": np.ascontiguousarray(pixels[:, ::-1] if flip else pixels)}
        if "label" in record:
            try:
                example["label"] = np.int32(operator.index(record["label"]))
            except TypeError as error:
                raise BadRecord(key, f"'label' must be an int, got {record['label']!r}") from error
        for text in ("caption", "class_name"):
            if text in record:
                if not isinstance(record[text], str):
                    raise BadRecord(key, f"{text!r} must be a str, got {type(record[text]).__name__}")
                example[text] = record[text]
        if "segmentation" in record:
            labels = Image.fromarray(load_segmentation(record, height, width))
            labels = crop_resize(labels, region, self.size, Image.Resampling.NEAREST)
            example["segmentation"] = np.ascontiguousarray(labels[:, ::-1] if flip else labels)
        if "boxes" in record:
            example["boxes"] = transform_boxes(record["boxes"], key, resized=resized, origin=(top, left),
                                               size=self.size, flip=flip)
        return example
