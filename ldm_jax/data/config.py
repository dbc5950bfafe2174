"""`config.data`: which dataset a training run reads, how records become examples, how they are batched.

    config.data = default_data_config()
    config.data.name = "folder"
    config.data.data_dir = "/data/ffhq"
    validate_data_config(config.data)          # every problem at once, each naming its dotted field
    pipeline = pipeline_from_config(config.data)

Datasets (`name`): "builtin" (the synthetic coloured shapes, nothing to download), "folder" (an
image folder, class sub-folders as labels, caption sidecars), "tar" (webdataset tar shards),
"tfds" (a prepared TFDS ArrayRecord dataset) and "latent_cache" (first-stage latents written by
`ldm-jax data cache-latents`, for LDM training without the encoder). Every example holds "key",
"image" (float32 (S, S, 3) in [-1, 1]) and the record's "label" / "caption" / "segmentation" /
"boxes" (a latent cache's: "mean" + "std" or "latent" in place of "image", and "context" when it
holds text embeddings); the task adds the inputs its model is conditioned on
(`ldm_jax.data.conditioning`; a latent cache takes the image and caption tasks):

    image             nothing more (unconditional, class- or caption-conditional on the raw fields)
    super_resolution  "low_res" (S / sr_factor)^2 x 3 in [-1, 1], degraded by `degradation`
    inpainting        "mask" (S, S, 1) in {0, 1}, 1 = generate, and "masked_image"
    semantic          "segmentation_onehot" (S, S, num_classes)
    caption           "caption_tokens" (max_length,) int32
    layout            "layout_tokens" (92,) int32 from the boxes
"""
import os
import pathlib
from typing import Any, Callable, Mapping

import ml_collections
from ml_collections import config_dict

from ldm_jax.config_checks import field_errors
from ldm_jax.data.pipeline import InputPipeline, make_pipeline


class DataConfigError(ValueError):
    """One or more fields of `config.data` are invalid; the message lists each with its dotted name."""


def default_data_config() -> ml_collections.ConfigDict:
    """Every field of `config.data` with its default (see the comments for what each one means)."""
    return ml_collections.ConfigDict({
        # -- which records --------------------------------------------------------------------------
        "name": "builtin",              # builtin | folder | tar | tfds | latent_cache
        "data_dir": "",                 # folder: the image root; tfds: the TFDS data_dir; latent_cache: its folder
        "tfds_name": "",                # tfds: the dataset's name, e.g. "imagenet2012"
        "shards": "",                   # tar: paths, brace patterns "{00000..00099}.tar" ({a,b} for lists), globs
        "split": "train",               # tfds: the split; builtin: train | validation | test (disjoint sets);
                                        # folder: train | validation (see heldout_fraction)
        "num_records": 10_000,          # builtin: how many synthetic records
        "backgrounds": "",              # builtin: comma-separated background colours ("": every one)
        "labels": "auto",               # folder: auto | folders | none (class sub-folders as labels)
        "heldout_fraction": 0.0,        # folder: this share of each class is split "validation", never "train"
        "min_size": 0,                  # drop images whose smaller side is below this (0: keep all)
        "max_aspect_ratio": 0.0,        # tar: drop images more elongated than this (0: keep all)
        "caption_required": False,      # tar: drop samples without a caption
        # -- how a record becomes an example ----------------------------------------------------------
        "image_size": 256,              # side of the square training image
        "random_crop": False,           # random (else centre) crop after resizing the smaller side
        "flip": False,                  # mirror left-right with probability 1/2
        "resample": "bicubic",          # the resize filter: bicubic | bilinear | area | lanczos
        "task": "image",                # image | super_resolution | inpainting | semantic | caption | layout
        "sr_factor": 4,                 # super_resolution: how much smaller the low-resolution input is
        "degradation": "bicubic",       # super_resolution: bicubic | bsr | bsr_light (LDM-BSR's)
        "mask_coverage_min": 0.1,       # inpainting: the masked share of the image is drawn in [min, max]
        "mask_coverage_max": 0.5,
        "mask_fill": 0.0,               # inpainting: masked pixels become 0 (grey, SD) or -1 (black, LDM)
        "num_classes": 0,               # semantic: classes of the segmentation maps (one-hot channels)
        "tokenizer": "",                # caption: the folder of the tokenizer's vocabulary files (or BERT's vocab.txt)
        "tokenizer_kind": "clip",       # caption: clip | open_clip | bert
        "max_length": 77,               # caption: tokens per caption (special tokens and padding included)
        "class_caption_probability": 0.0,  # caption, labelled folder: use the class name as the caption this often
        # -- how examples are batched ----------------------------------------------------------------
        "batch_size": 64,               # global: each of P processes gets batch_size / P
        "seed": 0,                      # shuffling and per-record randomness
        "shuffle": True,
        "num_epochs": config_dict.placeholder(int),  # None: repeat forever
        "worker_count": 0,              # worker processes (0: decode in the training process's threads)
        "worker_buffer_size": 1,        # batches each worker keeps ready
        "read_threads": 2,              # threads per process / worker, each making one batch at a time
        "batch_prefetch": 2,            # batches the training process keeps ready
        "max_bad_fraction": 0.01,       # fail when more records than this are unusable
        "min_records_before_check": 500,
    })


