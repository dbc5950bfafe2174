"""The built-in dataset: coloured shapes on backgrounds, generated on the fly, nothing to download.

Each record is computed from (seed, index) alone, so `SyntheticShapes` is a grain random-access
source at any resolution: a circle, square or triangle in one of a few well-separated colours, at a
random position and size, on a plain background of another colour, with a caption, a segmentation
map and its bounding box. Small enough for a tiny autoencoder and LDM to learn on a CPU, and
`ldm_jax.data.shapes_checker` tells whether a generated image shows the class that was asked for.

Classes are (shape, colour) pairs: label = shape_index * len(colours) + colour_index, named like
"red circle". Labels are balanced: every block of `num_classes` consecutive indices holds each class
once, in a seed-dependent order.
"""
import operator
from typing import Sequence

import numpy as np

SHAPES = ("circle", "square", "triangle")

# Saturated colours near the corners of the RGB cube plus three neutrals: every pair is at least
# ~160 apart (Euclidean, 8-bit), so colour survives blur and noise.
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (230, 20, 20),
    "green": (20, 200, 20),
    "blue": (20, 20, 235),
    "yellow": (240, 220, 20),
    "magenta": (220, 20, 220),
    "cyan": (20, 210, 220),
    "white": (250, 250, 250),
    "black": (10, 10, 10),
    "gray": (128, 128, 128),
}
SHAPE_COLOURS = ("red", "green", "blue", "yellow", "magenta", "cyan")
DEFAULT_COLOURS = ("red", "green", "blue", "yellow")
BACKGROUNDS = ("white", "black", "gray") + SHAPE_COLOURS

CAPTION_TEMPLATES = (
    "a {colour} {shape} on a {background} background",
    "a {colour} {shape}",
    "a {shape} in {colour} on {background}",
    "a picture of a {colour} {shape}",
)

# The shape's bounding-box side, relative to the image, and the margin it keeps from the border.
SIZE_RANGE = (0.35, 0.65)
MARGIN = 0.06


def class_names(shapes: Sequence[str] = SHAPES, colours: Sequence[str] = DEFAULT_COLOURS) -> tuple[str, ...]:
    """The class names in label order: "red circle", "green circle", ..., "yellow triangle"."""
    return tuple(f"{colour} {shape}" for shape in shapes for colour in colours)


def caption_words(shapes: Sequence[str] = SHAPES, colours: Sequence[str] = PALETTE,
                  templates: Sequence[str] = CAPTION_TEMPLATES) -> tuple[str, ...]:
    """Every word a caption of the dataset can hold, sorted: the vocabulary of a word-level tokenizer."""
    words = set(shapes) | set(colours)
    for template in templates:
        words |= {w for w in template.format(colour="", shape="", background="").split()}
    return tuple(sorted(words))


def class_parts(label: int, shapes: Sequence[str] = SHAPES,
                colours: Sequence[str] = DEFAULT_COLOURS) -> tuple[str, str]:
    """(shape, colour) of a class label."""
    label = operator.index(label)
    if not 0 <= label < len(shapes) * len(colours):
        raise ValueError(f"class label {label} is outside [0, {len(shapes) * len(colours)})")
    shape_index, colour_index = divmod(label, len(colours))
    return shapes[shape_index], colours[colour_index]


def class_label(shape: str, colour: str, shapes: Sequence[str] = SHAPES,
                colours: Sequence[str] = DEFAULT_COLOURS) -> int:
    """The label of (shape, colour)."""
    if shape not in shapes or colour not in colours:
        raise ValueError(f"unknown class ({shape!r}, {colour!r}): shapes are {tuple(shapes)}, "
                         f"colours {tuple(colours)}")
    return list(shapes).index(shape) * len(colours) + list(colours).index(colour)


def shape_mask(shape: str, bbox: tuple[float, float, float, float], height: int, width: int) -> np.ndarray:
    """A (height, width) bool mask of `shape` filling the relative bbox (x0, y0, w, h).

    A pixel belongs to the shape when its centre does (no anti-aliasing): a disc inscribed in the
    box, the box itself, or an upward triangle with its apex at the top centre and its base at the
    bottom of the box.
    """
    x0, y0, w, h = bbox
    u = ((np.arange(width) + 0.5) / width)[None, :]
    v = ((np.arange(height) + 0.5) / height)[:, None]
    cx, cy = x0 + w / 2, y0 + h / 2
    if shape == "circle":
        return ((u - cx) / (w / 2)) ** 2 + ((v - cy) / (h / 2)) ** 2 <= 1.0
    inside_y = (v >= y0) & (v <= y0 + h)
    if shape == "square":
        return inside_y & (u >= x0) & (u <= x0 + w)
    if shape == "triangle":
        half_width = (v - y0) / h * (w / 2)
        return inside_y & (np.abs(u - cx) <= half_width)
    raise ValueError(f"unknown shape {shape!r}; known shapes are {SHAPES}")


