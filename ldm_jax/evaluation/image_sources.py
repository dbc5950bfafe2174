"""Where the images `ldm-jax evaluate` scores come from, always as uint8 (n, H, W, 3) batches.

- a dataset spec (`--data`): "builtin" (the built-in shapes, validation split), an image folder, or a
  data config file `path.py[:variant]` (its `config.data`, or the whole config when it is one);
  read in order (no shuffling, no crops or flips), resized and centre-cropped to the evaluated size;
- a sample folder or `.npz` (`--samples`): images generated elsewhere (an ADM batch: `arr_0`), or
  the samples/ folder of an earlier evaluation (its shards, in order);
- a diffusion checkpoint: `diffusion_sampler` draws batch i with `pipe(...)` at the seed
  `sample_store.batch_seed(seed, i)`; class-conditional models get label j -> j % num_classes for
  sample j, text models prompt j % len(prompts), so a batch depends only on its index;
- a super-resolution checkpoint: `super_resolver` upscales batch i of --data (the targets) from
  their bicubic (antialiased) downsampling by the model's factor, as SR3's protocol (Tab. 5);
- an inpainting checkpoint: `inpainter` fills image j of --data under mask j
  (`masks.evaluation_mask(H, W, j)`, fixed by the index, not the sampling seed) and keeps its
  known pixels, as the reference `scripts/inpaint.py` (Tab. 7);
- an autoencoder checkpoint: `reconstructor` encodes and decodes batches (the posterior mode of KL
  models, the quantised code of VQ models), sharded over the local devices.
Samples go to 8-bit as the reference scripts save them (truncation, `images.array_to_images`);
reconstructions are rounded, so a perfect autoencoder gives back its input exactly.
"""
import itertools
import os
import pathlib
from typing import Callable, Iterable, Iterator

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from PIL import Image

from ldm_jax import config_files
from ldm_jax import images as image_io
from ldm_jax.data import degradations, masks
from ldm_jax.data.config import default_data_config, source_from_config, transform_from_config
from ldm_jax.data.folder import ImageFolderSource
from ldm_jax.data.pipeline import make_pipeline
from ldm_jax.data.transforms import from_model_range
from ldm_jax.evaluation import feature_net, features, sample_store
from ldm_jax.inference import inputs as task_inputs
from ldm_jax.inference import tiled_decode
from ldm_jax.inference.inputs import text_tokenizer
from ldm_jax.ldm import FirstStage, ModelTraits
from ldm_jax.parallel.local import pad_batch

BUILTIN = "builtin"
# The tasks whose samples are a model's outputs for the images of --data, compared with them.
DATA_TASKS = ("super_resolution", "inpainting")
# The evaluation masks are part of the test set: one seed for every run, whatever its sampling --seed.
MASK_SEED = 0


# ----------------------------------------------------------------------------------------------
# Datasets and image files.


def data_config(spec: str, image_size: int, batch_size: int, count: int) -> ml_collections.ConfigDict:
    """The data config that reads `spec` (see the module docstring) in order at `image_size`."""
    data = default_data_config()
    if spec == BUILTIN:
        data.update(name="builtin", split="validation", num_records=max(int(count), 1))
    elif os.path.isdir(os.path.expanduser(spec)):
        data.update(name="folder", data_dir=os.path.expanduser(spec), labels="none")
    elif spec.endswith(".py") or ".py:" in spec:
        loaded = config_files.load_config(spec)
        data.update((loaded.data if "data" in loaded else loaded).to_dict())
    else:
        raise ValueError(f"data {spec!r}: expected 'builtin', an image folder, or a data config file "
                         "path.py[:variant]; no such folder or .py file")
    # The evaluated images, in order: no augmentation, no conditioning inputs.
    data.update(image_size=int(image_size), batch_size=int(batch_size), shuffle=False, num_epochs=1,
                task="image", random_crop=False, flip=False)
    return data