# Fields whose default is None (a placeholder) and the type they take otherwise.
_OPTIONAL_FIELDS = {"num_epochs": int}


# The built-in dataset's splits are generated from different seeds, so they never share a record.
BUILTIN_SPLITS = {"train": 0, "validation": 1, "test": 2}


def _builtin_backgrounds(text: str) -> list[str]:
    """The colour names of `data.backgrounds` ("white, gray"); every background when empty."""
    from ldm_jax.data.synthetic import BACKGROUNDS
    names = [name.strip() for name in text.split(",") if name.strip()]
    return names or list(BACKGROUNDS)


def _builtin_source(data):
    from ldm_jax.data.synthetic import SyntheticShapes
    return SyntheticShapes(data.num_records, image_size=data.image_size, seed=BUILTIN_SPLITS[data.split],
                           backgrounds=_builtin_backgrounds(data.backgrounds))


def _folder_source(data):
    from ldm_jax.data.folder import ImageFolderSource
    return ImageFolderSource(data.data_dir, labels=data.labels, split=data.split,
                             heldout_fraction=data.heldout_fraction)


def _tar_source(data):
    from ldm_jax.data.webdataset import TarShardSource
    return TarShardSource(data.shards, min_size=data.min_size or None,
                          max_aspect_ratio=data.max_aspect_ratio or None, caption_required=data.caption_required)


def _tfds_source(data):
    from ldm_jax.data.arrayrecord import tfds_source
    return tfds_source(data.tfds_name, split=data.split, data_dir=data.data_dir)


def _latent_cache_source(data):
    from ldm_jax.data.latent_cache import LatentCacheSource
    return LatentCacheSource(data.data_dir)


# Dataset name -> the source it reads (given the data config).
DATASETS: dict[str, Callable[[Any], Any]] = {
    "builtin": _builtin_source, "folder": _folder_source, "tar": _tar_source, "tfds": _tfds_source,
    "latent_cache": _latent_cache_source}

# The tasks a latent cache can feed: the others need the images (or maps, boxes) it does not keep.
LATENT_CACHE_TASKS = ("image", "caption")


def _image_transform(data):
    from ldm_jax.data.transforms import ImageTransform
    return ImageTransform(data.image_size, random_crop=data.random_crop, flip=data.flip, min_size=data.min_size,
                          resample=data.resample)


def _text_tokenizer(data):
    from ldm_jax.models import tokenizers

    if data.tokenizer_kind == "open_clip":
        return tokenizers.open_clip_tokenizer(data.tokenizer, data.max_length)
    builder = tokenizers.clip_tokenizer if data.tokenizer_kind == "clip" else tokenizers.bert_tokenizer
    return builder(data.tokenizer, data.max_length)


def _add_super_resolution(example, rng, options):
    from ldm_jax.data.conditioning import super_resolution_example
    return super_resolution_example(example, rng, factor=options["factor"], mode=options["degradation"])


