"""Bounding-box layouts -> the token sequence of the LDM layout-to-image model (OpenImages 256).

The reference builds its conditioning with taming-transformers'
`CoordinatesBoundingBoxConditionalBuilder` (`encode_crop=True`, `use_group_parameter=True`,
no separator). Restated here from its behaviour:
- the vocabulary has `n_tokens` = 8192 codes; `none` = n_tokens - 1 pads empty object slots;
- a point (x, y) in [0, 1]^2 is one code on a grid of s = int(sqrt(n_tokens)) = 90 cells per side:
  round(y * (s - 1)) * s + round(x * (s - 1));
- each object is the triple (class code, code of its top-left corner, code of its bottom-right
  corner); the class code is `category_no + n_classes * modifier`, modifier bit 0 = "is group of"
  (OpenImages has n_classes = 601 categories);
- boxes are (x0, y0, w, h) relative to the image, clamped to it (x0, y0 in [0, 1], w <= 1 - x0,
  h <= 1 - y0), at most `max_objects` (30) of them, padded with (none, none, none);
- two crop codes close the sequence: the crop (0, 0, 1, 1) of the whole image -> (0, s*s - 1).
So a sequence has 3 * max_objects + 2 = 92 tokens, the BERTEmbedder's max_seq_len.
Category numbers are the index of a class in the OpenImages class list the dataset used; this
module takes them as integers.
"""
import dataclasses
import json
import math
import os
from typing import Iterable, Mapping, Sequence

import numpy as np

OPENIMAGES_CLASSES = 601
OPENIMAGES_TOKENS = 8192
OPENIMAGES_MAX_OBJECTS = 30
CROP_TOKENS = 2


@dataclasses.dataclass(frozen=True)
class Box:
    """One object: its category number and (x0, y0, w, h) relative to the image, optionally a group."""
    category: int
    bbox: tuple[float, float, float, float]
    is_group_of: bool = False


def _clamp(value: float) -> float:
    return min(max(value, 0.0), 1.0)


def coordinate_token(x: float, y: float, n_tokens: int = OPENIMAGES_TOKENS) -> int:
    """The code of point (x, y) in [0, 1]^2 on the int(sqrt(n_tokens))-cell grid."""
    sections = int(math.sqrt(n_tokens))
    return int(round(y * (sections - 1))) * sections + int(round(x * (sections - 1)))


def as_box(item) -> Box:
    """A Box from a Box, a mapping {category|class, bbox, is_group_of?} or a tuple (category, x0, y0, w, h[, group])."""
    if isinstance(item, Box):
        return item
    if isinstance(item, Mapping):
        category = item.get("category", item.get("class"))
        if category is None or "bbox" not in item:
            raise ValueError(f"a layout box needs 'category' (or 'class') and 'bbox' [x0, y0, w, h]: {item!r}")
        bbox = tuple(float(v) for v in item["bbox"])
        group = bool(item.get("is_group_of", item.get("group", False)))
    else:
        values = list(item)
        if len(values) not in (5, 6):
            raise ValueError(f"a layout box tuple is (category, x0, y0, w, h[, is_group_of]), got {item!r}")
        category, bbox, group = values[0], tuple(float(v) for v in values[1:5]), bool(values[5:6] and values[5])
    if len(bbox) != 4:
        raise ValueError(f"a bbox is [x0, y0, w, h] relative to the image, got {bbox!r}")
    return Box(int(category), bbox, group)


def layout_tokens(boxes: Iterable, n_tokens: int = OPENIMAGES_TOKENS, n_classes: int = OPENIMAGES_CLASSES,
                  max_objects: int = OPENIMAGES_MAX_OBJECTS, use_group_parameter: bool = True) -> np.ndarray:
    """The (3 * max_objects + 2,) int32 token sequence of a layout (see the module docstring)."""
    boxes = [as_box(b) for b in boxes]
    if not boxes:
        raise ValueError("a layout needs at least one box")
    none = n_tokens - 1
    tokens = []
    for box in boxes[:max_objects]:
        if not 0 <= box.category < n_classes:
            raise ValueError(f"layout category {box.category} is outside [0, {n_classes})")
        x0, y0 = _clamp(box.bbox[0]), _clamp(box.bbox[1])
        w, h = min(box.bbox[2], 1.0 - x0), min(box.bbox[3], 1.0 - y0)
        modifier = 1 if (use_group_parameter and box.is_group_of) else 0
        tokens += [box.category + n_classes * modifier, coordinate_token(x0, y0, n_tokens),
                   coordinate_token(x0 + w, y0 + h, n_tokens)]
    tokens += [none] * (3 * (max_objects - min(len(boxes), max_objects)))
    tokens += [coordinate_token(0.0, 0.0, n_tokens), coordinate_token(1.0, 1.0, n_tokens)]
    result = np.asarray(tokens, np.int32)
    if result.min() < 0 or result.max() >= n_tokens:
        raise ValueError(f"layout tokens fall outside the vocabulary of {n_tokens}: raise n_tokens or "
                         f"lower n_classes ({n_classes})")
    return result


def max_objects_for(sequence_length: int) -> int:
    """How many object slots a token sequence of `sequence_length` holds (3 per object, 2 crop codes)."""
    objects, rest = divmod(sequence_length - CROP_TOKENS, 3)
    if objects < 1 or rest:
        raise ValueError(f"a layout sequence has 3 * objects + {CROP_TOKENS} tokens; {sequence_length} is not")
    return objects


def read_layout(path: str | os.PathLike) -> list[Box]:
    """Boxes from a JSON file: a list of {"category": int, "bbox": [x0, y0, w, h], "is_group_of": bool}."""
    with open(path) as f:
        data = json.load(f)
    if isinstance(data, Mapping):
        data = data.get("boxes", data.get("objects"))
    if not isinstance(data, Sequence):
        raise ValueError(f"{path}: expected a JSON list of boxes (or {{\"boxes\": [...]}})")
    return [as_box(item) for item in data]
