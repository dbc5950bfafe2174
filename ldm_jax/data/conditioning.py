"""Task inputs built from a clean training example (the output of `ImageTransform`).

Each `*_example` function returns a new dict: the example plus the inputs of one LDM task, named
as `ldm_jax.inference.tasks.prepare` names them:

| function | adds | for |
|---|---|---|
| `semantic_example` | "segmentation_onehot": float32 (H, W, n) | semantic synthesis (SpatialRescaler concat) |
| `caption_example` | "caption_tokens": int32 (L,) | text-to-image (BERT / CLIP / OpenCLIP tokens) |
| `layout_example` | "layout_tokens": int32 (3 * max_objects + 2,) | layout-to-image (`ldm_jax.layout`) |
| `super_resolution_example` | "low_res": float32 (H/f, W/f, 3) in [-1, 1] | LDM-BSR super-resolution |
| `inpainting_example` | "mask": float32 (H, W, 1) {0, 1}, 1 = generate; "masked_image": (H, W, 3) | inpainting |

`coco_layouts` reads a COCO instances JSON into the boxes `layout_tokens` takes.
"""
import dataclasses
import json
import os
from typing import Callable, Mapping, Sequence

import numpy as np

from ldm_jax import images as image_io
from ldm_jax import layout
from ldm_jax.data import degradations, masks
from ldm_jax.data.folder import class_prompt
from ldm_jax.data.records import BadRecord
from ldm_jax.models.tokenizers import TextTokenizer

# Config name -> the degradation that makes the low-resolution input (a plain dict, see DESIGN.md).
DEGRADATIONS: dict[str, Callable] = {
    "bicubic": lambda image, rng, factor: degradations.bicubic_degradation(image, factor),
    "bsr": lambda image, rng, factor: degradations.bsr_degradation(image, rng, factor, degradations.BSR),
    "bsr_light": lambda image, rng, factor: degradations.bsr_degradation(image, rng, factor, degradations.BSR_LIGHT),
}


def _key(example: Mapping) -> str:
    key = example.get("key")
    return key if isinstance(key, str) else "<example without a key>"


def _field(example: Mapping, name: str):
    if name not in example:
        raise BadRecord(_key(example), f"the example has no {name!r} (fields: {sorted(example)})")
    return example[name]


# -- semantic synthesis ------------------------------------------------------------------------------

def semantic_onehot(segmentation: np.ndarray, n_classes: int) -> np.ndarray:
    """A (H, W) map of class indices as a float32 (H, W, n_classes) one-hot array."""
    segmentation = np.asarray(segmentation)
    if segmentation.ndim != 2 or segmentation.dtype.kind not in "iu":
        raise ValueError(f"a segmentation map must be an (H, W) integer array, got shape {segmentation.shape} "
                         f"and dtype {segmentation.dtype}")
    return image_io.segmentation_to_onehot(segmentation, n_classes)[0]


def semantic_example(example: Mapping, n_classes: int) -> dict:
    """The example plus "segmentation_onehot" from its "segmentation"."""
    segmentation = _field(example, "segmentation")
    try:
        onehot = semantic_onehot(segmentation, n_classes)
    except ValueError as error:
        raise BadRecord(_key(example), str(error)) from error
    return {**example, "segmentation_onehot": onehot}


# -- captions ----------------------------------------------------------------------------------------

def tokenize_captions(captions: str | Sequence[str], tokenizer: TextTokenizer) -> np.ndarray:
    """Captions -> (N, tokenizer.max_length) int32 token ids (special tokens, truncation, padding)."""
    if isinstance(captions, str):
        captions = [captions]
    captions = list(captions)
    bad = [c for c in captions if not isinstance(c, str)]
    if bad:
        raise ValueError(f"captions must be strings, got {type(bad[0]).__name__}")
    return np.asarray(tokenizer(captions), np.int32)


def caption_example(example: Mapping, tokenizer: TextTokenizer, rng: np.random.Generator | None = None,
                    class_caption_probability: float = 0.0) -> dict:
    """The example plus "caption_tokens" (int32, (tokenizer.max_length,)) from its "caption", or, with
    probability `class_caption_probability`, from its class folder's name (`class_prompt`): so a model
    of a labelled folder learns the class names as prompts (all it has when there are no captions)."""
    if class_caption_probability and (class_caption_probability >= 1 or rng.random() < class_caption_probability):
        example = {**example, "caption": class_prompt(_field(example, "class_name"))}
    caption = _field(example, "caption")
    if not isinstance(caption, str):
        raise BadRecord(_key(example), f"'caption' must be a str, got {type(caption).__name__}")
    return {**example, "caption_tokens": tokenize_captions(caption, tokenizer)[0]}


# -- layouts -----------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class CocoInstances:
    """A COCO instances file as layouts: boxes per image id, and the contiguous category list."""
    layouts: dict[int, list[layout.Box]]
    category_ids: tuple[int, ...]     # COCO category id of each contiguous index
    category_names: tuple[str, ...]