class SyntheticShapes:
    """A grain random-access source of coloured-shape records (see the module docstring).

    Items: {"key": "shapes-<seed>/<index>", "image": uint8 (S, S, 3), "label": int,
    "caption": str, "segmentation": uint8 (S, S) with 0 = background, 1 + shape index inside the
    shape, "boxes": [{"category": label, "bbox": (x0, y0, w, h) relative}],
    "meta": {"shape", "colour", "background", "bbox"}}.

    Args:
      num_records: the length of the source.
      image_size: S, the side of the square images.
      seed: selects the dataset; the same (seed, index) always gives the same record.
      shapes, colours: the subsets of SHAPES and SHAPE_COLOURS that make up the classes.
      backgrounds: the background colours drawn from (never the shape's own colour).
      noise_std: standard deviation of Gaussian pixel noise in 8-bit levels (0: clean images).
      caption_templates: format strings with {colour}, {shape} and {background}.
    """

    def __init__(self, num_records: int, *, image_size: int = 64, seed: int = 0,
                 shapes: Sequence[str] = SHAPES, colours: Sequence[str] = DEFAULT_COLOURS,
                 backgrounds: Sequence[str] = BACKGROUNDS, noise_std: float = 0.0,
                 caption_templates: Sequence[str] = CAPTION_TEMPLATES):
        if num_records < 0:
            raise ValueError(f"num_records must be >= 0, got {num_records}")
        if image_size < 8:
            raise ValueError(f"image_size must be >= 8 for a shape to be recognisable, got {image_size}")
        unknown = [s for s in shapes if s not in SHAPES]
        if unknown or not shapes:
            raise ValueError(f"shapes must be a non-empty subset of {SHAPES}, got {tuple(shapes)}")
        unknown = [c for c in list(colours) + list(backgrounds) if c not in PALETTE]
        if unknown or not colours:
            raise ValueError(f"unknown colour(s) {unknown}: colours and backgrounds come from {tuple(PALETTE)}")
        if any(c not in SHAPE_COLOURS for c in colours):
            raise ValueError(f"shape colours must come from {SHAPE_COLOURS} (neutrals are backgrounds only), "
                             f"got {tuple(colours)}")
        if any(set(backgrounds) <= {c} for c in colours):
            raise ValueError(f"backgrounds {tuple(backgrounds)} leave no background for some shape colour")
        if noise_std < 0:
            raise ValueError(f"noise_std must be >= 0, got {noise_std}")
        for template in caption_templates:
            template.format(colour="c", shape="s", background="b")  # fails early on a bad placeholder
        self.num_records = int(num_records)
        self.image_size = int(image_size)
        self.seed = int(seed)
        self.shapes = tuple(shapes)
        self.colours = tuple(colours)
        self.backgrounds = tuple(backgrounds)
        self.noise_std = float(noise_std)
        self.caption_templates = tuple(caption_templates)

    @property
    def classes(self) -> tuple[str, ...]:
        """Class names in label order, e.g. "red circle"."""
        return class_names(self.shapes, self.colours)

    @property
    def num_classes(self) -> int:
        return len(self.shapes) * len(self.colours)

    def __len__(self) -> int:
        return self.num_records

    def __repr__(self) -> str:
        return (f"SyntheticShapes({self.num_records}, image_size={self.image_size}, seed={self.seed}, "
                f"{self.num_classes} classes)")

    def label_of(self, index: int) -> int:
        """The class of record `index`: a seed-dependent permutation of the classes per block."""
        block, position = divmod(index, self.num_classes)
        order = np.random.default_rng([self.seed, block, 0x5EED]).permutation(self.num_classes)
        return int(order[position])

    def __getitem__(self, index) -> dict:
        index = operator.index(index)
        if not 0 <= index < self.num_records:
            raise IndexError(f"SyntheticShapes index {index} is outside [0, {self.num_records})")
        label = self.label_of(index)
        shape, colour = class_parts(label, self.shapes, self.colours)
        rng = np.random.default_rng([self.seed, index])
        background = self._draw_background(rng, colour)
        side = rng.uniform(*SIZE_RANGE)
        x0, y0 = rng.uniform(MARGIN, 1.0 - MARGIN - side, size=2)
        bbox = (float(x0), float(y0), float(side), float(side))
        caption = self.caption_templates[rng.integers(len(self.caption_templates))].format(
            colour=colour, shape=shape, background=background)

        size = self.image_size
        inside = shape_mask(shape, bbox, size, size)
        image = np.where(inside[:, :, None], np.asarray(PALETTE[colour], np.uint8),
                         np.asarray(PALETTE[background], np.uint8))
        if self.noise_std > 0:
            noisy = image + rng.normal(0.0, self.noise_std, image.shape)
            image = np.clip(np.round(noisy), 0, 255).astype(np.uint8)
        segmentation = (inside * (1 + self.shapes.index(shape))).astype(np.uint8)
        return {"key": f"shapes-{self.seed}/{index:08d}", "image": image, "label": label, "caption": caption,
                "segmentation": segmentation, "boxes": [{"category": label, "bbox": bbox}],
                "meta": {"shape": shape, "colour": colour, "background": background, "bbox": bbox}}

    def _draw_background(self, rng: np.random.Generator, colour: str) -> str:
        choices = [b for b in self.backgrounds if b != colour]
        return choices[rng.integers(len(choices))]
