"""Does a (generated) image show the requested coloured shape? A deterministic, model-free checker.

`classify(image)` reads an image of the built-in dataset (`ldm_jax.data.synthetic`) back:
1. the background colour is the median of a thin border ring; a ring that is far from uniform
   (noise, clutter) means no single shape on a plain background, so the image is rejected;
2. the shape's colour is the palette colour whose blend with the background best explains the
   pixels far from the background (blur mixes the two); neutrals are candidates too, so a white
   blob is rejected, not called "yellow";
3. the shape is the largest connected region past the midpoint between background and shape
   colour; two moment features pick the nearest ideal shape: the skewness of its rows (the upward
   triangle's mass sits low) and the coupling of x and y (1 for a square, 2/3 for a disc), or none
   when no shape is close, or the region is elongated or lopsided.
Garbage (uniform noise, a blank image, several blobs, a bar, a shape cut off by the frame) gives
None rather than a guess.
"""
from typing import Sequence

import numpy as np
from scipy import ndimage

from ldm_jax.data import synthetic

# Thresholds in 8-bit RGB units (Euclidean), tuned on clean, noisy and blurred dataset images.
MAX_BORDER_SPREAD = 40.0      # median distance of ring pixels from the background colour
MIN_CONTRAST = 60.0           # a pixel this far from the background may belong to the shape
MAX_BLEND_RESIDUAL = 60.0     # shape pixels lie this close (median) to a background-to-colour blend...
MAX_RESIDUAL_RATIO = 0.7      # ...and clearly closer than to the blend with any other colour
MIN_REACH = 0.6               # the shape must go at least this far from the background to its colour
MIN_AREA, MAX_AREA = 0.02, 0.6   # the shape's share of the image
MIN_MAIN_SHARE = 0.8          # the largest region must hold this share of all shape pixels

# (vertical skewness, coupling E[x^2 y^2] / (E[x^2] E[y^2])) of the ideal shapes: a square's x and y
# are independent (coupling 1), a disc's are not (2/3); the upward triangle, its mass low, is skewed
# (-2 sqrt(2) / 5) with coupling 4/5.
PROTOTYPES = {"square": (0.0, 1.0), "circle": (0.0, 2.0 / 3.0), "triangle": (-0.4 * np.sqrt(2.0), 0.8)}
FEATURE_SCALES = (0.12, 0.06)
MAX_PROTOTYPE_DISTANCE = 3.0  # in units of FEATURE_SCALES
ASPECT_RANGE = (0.65, 1.5)    # std(x) / std(y): 1 for the disc and square, 0.87 for the triangle
MAX_HORIZONTAL_SKEW = 0.3     # every shape is symmetric left to right
MIN_FILL = 0.35               # area / bounding box: 1/2 for the triangle, more for the others


def to_rgb255(image) -> np.ndarray:
    """A (H, W, 3) float32 array in [0, 255] from uint8, or from floats in [-1, 1] (model outputs)."""
    array = np.asarray(image)
    if array.ndim == 4 and array.shape[0] == 1:
        array = array[0]
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[-1] not in (1, 3):
        raise ValueError(f"expected an image (H, W, 3) or (H, W), got shape {array.shape}")
    if array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    if array.dtype == np.uint8:
        return array.astype(np.float32)
    if array.dtype.kind != "f":
        raise ValueError(f"expected uint8 or float pixels in [-1, 1], got dtype {array.dtype}")
    return ((np.clip(array.astype(np.float32), -1.0, 1.0) + 1.0) * 127.5).astype(np.float32)


def _border_ring(pixels: np.ndarray) -> np.ndarray:
    height, width = pixels.shape[:2]
    b = max(1, round(min(height, width) / 16))
    return np.concatenate([pixels[:b].reshape(-1, 3), pixels[-b:].reshape(-1, 3),
                           pixels[b:-b, :b].reshape(-1, 3), pixels[b:-b, -b:].reshape(-1, 3)])