def _add_inpainting(example, rng, options):
    from ldm_jax.data.conditioning import inpainting_example
    return inpainting_example(example, rng, coverage=options["coverage"], fill=options["fill"])


def _add_semantic(example, rng, options):
    from ldm_jax.data.conditioning import semantic_example
    return semantic_example(example, options["num_classes"])


def _add_caption(example, rng, options):
    from ldm_jax.data.conditioning import caption_example
    return caption_example(example, options["tokenizer"], rng, options["class_caption_probability"])


def _add_layout(example, rng, options):
    from ldm_jax.data.conditioning import layout_example
    return layout_example(example)


# Task name -> (what it adds to the image example, the options it reads from the data config).
TASKS: dict[str, tuple[Callable | None, Callable[[Any], dict]]] = {
    "image": (None, lambda data: {}),
    "super_resolution": (_add_super_resolution,
                         lambda data: {"factor": data.sr_factor, "degradation": data.degradation}),
    "inpainting": (_add_inpainting, lambda data: {"coverage": (data.mask_coverage_min, data.mask_coverage_max),
                                                  "fill": data.mask_fill}),
    "semantic": (_add_semantic, lambda data: {"num_classes": data.num_classes}),
    "caption": (_add_caption, lambda data: {"tokenizer": _text_tokenizer(data),
                                            "class_caption_probability": data.class_caption_probability}),
    "layout": (_add_layout, lambda data: {}),
}


TOKENIZER_KINDS = ("clip", "open_clip", "bert")


class TaskTransform:
    """Record -> example (an `ImageTransform`, or a latent cache's `CachedExample`) -> plus the inputs
    of one task (`conditioning`).

    Picklable, so grain can send it to worker processes.
    """

    def __init__(self, example_transform, task: str, options: dict):
        self.example_transform, self.task, self.options = example_transform, task, options

    def __call__(self, record, rng):
        example = self.example_transform(record, rng)
        add_inputs = TASKS[self.task][0]
        return example if add_inputs is None else add_inputs(example, rng, self.options)

    def __repr__(self) -> str:
        return f"TaskTransform({self.example_transform!r}, task={self.task!r})"


def _range_errors(data: Mapping, prefix: str) -> list[str]:
    def bad(name: str, condition: bool, expected: str) -> list[str]:
        return [] if condition else [f"{prefix}.{name}: {expected}, got {data[name]!r}"]

    from ldm_jax.data.folder import LABEL_MODES, SPLITS
    from ldm_jax.data.transforms import RESAMPLING

    errors = (bad("image_size", data["image_size"] >= 8, "must be >= 8")
              + bad("batch_size", data["batch_size"] >= 1, "must be >= 1")
              + bad("seed", 0 <= data["seed"] < 2**32, "must be in [0, 2**32)")
              + bad("num_epochs", data["num_epochs"] is None or data["num_epochs"] >= 1, "must be >= 1 or None")
              + bad("worker_count", data["worker_count"] >= 0, "must be >= 0")
              + bad("worker_buffer_size", data["worker_buffer_size"] >= 1, "must be >= 1")
              + bad("read_threads", data["read_threads"] >= 0, "must be >= 0")
              + bad("batch_prefetch", data["batch_prefetch"] >= 0, "must be >= 0")
              + bad("max_bad_fraction", 0.0 <= data["max_bad_fraction"] <= 1.0, "must be in [0, 1]")
              + bad("min_records_before_check", data["min_records_before_check"] >= 1, "must be >= 1")
              + bad("min_size", data["min_size"] >= 0, "must be >= 0")
              + bad("max_aspect_ratio", data["max_aspect_ratio"] == 0 or data["max_aspect_ratio"] >= 1,
                    "must be >= 1, or 0 for no limit")
              + bad("resample", data["resample"] in RESAMPLING, f"must be one of {', '.join(RESAMPLING)}"))
    if data["task"] not in TASKS:
        errors.append(f"{prefix}.task: unknown task {data['task']!r}; known tasks: {', '.join(TASKS)}")
    errors += _task_errors(data, prefix, bad)
    name = data["name"]
    if name not in DATASETS:
        errors.append(f"{prefix}.name: unknown dataset {name!r}; known datasets: {', '.join(DATASETS)}")
    elif name == "builtin":
        errors += bad("num_records", data["num_records"] >= 1, "must be >= 1")
        from ldm_jax.data.synthetic import BACKGROUNDS
        unknown = set(_builtin_backgrounds(data["backgrounds"])) - set(BACKGROUNDS)
        errors += bad("backgrounds", not unknown, f"must name colours of {', '.join(BACKGROUNDS)}")
        errors += bad("split", data["split"] in BUILTIN_SPLITS,
                      f"the builtin dataset's splits are {', '.join(BUILTIN_SPLITS)}")
    elif name == "folder":
        errors += _directory_errors(data, prefix, "the image folder")
        errors += bad("labels", data["labels"] in LABEL_MODES, f"must be one of {', '.join(LABEL_MODES)}")
        errors += bad("heldout_fraction", 0 <= data["heldout_fraction"] < 1, "must be in [0, 1)")
        errors += bad("split", data["split"] in SPLITS and (data["split"] == "train" or data["heldout_fraction"] > 0),
                      "a folder's splits are train and validation (validation needs heldout_fraction > 0)")
    elif name == "tfds":
        errors += _directory_errors(data, prefix, "the TFDS data_dir")
        if not data["tfds_name"]:
            errors.append(f"{prefix}.tfds_name: the tfds dataset needs the name of a prepared TFDS dataset")
    elif name == "tar":
        errors += _shard_errors(data["shards"], prefix)
    elif name == "latent_cache":
        errors += _latent_cache_errors(data, prefix, bad)
    return errors


