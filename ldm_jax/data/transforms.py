"""Record -> training example: decode if needed, resize, crop, flip, scale to [-1, 1].

    transform = ImageTransform(256, random_crop=True, flip=True, min_size=128)
    example = transform(record, rng)   # {"key", "image": float32 (256, 256, 3) in [-1, 1], "label", ...}

What happens to each field:
- "image": encoded bytes are decoded by `ldm_jax.data.decode.decode_image` (imported only then);
  a uint8 array (H, W, 3), or grey (H, W) / (H, W, 1), is used as is. The smaller side is resized to
  `size` (PIL, antialiased when shrinking; bicubic by default), then a (size, size) crop is taken
  from the centre or at random, optionally mirrored left-right with probability 1/2, and the pixels
  are mapped to float32 x / 127.5 - 1.
- "segmentation": decoded by `decode_segmentation` when bytes; resized with NEAREST to the same
  size as the image, cropped and flipped the same way; it keeps its integer dtype (uint8 or int32).
- "boxes": relative (x0, y0, w, h) boxes follow the crop and flip; boxes left outside the crop are
  dropped; the other fields of each box dict are kept.
- "label" becomes np.int32, "caption" stays a str, "key" is kept; every other field is dropped.
A record without a usable image, smaller than `min_size`, or with a field of the wrong kind raises
`BadRecord(key, reason)`.
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

OUTPUT_KEYS = ("key", "image", "label", "caption", "segmentation", "boxes")


def to_model_range(image: np.ndarray) -> np.ndarray:
    """uint8 pixels -> float32 in [-1, 1] (x / 127.5 - 1, as the reference)."""
    return image.astype(np.float32) / 127.5 - 1.0


def from_model_range(image: np.ndarray) -> np.ndarray:
    """float pixels in [-1, 1] -> uint8 (rounded, clipped)."""
    return np.clip(np.round((np.asarray(image, np.float32) + 1.0) * 127.5), 0, 255).astype(np.uint8)


def record_key(record: Record) -> str:
    """The record's key, or a placeholder naming the missing key for error messages."""
    key = record.get("key") if isinstance(record, dict) else None
    return key if isinstance(key, str) else "<record without a key>"


def load_image(record: Record) -> np.ndarray:
    """The record's image as uint8 (H, W, 3): decoded when it is bytes, checked when it is an array."""
    key = record_key(record)
    data = record.get("image")
    if isinstance(data, (bytes, bytearray, memoryview)):
        from ldm_jax.data.decode import decode_image  # only sources that hold files need decoding
        return decode_image(bytes(data), key)
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


def resize(array: np.ndarray, height: int, width: int, resample) -> np.ndarray:
    """A uint8 image (H, W, 3) or an integer map (H, W) resized with a PIL filter."""
    if array.shape[:2] == (height, width):
        return array
    return np.asarray(Image.fromarray(array).resize((width, height), resample=resample))


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
    """

    def __init__(self, size: int, *, random_crop: bool = False, flip: bool = False, min_size: int = 0,
                 resample: str = "bicubic"):
        if size < 1:
            raise ValueError(f"size must be >= 1, got {size}")
        if resample not in RESAMPLING:
            raise ValueError(f"resample must be one of {sorted(RESAMPLING)}, got {resample!r}")
        self.size = int(size)
        self.random_crop = bool(random_crop)
        self.flip = bool(flip)
        self.min_size = int(min_size)
        self.resample = resample

    def __repr__(self) -> str:
        return (f"ImageTransform({self.size}, random_crop={self.random_crop}, flip={self.flip}, "
                f"min_size={self.min_size}, resample={self.resample!r})")

    def __call__(self, record: Record, rng: np.random.Generator | None = None) -> dict:
        if not isinstance(record, dict):
            raise BadRecord("<not a record>", f"a record must be a dict, got {type(record).__name__}")
        key = record_key(record)
        if (self.random_crop or self.flip) and rng is None:
            raise ValueError("this ImageTransform draws random crops or flips: call it with an rng")
        image = load_image(record)
        height, width = image.shape[:2]
        if min(height, width) < self.min_size:
            raise BadRecord(key, f"the image is {width}x{height}, smaller than min_size {self.min_size}")
        resized = resized_shape(height, width, self.size)
        top, left = crop_origin(*resized, self.size, rng if self.random_crop else None)
        flip = self.flip and bool(rng.random() < 0.5)

        def frame(array: np.ndarray, resample) -> np.ndarray:
            array = resize(array, *resized, resample)[top:top + self.size, left:left + self.size]
            return np.ascontiguousarray(array[:, ::-1] if flip else array)

        example = {"key": key, "image": to_model_range(frame(image, RESAMPLING[self.resample]))}
        if "label" in record:
            try:
                example["label"] = np.int32(operator.index(record["label"]))
            except TypeError as error:
                raise BadRecord(key, f"'label' must be an int, got {record['label']!r}") from error
        if "caption" in record:
            if not isinstance(record["caption"], str):
                raise BadRecord(key, f"'caption' must be a str, got {type(record['caption']).__name__}")
            example["caption"] = record["caption"]
        if "segmentation" in record:
            example["segmentation"] = frame(load_segmentation(record, height, width), Image.Resampling.NEAREST)
        if "boxes" in record:
            example["boxes"] = transform_boxes(record["boxes"], key, resized=resized, origin=(top, left),
                                               size=self.size, flip=flip)
        return example