def shape_features(mask: np.ndarray) -> dict[str, float]:
    """Moment features of a bool mask (about its centroid; x to the right, y downwards).

    vertical_skew: skewness of y, coupling: E[x^2 y^2] / (E[x^2] E[y^2]), aspect: std(x) / std(y),
    horizontal_skew: skewness of x, fill: area / bounding-box area. Moments integrate over the
    whole region, so a one-pixel spur along a noisy edge barely moves them.
    """
    ys, xs = np.nonzero(mask)
    x, y = xs - xs.mean(), ys - ys.mean()
    var_x, var_y = max(float((x * x).mean()), 1e-6), max(float((y * y).mean()), 1e-6)
    height, width = ys.max() - ys.min() + 1, xs.max() - xs.min() + 1
    return {"vertical_skew": float((y ** 3).mean()) / var_y ** 1.5,
            "coupling": float((x * x * y * y).mean()) / (var_x * var_y),
            "aspect": float(np.sqrt(var_x / var_y)),
            "horizontal_skew": float((x ** 3).mean()) / var_x ** 1.5,
            "fill": float(len(xs)) / float(height * width)}


def _nearest_shape(features: dict[str, float], shapes: Sequence[str]) -> str | None:
    if not (ASPECT_RANGE[0] <= features["aspect"] <= ASPECT_RANGE[1]
            and abs(features["horizontal_skew"]) <= MAX_HORIZONTAL_SKEW and features["fill"] >= MIN_FILL):
        return None  # elongated, lopsided or sparse: none of the dataset's shapes
    scores = {}
    for name in shapes:
        skew, coupling = PROTOTYPES[name]
        scores[name] = float(np.hypot((features["vertical_skew"] - skew) / FEATURE_SCALES[0],
                                      (features["coupling"] - coupling) / FEATURE_SCALES[1]))
    best = min(scores, key=scores.get)
    return best if scores[best] <= MAX_PROTOTYPE_DISTANCE else None


def _progress(pixels: np.ndarray, background: np.ndarray, colour: np.ndarray) -> np.ndarray:
    """How far each pixel has gone from `background` towards `colour` (0 there, 1 at the colour)."""
    axis = colour - background
    return ((pixels - background) @ axis) / float(axis @ axis)


def shape_colour(pixels: np.ndarray, background: np.ndarray) -> tuple[str, float] | None:
    """The palette colour whose blend with `background` best explains `pixels` (N, 3), and how far
    towards it they reach (the 90th percentile of their progress); None if no blend fits.

    Blur and down-sampling mix the shape's colour with the background, so the pixels lie on the
    segment between the two rather than at the colour itself: the segment is what is matched.
    """
    fits = []
    for name, value in synthetic.PALETTE.items():
        colour = np.asarray(value, np.float32)
        if np.linalg.norm(colour - background) < MIN_CONTRAST:
            continue  # the background's own colour
        progress = np.clip(_progress(pixels, background, colour), 0.0, 1.0)
        residual = np.linalg.norm(pixels - background - progress[:, None] * (colour - background), axis=-1)
        fits.append((float(np.median(residual)), name, float(np.percentile(progress, 90))))
    fits.sort()
    if len(fits) < 2:
        return None
    (residual, name, reach), runner_up = fits[0], fits[1][0]
    if residual > MAX_BLEND_RESIDUAL or residual > MAX_RESIDUAL_RATIO * runner_up or reach < MIN_REACH:
        return None
    return name, reach


def _shape_region(pixels: np.ndarray, background: np.ndarray, colour: np.ndarray) -> np.ndarray | None:
    """The largest connected region past the midpoint towards `colour`, holes filled; None if unclear."""
    labels, count = ndimage.label(_progress(pixels, background, colour) > 0.5)
    if count == 0:
        return None
    sizes = np.bincount(labels.ravel())[1:]
    main = int(np.argmax(sizes))
    if sizes[main] < MIN_MAIN_SHARE * sizes.sum():
        return None
    return ndimage.binary_fill_holes(labels == main + 1)


def background_colour(image) -> str:
    """The palette colour nearest to the median of the image's border ring."""
    background = np.median(_border_ring(to_rgb255(image)), axis=0)
    names = list(synthetic.PALETTE)
    distances = [np.linalg.norm(background - np.asarray(synthetic.PALETTE[n], np.float32)) for n in names]
    return names[int(np.argmin(distances))]


