"""Inpainting masks: random boxes, thick free-form strokes (LaMa-style), their mix, fixed evaluation masks.

Every mask is a float32 (H, W, 1) array of {0, 1}, where 1 marks the region to generate (white =
generate, the convention of `ldm_jax/inference/inputs.py` and `ldm_jax/images.mask_to_array`).

A mask is built by drawing a target coverage uniformly in `coverage` = (low, high), then adding
random elements (boxes or strokes) until the masked share reaches the target; an element that would
push it past `high` is discarded. Sizes are relative to the image, so the masks look alike at every
resolution. Strokes are polylines of thick segments with round ends and joints, rasterised with
numpy (a pixel is in when its centre is within half the width of a segment), like LaMa's
`RandomIrregularMaskGenerator`; boxes follow its `RandomRectangleMaskGenerator`.

The draws use only PCG64's `Generator.random()` (uniform doubles, a stream numpy keeps stable) and
plain numpy arithmetic, no image library, so an evaluation mask, seeded by (seed, index), stays the
same across versions; `tests/data/test_masks.py` pins a few of them.
"""
import math

import numpy as np

DEFAULT_COVERAGE = (0.1, 0.5)
MAX_ELEMENTS = 64             # elements tried per mask before falling back to one box
BOX_SIDES = (0.1, 0.5)        # box sides, relative to the image's height / width
STROKE_WIDTHS = (0.04, 0.12)  # relative to the smaller side
SEGMENT_LENGTHS = (0.08, 0.3)
MAX_SEGMENTS = 5
MAX_TURN = 0.6 * math.pi      # direction change between segments of a stroke


def _uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(rng.random())


def _randint(rng: np.random.Generator, low: int, high: int) -> int:
    """An int in [low, high], both included."""
    return min(high, low + int(float(rng.random()) * (high - low + 1)))


def _check(height: int, width: int, coverage: tuple[float, float]) -> None:
    if height < 1 or width < 1:
        raise ValueError(f"a mask needs a positive size, got {height}x{width}")
    low, high = coverage
    if not 0.0 < low <= high < 1.0:
        raise ValueError(f"coverage must be (low, high) with 0 < low <= high < 1, got {coverage}")