def rechunk(batches: Iterable[np.ndarray], count: int, batch_size: int, what: str) -> Iterator[np.ndarray]:
    """The first `count` images of `batches` in batches of exactly `batch_size` (the last one fewer)."""
    pending, held, given = [], 0, 0
    for batch in batches:
        pending.append(batch)
        held += len(batch)
        while held >= batch_size or (held and given + held >= count):
            merged = np.concatenate(pending)
            size = min(batch_size, count - given)
            yield merged[:size]
            given += size
            if given == count:
                return
            pending, held = [merged[size:]], len(merged) - size
    if given < count:
        raise ValueError(f"{what} holds {given + held} usable images; {count} were asked for")


def data_batches(data: ml_collections.ConfigDict, count: int, what: str) -> Iterator[np.ndarray]:
    """The first `count` images of the dataset `data` (from `data_config`), uint8, in batches of its batch_size."""
    source = source_from_config(data)
    if len(source) < count:
        raise ValueError(f"{what} holds {len(source)} images; {count} were asked for")
    pipeline = make_pipeline(source, transform_from_config(data), batch_size=data.batch_size, seed=data.seed,
                             shuffle=False, num_epochs=1, drop_remainder=False, process_index=0, process_count=1,
                             read_threads=data.read_threads, batch_prefetch=data.batch_prefetch,
                             max_bad_fraction=data.max_bad_fraction,
                             min_records_before_check=data.min_records_before_check)
    try:
        yield from rechunk((from_model_range(batch["image"]) for batch in pipeline), count, data.batch_size, what)
    finally:
        pipeline.close()


def data_length(spec: str, image_size: int) -> int | None:
    """How many images the dataset `spec` holds; None for the built-in shapes (as many as asked for)."""
    if spec == BUILTIN:
        return None
    return len(source_from_config(data_config(spec, image_size, 1, 1)))


def data_captions(data: ml_collections.ConfigDict, count: int) -> list[str]:
    """The captions of the first `count` records of `data` (all of them when it holds fewer)."""
    source = source_from_config(data)
    captions = []
    for index in range(min(count, len(source))):
        caption = source[index].get("caption")
        if not caption:
            raise ValueError(f"record {index} of the data has no caption; a text model needs --prompts FILE "
                             "or --data with captions")
        captions.append(str(caption))
    return captions