def _latent_cache_errors(data: Mapping, prefix: str, bad) -> list[str]:
    errors = _directory_errors(data, prefix, "the latent cache folder")
    if not errors and not any(pathlib.Path(data["data_dir"]).expanduser().glob("cache-p*.json")):
        errors.append(f"{prefix}.data_dir: no latent cache in {data['data_dir']!r} (expected cache-p000.json, "
                      "written last by `ldm-jax data cache-latents`)")
    # The augmentation happened when the cache was written: its latents are of fixed crops.
    fixed = "must be False: a latent cache holds the latents of fixed crops"
    errors += bad("random_crop", not data["random_crop"], fixed) + bad("flip", not data["flip"], fixed)
    errors += bad("task", data["task"] in LATENT_CACHE_TASKS or data["task"] not in TASKS,  # unknown: said above
                  f"a latent cache holds no images: it feeds the {' and '.join(LATENT_CACHE_TASKS)} tasks")
    return errors


def _task_errors(data: Mapping, prefix: str, bad) -> list[str]:
    from ldm_jax.data.conditioning import DEGRADATIONS

    task = data["task"]
    if task == "super_resolution":
        return (bad("sr_factor", data["sr_factor"] >= 2 and data["image_size"] % data["sr_factor"] == 0,
                    f"must be >= 2 and divide image_size {data['image_size']}")
                + bad("degradation", data["degradation"] in DEGRADATIONS, f"must be one of {', '.join(DEGRADATIONS)}"))
    if task == "inpainting":
        low, high = data["mask_coverage_min"], data["mask_coverage_max"]
        return (bad("mask_coverage_min", 0 < low <= high, "must be > 0 and <= mask_coverage_max")
                + bad("mask_coverage_max", high < 1, "must be < 1")
                + bad("mask_fill", -1 <= data["mask_fill"] <= 1, "must be in [-1, 1]"))
    if task == "semantic":
        return bad("num_classes", data["num_classes"] >= 1, "the semantic task needs the number of classes (>= 1)")
    if task == "caption":
        errors = bad("tokenizer_kind", data["tokenizer_kind"] in TOKENIZER_KINDS,
                     f"must be one of {', '.join(TOKENIZER_KINDS)}")
        errors += bad("max_length", data["max_length"] >= 2, "must be >= 2")
        errors += bad("class_caption_probability", 0 <= data["class_caption_probability"] <= 1, "must be in [0, 1]")
        if not data["tokenizer"]:
            errors.append(f"{prefix}.tokenizer: the caption task needs the folder of the tokenizer's vocabulary "
                          "files (vocab.json + merges.txt or bpe_simple_vocab_16e6.txt.gz for CLIP, vocab.txt "
                          "for BERT)")
        elif not os.path.exists(os.path.expanduser(data["tokenizer"])):
            errors.append(f"{prefix}.tokenizer: the tokenizer folder (or vocabulary file) {data['tokenizer']!r} "
                          "does not exist")
        return errors
    return []