def parse_coco_instances(data: Mapping, source: str = "<COCO JSON>") -> CocoInstances:
    """Layouts from a loaded COCO instances dict ("images", "annotations", "categories").

    Boxes become relative (x0, y0, w, h) (COCO's pixel [x, y, w, h] over the image's width and
    height), category ids become contiguous indices in increasing id order, "iscrowd" becomes
    `is_group_of`. Annotations keep their file order; images without annotations get an empty list.
    """
    for section in ("images", "annotations", "categories"):
        if not isinstance(data.get(section), list):
            raise ValueError(f"{source}: expected a COCO instances file with a {section!r} list")
    try:
        category_list = sorted(data["categories"], key=lambda c: int(c["id"]))
        category_ids = tuple(int(c["id"]) for c in category_list)
        names = tuple(str(c.get("name", c["id"])) for c in category_list)
        sizes = {int(im["id"]): (float(im["width"]), float(im["height"])) for im in data["images"]}
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(f"{source}: every category needs an 'id', every image an 'id', 'width' and "
                         f"'height' ({error!r})") from error
    index_of = {category: i for i, category in enumerate(category_ids)}
    layouts: dict[int, list[layout.Box]] = {image_id: [] for image_id in sizes}
    for number, annotation in enumerate(data["annotations"]):
        where = f"{source}: annotation {annotation.get('id', f'#{number}')}"
        try:
            image_id, category = int(annotation["image_id"]), int(annotation["category_id"])
            x, y, w, h = (float(v) for v in annotation["bbox"])
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"{where}: needs 'image_id', 'category_id' and 'bbox' [x, y, w, h] ({error!r})") from error
        if image_id not in sizes:
            raise ValueError(f"{where}: image_id {image_id} is not in 'images'")
        if category not in index_of:
            raise ValueError(f"{where}: category_id {category} is not in 'categories'")
        width, height = sizes[image_id]
        if width <= 0 or height <= 0:
            raise ValueError(f"{source}: image {image_id} has size {width}x{height}")
        layouts[image_id].append(layout.Box(index_of[category], (x / width, y / height, w / width, h / height),
                                            bool(annotation.get("iscrowd", 0))))
    return CocoInstances(layouts, category_ids, names)


def read_coco_instances(annotation_json_path: str | os.PathLike) -> CocoInstances:
    """`parse_coco_instances` of a COCO instances JSON file (e.g. instances_val2017.json)."""
    with open(annotation_json_path) as f:
        data = json.load(f)
    if not isinstance(data, Mapping):
        raise ValueError(f"{annotation_json_path}: expected a JSON object (a COCO instances file)")
    return parse_coco_instances(data, str(annotation_json_path))


def coco_layouts(annotation_json_path: str | os.PathLike) -> dict[int, list[layout.Box]]:
    """{image_id: [Box(category index, relative (x0, y0, w, h), is_group_of = iscrowd)]} of a COCO file."""
    return read_coco_instances(annotation_json_path).layouts


def layout_example(example: Mapping, *, n_tokens: int = layout.OPENIMAGES_TOKENS,
                   n_classes: int = layout.OPENIMAGES_CLASSES,
                   max_objects: int = layout.OPENIMAGES_MAX_OBJECTS) -> dict:
    """The example plus "layout_tokens" from its "boxes" (`ldm_jax.layout.layout_tokens`)."""
    boxes = _field(example, "boxes")
    try:
        tokens = layout.layout_tokens(boxes, n_tokens=n_tokens, n_classes=n_classes, max_objects=max_objects)
    except (ValueError, TypeError) as error:
        raise BadRecord(_key(example), f"cannot encode the layout: {error}") from error
    return {**example, "layout_tokens": tokens}


# -- super-resolution and inpainting ---------------------------------------------------------------------

def super_resolution_example(example: Mapping, rng: np.random.Generator, factor: int = 4,
                             mode: str = "bsr") -> dict:
    """The example plus "low_res": its "image" (float32 in [-1, 1]) degraded by `mode` and `factor`.

    `mode` is a key of DEGRADATIONS: "bicubic", "bsr" (BSRGAN variant) or "bsr_light" (LDM-BSR's).
    """
    if mode not in DEGRADATIONS:
        raise ValueError(f"unknown super-resolution degradation {mode!r}; expected one of {sorted(DEGRADATIONS)}")
    image = np.asarray(_field(example, "image"), np.float32)
    height, width = image.shape[:2]
    if height % factor or width % factor:
        raise ValueError(f"a super-resolution image of {height}x{width} must divide by factor {factor}")
    low = DEGRADATIONS[mode]((np.clip(image, -1.0, 1.0) + 1.0) / 2.0, rng, factor)
    return {**example, "low_res": (np.asarray(low, np.float32) * 2.0 - 1.0)}


def inpainting_example(example: Mapping, rng: np.random.Generator, *,
                       coverage: tuple[float, float] = masks.DEFAULT_COVERAGE, fill: float = 0.0) -> dict:
    """The example plus a random "mask" (float32 (H, W, 1), 1 = generate) and its "masked_image".

    `fill` is what the masked pixels become: 0 (grey, Stable Diffusion) or -1 (black, LDM inpainting).
    """
    image = np.asarray(_field(example, "image"), np.float32)
    mask = masks.training_mask(image.shape[0], image.shape[1], rng, coverage=coverage)
    return {**example, "mask": mask, "masked_image": masks.masked_image(image, mask, fill)}