def read_prompts(path: str | os.PathLike) -> list[str]:
    """The non-empty lines of a prompt file."""
    prompts = [line.strip() for line in pathlib.Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    if not prompts:
        raise ValueError(f"prompt file {path} holds no prompt (one per line expected)")
    return prompts


def is_npz(path: str | os.PathLike) -> bool:
    return str(path).endswith(".npz")


def npz_has_images(path: str | os.PathLike) -> bool:
    """Whether an `.npz` holds an ADM image batch `arr_0` (besides, or instead of, `mu` / `sigma`)."""
    with np.load(path) as archive:
        return "arr_0" in archive.files


def samples_info(path: str | os.PathLike) -> tuple[int, int]:
    """(count, side) of the images of a sample folder, an ADM `.npz` or an evaluation's samples/ shards."""
    shards = [] if is_npz(path) else sample_store.shard_files(path)
    if shards:
        shapes = [features.npz_array_shape(shard)[0] for shard in shards]
        return sum(shape[0] for shape in shapes), min(shapes[0][1:3])
    if is_npz(path):
        shape, dtype = features.npz_array_shape(path)
        if dtype != np.uint8 or len(shape) != 4 or shape[-1] != 3:
            raise ValueError(f"{path}: arr_0 must be uint8 (N, H, W, 3) images, got {dtype} {shape}")
        return shape[0], min(shape[1:3])
    folder = ImageFolderSource(path, labels="none")
    with Image.open(folder.root / folder[0]["key"]) as first:
        return len(folder), min(first.size)


def sample_batches(path: str | os.PathLike, count: int, image_size: int, batch_size: int) -> Iterator[np.ndarray]:
    """The first `count` images of a sample folder, an ADM `.npz` or an evaluation's shards, at `image_size`."""
    what = f"samples {path}"
    files = [path] if is_npz(path) else sample_store.shard_files(path)
    if not files:
        return data_batches(data_config(str(path), image_size, batch_size, count), count, what)
    shape, _ = features.npz_array_shape(files[0])
    if shape[1:3] != (image_size, image_size):
        raise ValueError(f"{path} holds {shape[1]}x{shape[2]} images; --image-size {image_size} resizes image "
                         "folders only")
    batches = itertools.chain.from_iterable(features.read_npz_images(file, batch_size) for file in files)
    return rechunk(batches, count, batch_size, what)


# ----------------------------------------------------------------------------------------------
# Models.


def conditioning(traits: ModelTraits) -> str:
    """"class", "text", "unconditional", "super_resolution" or "inpainting": how evaluate conditions the
    samples of this model (the last two on the images of --data)."""
    if traits.is_class_conditional or (traits.num_classes is not None and not traits.concat_channels):
        return "class"
    if traits.is_text:
        return "text"
    if traits.cond_kind is None and not traits.concat_channels and traits.cond_stage_source == "none":
        return "unconditional"
    if traits.is_super_resolution:
        return "super_resolution"
    if traits.is_ldm_inpainting:
        return "inpainting"
    raise ValueError(f"evaluate samples unconditional, class-conditional, text-to-image, super-resolution and LDM "
                     f"inpainting models; this one is conditioned on {traits.cond_kind or traits.cond_stage_source} "
                     f"through {traits.conditioning_key!r} (semantic, layout and text-guided inpainting models need "
                     "inputs evaluate does not build)")


def num_classes(traits: ModelTraits) -> int:
    """The classes samples are drawn from: a ClassEmbedder's last class is the null class of guidance."""
    if traits.is_class_conditional:
        return int(traits.cond_params.get("n_classes", 1000)) - 1
    return int(traits.num_classes)


def diffusion_sampler(pipe, *, steps: int, sampler: str, eta: float, guidance_scale: float, seed: int,
                      image_size: int, batch_size: int, prompts: list[str] | None = None,
                      tokenizer=None) -> Callable[[int, int], np.ndarray]:
    """draw(index, length) -> the uint8 samples of batch `index` (its first `length` of `batch_size`).

    Every batch is drawn at the full `batch_size` (one compilation), the padding cut off after.
    """
    traits = pipe.traits
    kind = conditioning(traits)
    if kind == "text":
        if not prompts:
            raise ValueError("a text-to-image model needs prompts: --prompts FILE or --data with captions")
        tokenizer = text_tokenizer(traits, tokenizer)
    classes = num_classes(traits) if kind == "class" else None

    def draw(index: int, length: int) -> np.ndarray:
        positions = range(index * batch_size, (index + 1) * batch_size)
        inputs = {}
        if kind == "class":
            inputs["class_label"] = [j % classes for j in positions]
        elif kind == "text":
            inputs.update(prompt=[prompts[j % len(prompts)] for j in positions], tokenizer=tokenizer)
        samples = pipe(num_steps=steps, sampler=sampler, eta=eta, guidance_scale=guidance_scale,
                       seed=sample_store.batch_seed(seed, index), height=image_size, width=image_size,
                       batch_size=batch_size, progress=False, **inputs)
        return np.stack([np.asarray(image) for image in samples[:length]])

    return draw


def _check_side(traits: ModelTraits, image_size: int) -> None:
    if image_size % traits.pixel_multiple:
        raise ValueError(f"image_size {image_size}: this model needs a multiple of {traits.pixel_multiple} "
                         f"(first-stage factor {traits.factor} x 2^{traits.unet_levels - 1} UNet levels)")


def _as_pixels(decoded) -> np.ndarray:
    """Decoder output -> uint8, truncated as the reference scripts save samples (`images.array_to_images`)."""
    return np.stack([np.asarray(image) for image in image_io.array_to_images(np.asarray(decoded))])


def low_resolution(images: np.ndarray, factor: int) -> np.ndarray:
    """uint8 images (n, H, W, 3) -> their bicubic (antialiased) downsampling by `factor`, uint8 (SR3's input)."""
    return np.stack([degradations.bicubic_degradation(image, factor) for image in np.asarray(images)])


def super_resolver(pipe, *, steps: int, sampler: str, eta: float, seed: int, image_size: int,
                   batch_size: int) -> Callable[[int, np.ndarray], np.ndarray]:
    """upscale(index, targets) -> the uint8 upscalings of batch `index`'s low-resolution inputs.

    The targets (n <= batch_size uint8 images at `image_size`) are downsampled by the model's factor
    (its low-resolution input is concatenated at latent size) and upscaled back to `image_size`;
    drawn at the full `batch_size` (one compilation) with the seed `batch_seed(seed, index)`.
    """
    traits = pipe.traits
    _check_side(traits, image_size)

    def upscale(index: int, targets: np.ndarray) -> np.ndarray:
        small = low_resolution(targets, traits.factor).astype(np.float32) / 127.5 - 1.0
        samples = pipe(low_res=pad_batch(small, batch_size), num_steps=steps, sampler=sampler, eta=eta,
                       guidance_scale=1.0, seed=sample_store.batch_seed(seed, index), height=image_size,
                       width=image_size, batch_size=batch_size, progress=False)
        return np.stack([np.asarray(image) for image in samples[:len(targets)]])

    return upscale


def evaluation_masks(start: int, count: int, image_size: int, coverage: tuple[float, float]) -> np.ndarray:
    """Masks `start` .. `start + count - 1` of the evaluation set: float32 (count, H, W, 1), 1 = generate."""
    return np.stack([masks.evaluation_mask(image_size, image_size, index, seed=MASK_SEED, coverage=coverage)
                     for index in range(start, start + count)])


def inpainter(pipe, *, steps: int, sampler: str, eta: float, seed: int, image_size: int, batch_size: int,
              coverage: tuple[float, float] = masks.DEFAULT_COVERAGE) -> Callable[[int, np.ndarray], np.ndarray]:
    """inpaint(index, originals) -> the uint8 inpaintings of batch `index` of an LDM inpainting model.

    Image j (= index * batch_size + k) is masked by `evaluation_masks` mask j; the model sees
    [E(masked image), mask] (`inference.inputs.ldm_inpainting_concat`), and the output keeps the original's
    known pixels exactly (composited in 8 bits). Drawn at the full `batch_size` with the seed
    `batch_seed(seed, index)`, its x_T and sampler keys split from it as `pipe(...)` does.
    """
    traits = pipe.traits
    _check_side(traits, image_size)
    latent_shape = (batch_size, image_size // traits.factor, image_size // traits.factor, traits.latent_channels)

    def inpaint(index: int, originals: np.ndarray) -> np.ndarray:
        mask = evaluation_masks(index * batch_size, len(originals), image_size, coverage)
        pixels = pad_batch(originals, batch_size).astype(np.float32) / 127.5 - 1.0
        concat = task_inputs.ldm_inpainting_concat(pipe, pixels, pad_batch(mask, batch_size))
        noise_key, sample_key = jax.random.split(jax.random.PRNGKey(sample_store.batch_seed(seed, index)))
        x_T = jax.random.normal(noise_key, latent_shape, jnp.float32)
        latents = pipe.sample_latents(x_T, concat=concat, sampler=sampler, steps=steps, eta=eta, guidance_scale=1.0,
                                      rng=sample_key, progress=False)
        generated = _as_pixels(pipe.decode(latents, tiled_decode.DEFAULT_MAX_DECODE_PIXELS))[:len(originals)]
        return np.where(mask >= 0.5, generated, originals)

    return inpaint


def reconstructor(config: ml_collections.ConfigDict, variables: dict, batch_size: int
                  ) -> Callable[[np.ndarray], np.ndarray]:
    """uint8 images (n <= batch_size, H, W, 3) -> their uint8 reconstructions by the first stage of `config`."""
    first_stage = FirstStage.from_config(config.model.first_stage)

    def apply(variables, images):   # KL: the posterior mode; VQ: decode quantises
        latents = first_stage.encoding(variables, feature_net.as_signed(images))
        return {"reconstruction": first_stage.decode(variables, latents)}

    fn = features.sharded_feature_fn(apply, variables, batch_size)
    return lambda images: from_model_range(fn(images)["reconstruction"])