def _directory_errors(data: Mapping, prefix: str, what: str) -> list[str]:
    if not data["data_dir"]:
        return [f"{prefix}.data_dir: the {data['name']} dataset needs data_dir ({what})"]
    path = os.path.expanduser(data["data_dir"])
    if not os.path.isdir(path):
        return [f"{prefix}.data_dir: {what} {data['data_dir']!r} "
                f"{'is not a folder' if os.path.exists(path) else 'does not exist'}"]
    return []


def _shard_errors(shards: str, prefix: str) -> list[str]:
    from ldm_jax.data.webdataset import expand_shards

    if not shards.strip():
        return [f"{prefix}.shards: the tar dataset needs shards (e.g. '/data/laion/{{00000..00099}}.tar')"]
    try:
        if not expand_shards(shards):
            return [f"{prefix}.shards: {shards!r} names no shard"]
    except (ValueError, FileNotFoundError) as error:
        return [f"{prefix}.shards: {error}"]
    return []


def _data_section(config) -> dict:
    """The data config as a dict, given it or a whole experiment config holding it as `.data`."""
    config = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    return dict(config["data"]) if isinstance(config.get("data"), Mapping) else config


def validate_data_config(config, prefix: str = "config.data") -> None:
    """Raises DataConfigError listing every invalid field of the data config (a ConfigDict or a mapping:
    `config.data` itself, or a whole experiment config holding it)."""
    data = _data_section(config)
    defaults = default_data_config().to_dict()
    errors = field_errors(data, defaults, prefix, _OPTIONAL_FIELDS)
    if not errors:
        errors = _range_errors({**defaults, **data}, prefix)
    if errors:
        raise DataConfigError(f"invalid data config ({len(errors)} problem{'s' * (len(errors) > 1)}):\n  "
                              + "\n  ".join(errors))


def _checked(config) -> ml_collections.ConfigDict:
    """The validated data config with every field (defaults for those not given)."""
    data = _data_section(config)
    validate_data_config(data)
    merged = default_data_config()
    merged.update(data)
    return merged


def source_from_config(data):
    """The grain source `data.name` names, checked first."""
    data = _checked(data)
    return DATASETS[data.name](data)


def transform_from_config(data):
    """The record -> example transform of `data.task`, checked first.

    The plain image task is the `ImageTransform` itself, so the pipeline can move uint8 pixels
    from its readers and scale them once per batch (`ImageTransform.finish_batch`). A latent
    cache's records become examples through `CachedExample` instead.
    """
    data = _checked(data)
    if data.name == "latent_cache":
        from ldm_jax.data.latent_cache import CachedExample, read_description
        example_transform = CachedExample(read_description(data.data_dir))
    else:
        example_transform = _image_transform(data)
    if TASKS[data.task][0] is None:
        return example_transform
    return TaskTransform(example_transform, data.task, TASKS[data.task][1](data))


def pipeline_from_config(data, *, process_index: int | None = None, process_count: int | None = None
                         ) -> InputPipeline:
    """The per-process batch iterator of `config.data` (see `make_pipeline`)."""
    data = _checked(data)
    return make_pipeline(
        DATASETS[data.name](data), transform_from_config(data), batch_size=data.batch_size, seed=data.seed,
        shuffle=data.shuffle, num_epochs=data.num_epochs, worker_count=data.worker_count,
        worker_buffer_size=data.worker_buffer_size, read_threads=data.read_threads, batch_prefetch=data.batch_prefetch,
        process_index=process_index, process_count=process_count, max_bad_fraction=data.max_bad_fraction,
        min_records_before_check=data.min_records_before_check)