def random_box(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """One random box as a bool (height, width) array."""
    box_h = max(1, round(_uniform(rng, *BOX_SIDES) * height))
    box_w = max(1, round(_uniform(rng, *BOX_SIDES) * width))
    top, left = _randint(rng, 0, height - box_h), _randint(rng, 0, width - box_w)
    box = np.zeros((height, width), bool)
    box[top:top + box_h, left:left + box_w] = True
    return box


def _segment(mask: np.ndarray, start: tuple[float, float], end: tuple[float, float], radius: float) -> None:
    """Set the pixels whose centres lie within `radius` of the segment start-end (x, y in pixels)."""
    (x0, y0), (x1, y1) = start, end
    height, width = mask.shape
    top, bottom = max(0, int(min(y0, y1) - radius)), min(height, int(math.ceil(max(y0, y1) + radius)) + 1)
    left, right = max(0, int(min(x0, x1) - radius)), min(width, int(math.ceil(max(x0, x1) + radius)) + 1)
    if top >= bottom or left >= right:
        return
    ys = np.arange(top, bottom)[:, None] + 0.5
    xs = np.arange(left, right)[None, :] + 0.5
    dx, dy = x1 - x0, y1 - y0
    length2 = dx * dx + dy * dy
    t = 0.0 if length2 == 0 else np.clip(((xs - x0) * dx + (ys - y0) * dy) / length2, 0.0, 1.0)
    distance2 = (xs - (x0 + t * dx)) ** 2 + (ys - (y0 + t * dy)) ** 2
    mask[top:bottom, left:right] |= distance2 <= radius * radius


def random_stroke(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """One thick free-form stroke (1 to MAX_SEGMENTS segments) as a bool (height, width) array."""
    side = min(height, width)
    radius = max(0.5, _uniform(rng, *STROKE_WIDTHS) * side / 2)
    x, y = _uniform(rng, 0, width), _uniform(rng, 0, height)
    direction = _uniform(rng, 0, 2 * math.pi)
    stroke = np.zeros((height, width), bool)
    for _ in range(_randint(rng, 1, MAX_SEGMENTS)):
        length = _uniform(rng, *SEGMENT_LENGTHS) * side
        direction += _uniform(rng, -MAX_TURN, MAX_TURN)
        end = (min(max(x + length * math.cos(direction), 0.0), width),
               min(max(y + length * math.sin(direction), 0.0), height))
        _segment(stroke, (x, y), end, radius)
        x, y = end
    return stroke


def _fill(height: int, width: int, rng: np.random.Generator, coverage: tuple[float, float],
          draw_element) -> np.ndarray:
    """Elements from `draw_element(height, width, rng)` until a coverage drawn in `coverage` is met."""
    _check(height, width, coverage)
    low, high = coverage
    target = _uniform(rng, low, high)
    mask = np.zeros((height, width), bool)
    area = float(height * width)
    for _ in range(MAX_ELEMENTS):
        candidate = mask | draw_element(height, width, rng)
        share = candidate.sum() / area
        if share > high:
            continue  # too much at once: try another element
        mask = candidate
        if share >= target:
            return mask[:, :, None].astype(np.float32)
    if low <= mask.sum() / area <= high:
        return mask[:, :, None].astype(np.float32)
    return _fallback_box(height, width, rng, target, coverage)


def _fallback_box(height: int, width: int, rng: np.random.Generator, target: float,
                  coverage: tuple[float, float]) -> np.ndarray:
    """One box of about `target` coverage, for when the elements could not reach the range."""
    low, high = coverage
    area = height * width
    best = None
    for box_h in range(1, height + 1):  # the box shape whose pixel count is closest to the target
        box_w = min(width, max(1, round(target * area / box_h)))
        pixels = box_h * box_w
        if low * area <= pixels <= high * area and (best is None or abs(pixels - target * area) < best[0]):
            best = (abs(pixels - target * area), box_h, box_w)
    if best is None:
        raise ValueError(f"no mask of a {height}x{width} image has a coverage in {coverage}")
    _, box_h, box_w = best
    top, left = _randint(rng, 0, height - box_h), _randint(rng, 0, width - box_w)
    mask = np.zeros((height, width, 1), np.float32)
    mask[top:top + box_h, left:left + box_w] = 1.0
    return mask


def box_mask(height: int, width: int, rng: np.random.Generator, *,
             coverage: tuple[float, float] = DEFAULT_COVERAGE) -> np.ndarray:
    """Random boxes covering a share of the image drawn uniformly in `coverage`; float32 (H, W, 1)."""
    return _fill(height, width, rng, coverage, random_box)


def stroke_mask(height: int, width: int, rng: np.random.Generator, *,
                coverage: tuple[float, float] = DEFAULT_COVERAGE) -> np.ndarray:
    """Thick free-form strokes covering a share drawn uniformly in `coverage`; float32 (H, W, 1)."""
    return _fill(height, width, rng, coverage, random_stroke)


def _box_or_stroke(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    return random_box(height, width, rng) if rng.random() < 0.5 else random_stroke(height, width, rng)


def training_mask(height: int, width: int, rng: np.random.Generator, *,
                  coverage: tuple[float, float] = DEFAULT_COVERAGE) -> np.ndarray:
    """A training mask: strokes, boxes, or both mixed, each with probability 1/3; float32 (H, W, 1)."""
    kind = _randint(rng, 0, 2)
    draw = (random_stroke, random_box, _box_or_stroke)[kind]
    return _fill(height, width, rng, coverage, draw)


def evaluation_mask(height: int, width: int, index: int, *, seed: int = 0,
                    coverage: tuple[float, float] = DEFAULT_COVERAGE) -> np.ndarray:
    """The fixed mask number `index` of an evaluation set: the same (size, index, seed) -> the same mask."""
    if index < 0:
        raise ValueError(f"an evaluation mask index must be >= 0, got {index}")
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed), int(index)])))
    return training_mask(height, width, rng, coverage=coverage)


def coverage_of(mask: np.ndarray) -> float:
    """The share of pixels to generate."""
    return float(np.mean(np.asarray(mask) >= 0.5))


def masked_image(image: np.ndarray, mask: np.ndarray, fill: float = 0.0) -> np.ndarray:
    """`image` with the pixels to generate (mask == 1) set to `fill`, the others unchanged.

    For images in [-1, 1], fill 0 is grey (Stable Diffusion inpainting, `image * (mask < 0.5)`) and
    fill -1 is black (the LDM inpainting model's `(1 - mask) * image` in [0, 1]).
    """
    image = np.asarray(image)
    mask = np.asarray(mask)
    if mask.ndim == image.ndim - 1:
        mask = mask[..., None]
    if mask.shape[:-1] != image.shape[:-1] or mask.shape[-1] != 1:
        raise ValueError(f"a mask of shape {np.asarray(mask).shape} does not fit an image of shape {image.shape}: "
                         "expected (H, W) or (H, W, 1) matching the image")
    return np.where(mask >= 0.5, np.asarray(fill, image.dtype), image)