def caption_parts(caption: str) -> tuple[str, str, str | None]:
    """(shape, colour, background or None) a caption of the built-in dataset asks for.

    The first palette word is the shape's colour, a later one the background's; "a red circle on a
    blue background", "a circle in red on blue" and "a red circle" all parse.
    """
    words = caption.lower().replace(",", " ").split()
    shapes = [w for w in words if w in synthetic.SHAPES]
    colours = [w for w in words if w in synthetic.PALETTE]
    if len(shapes) != 1 or not 1 <= len(colours) <= 2:
        raise ValueError(f"cannot read a shape and a colour from the caption {caption!r}: expected one of "
                         f"{synthetic.SHAPES} and one or two of {tuple(synthetic.PALETTE)}")
    return shapes[0], colours[0], colours[1] if len(colours) == 2 else None


def matches_caption(image, caption: str, *, shapes: Sequence[str] = synthetic.SHAPES,
                    colours: Sequence[str] = synthetic.DEFAULT_COLOURS) -> bool:
    """Whether `image` shows what `caption` asks for: the shape in its colour and, if named, the background."""
    shape, colour, background = caption_parts(caption)
    if classify(image, shapes=shapes, colours=colours) != (shape, colour):
        return False
    return background is None or background_colour(image) == background


def classify(image, *, shapes: Sequence[str] = synthetic.SHAPES,
             colours: Sequence[str] = synthetic.DEFAULT_COLOURS) -> tuple[str, str] | None:
    """(shape, colour) shown in `image` (uint8, or float in [-1, 1]; any size), or None if unclear."""
    pixels = to_rgb255(image)
    height, width = pixels.shape[:2]
    ring = _border_ring(pixels)
    background = np.median(ring, axis=0)
    if np.median(np.linalg.norm(ring - background, axis=-1)) > MAX_BORDER_SPREAD:
        return None
    candidates = np.linalg.norm(pixels - background, axis=-1) > MIN_CONTRAST
    if candidates.sum() < MIN_AREA * height * width:
        return None
    found = shape_colour(pixels[candidates], background)
    if found is None or found[0] not in colours:
        return None
    colour, reach = found
    # The midpoint between the background and what the image actually reaches: a blurred or faded
    # shape is cut where its own edge is, not where the pure colour's would be.
    reached = background + reach * (np.asarray(synthetic.PALETTE[colour], np.float32) - background)
    region = _shape_region(pixels, background, reached)
    if region is None:
        return None
    area = region.sum() / float(height * width)
    touches_edge = region[0].any() or region[-1].any() or region[:, 0].any() or region[:, -1].any()
    if touches_edge or not MIN_AREA <= area <= MAX_AREA:
        return None  # cut off by the frame, a speck, or a second background
    shape = _nearest_shape(shape_features(region), shapes)
    return None if shape is None else (shape, colour)


def _as_parts(label, shapes: Sequence[str], colours: Sequence[str]) -> tuple[str, str]:
    if isinstance(label, str):
        names = synthetic.class_names(shapes, colours)
        if label not in names:
            raise ValueError(f"unknown class name {label!r}; classes are {names}")
        return synthetic.class_parts(names.index(label), shapes, colours)
    if isinstance(label, tuple):
        return label
    return synthetic.class_parts(int(label), shapes, colours)


def matches(image, label, *, shapes: Sequence[str] = synthetic.SHAPES,
            colours: Sequence[str] = synthetic.DEFAULT_COLOURS) -> bool:
    """Whether `image` shows class `label` (an int label, a name like "red circle" or (shape, colour))."""
    return classify(image, shapes=shapes, colours=colours) == _as_parts(label, shapes, colours)


def accuracy(images, labels, *, shapes: Sequence[str] = synthetic.SHAPES,
             colours: Sequence[str] = synthetic.DEFAULT_COLOURS) -> float:
    """The share of `images` (N, H, W, 3), or a list of images, that show their `labels`."""
    images, labels = list(images), list(labels)
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    if not images:
        raise ValueError("accuracy needs at least one image")
    hits = sum(matches(image, label, shapes=shapes, colours=colours) for image, label in zip(images, labels))
    return hits / len(images)
