"""`generate(pipe, ...)`: every LDM task from user inputs to PIL images (the pipeline's `__call__`).

    pipe = LatentDiffusionPipeline.from_checkpoint("sd-v1-4.ckpt", config_path="v1-inference.yaml")
    images = pipe(prompt="an astronaut riding a horse", tokenizer="clip-vit-large-patch14/", num_steps=50)

The task follows from the model and the inputs given:
- unconditional models: nothing (batch_size samples);
- class-conditional (ClassEmbedder): `class_label` (int or list); guidance against the null class n_classes-1;
- text-to-image (CLIP / OpenCLIP / BERT): `prompt` (+ `negative_prompt`, default "") and `tokenizer`;
- image-to-image: `image` and `strength` on a model without concat inputs;
- inpainting: `image` + `mask` (white = generate): concat models (LDM inpainting, SD inpainting) get the
  masked image and mask as extra channels; other models blend the known latents in at every step;
- super-resolution (identity cond stage, LDM BSR): `low_res` (or `image`), upscaled by the first-stage factor;
- semantic synthesis (SpatialRescaler): `segmentation` (label map) -> one-hot -> concat;
- layout-to-image (BERTEmbedder over codes): `layout`, a list of boxes (see `ldm_jax.layout`).
Larger `height` / `width` than trained run the same UNet convolutionally; images above
`max_decode_pixels` are decoded in overlapping tiles.
"""
import dataclasses
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ldm_jax import images as image_io
from ldm_jax import layout as layout_codes
from ldm_jax.inference import inputs as task_inputs
from ldm_jax.inference import tiled_decode
from ldm_jax.ldm import ModelTraits

DEFAULT_IMG2IMG_STRENGTH = 0.75   # the reference img2img.py default
DEFAULT_MAX_DECODE_PIXELS = 1024 * 1024


@dataclasses.dataclass
class SamplerInputs:
    """Everything `pipe.sample_latents` receives besides x_T, steps, sampler, eta and the rng."""
    latent_shape: tuple[int, int, int, int]
    context: Any = None
    uncond_context: Any = None
    class_labels: Any = None
    concat: Any = None
    init_latents: Any = None
    mask: Any = None            # latent resolution, 1 = generate, 0 = keep
    strength: float | None = None
    guided: bool = False
    pixel_image: Any = None     # (image, mask) to paste back after decoding (LDM inpainting script)
    pixel_mask: Any = None


def _as_list(value, batch_size):
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    if batch_size is not None and len(values) == 1:
        values = values * batch_size
    if batch_size is not None and len(values) != batch_size:
        raise ValueError(f"got {len(values)} inputs for batch_size {batch_size}")
    return values


def _batch(array, batch_size: int):
    array = jnp.asarray(array)
    if array.shape[0] == batch_size:
        return array
    if array.shape[0] != 1:
        raise ValueError(f"an input of batch {array.shape[0]} cannot serve batch_size {batch_size}")
    return jnp.repeat(array, batch_size, axis=0)


def _pixel_size(image) -> tuple[int, int]:
    """(height, width) of an image input: a path, a PIL image, an (H, W[, C]) or (N, H, W, C) array."""
    if isinstance(image, np.ndarray):
        return tuple(image.shape[-3:-1]) if image.ndim >= 3 else tuple(image.shape)
    pil = image_io.load_image(image, "L")
    return pil.height, pil.width


def _image_size(traits: ModelTraits, height, width) -> tuple[int, int]:
    """Pixel size: given, else the trained size; checked against the UNet's multiple."""
    side = traits.latent_size * traits.factor
    height, width = height or side, width or side
    multiple = traits.pixel_multiple
    if height % multiple or width % multiple:
        raise ValueError(f"height and width must be multiples of {multiple} (first-stage factor {traits.factor} "
                         f"x 2^{traits.unet_levels - 1} UNet levels), got {height}x{width}")
    return int(height), int(width)


def prepare(pipe, *, prompt=None, negative_prompt="", class_label=None, image=None, mask=None, low_res=None,
            segmentation=None, layout=None, height=None, width=None, batch_size=None, strength=None,
            tokenizer=None) -> SamplerInputs:
    """The sampler inputs of the task the model and the given inputs imply (see the module docstring)."""
    traits = pipe.traits
    if traits.is_super_resolution and low_res is None:
        low_res, image = image, None
    sized_by, scale = (low_res, traits.factor) if low_res is not None else (image, 1)
    if sized_by is None:
        sized_by = segmentation
    if (height is None or width is None) and sized_by is not None:
        h, w = _pixel_size(sized_by)
        height, width = image_io.round_down_to_multiple(h * scale, w * scale, traits.pixel_multiple)
    height, width = _image_size(traits, height, width)
    lh, lw = height // traits.factor, width // traits.factor

    if batch_size is None:
        for many in (prompt, class_label):
            if isinstance(many, (list, tuple)):
                batch_size = len(many)
                break
        else:
            batch_size = 1
    inputs = SamplerInputs(latent_shape=(batch_size, lh, lw, traits.latent_channels))

    # Cross-attention / class conditioning.
    if traits.is_text:
        if prompt is None:
            prompt = ""
        tokenize = task_inputs.text_tokenizer(traits, tokenizer)
        inputs.context = pipe.encode_text(jnp.asarray(tokenize(_as_list(prompt, batch_size))))
        inputs.uncond_context = pipe.encode_text(jnp.asarray(tokenize(_as_list(negative_prompt, batch_size))))
        inputs.guided = True
    elif traits.is_class_conditional:
        if class_label is None:
            raise ValueError("a class-conditional model needs class_label= (an int or a list of ints)")
        labels = jnp.asarray(_as_list(class_label, batch_size), jnp.int32)
        n_classes = int(traits.cond_params.get("n_classes", 1000))
        inputs.context = pipe.encode_class(labels)
        inputs.uncond_context = pipe.encode_class(jnp.full_like(labels, n_classes - 1))
        inputs.guided = True
    elif traits.is_layout:
        if layout is None:
            raise ValueError("a layout-to-image model needs layout= (a list of boxes, see ldm_jax.layout)")
        inputs.context = pipe.encode_text(_batch(_layout_tokens(traits, layout)[None], batch_size))
    elif traits.num_classes is not None:
        if class_label is None:
            raise ValueError("this UNet embeds class labels itself: pass class_label=")
        inputs.class_labels = jnp.asarray(_as_list(class_label, batch_size), jnp.int32)

    # Concat conditioning and latent-space image inputs.
    if traits.is_semantic:
        if segmentation is None:
            raise ValueError("a semantic synthesis model needs segmentation= (a label map)")
        n_classes = int(traits.cond_params["in_channels"])
        onehot = image_io.segmentation_to_onehot(segmentation, n_classes, height, width)
        inputs.concat = _batch(task_inputs.semantic_concat(pipe, onehot, lh, lw), batch_size)
    elif traits.is_super_resolution:
        if low_res is None:
            raise ValueError("a super-resolution model needs low_res= (or image=), the low-resolution image")
        small = image_io.image_to_array(low_res, lh, lw)
        inputs.concat = _batch(task_inputs.super_resolution_concat(small, lh, lw), batch_size)
    elif traits.is_ldm_inpainting or traits.is_sd_inpainting:
        if image is None or mask is None:
            raise ValueError("an inpainting model needs image= and mask= (white = generate)")
        pixels = image_io.image_to_array(image, height, width)
        pixel_mask = image_io.mask_to_array(mask, height, width)
        build = task_inputs.ldm_inpainting_concat if traits.is_ldm_inpainting else task_inputs.sd_inpainting_concat
        inputs.concat = _batch(build(pipe, pixels, pixel_mask), batch_size)
        if traits.is_ldm_inpainting:
            inputs.pixel_image, inputs.pixel_mask = pixels, pixel_mask
    elif traits.concat_channels:
        raise ValueError(f"no task here builds the {traits.concat_channels} concat channels of this model "
                         f"(conditioning_key {traits.conditioning_key!r}, cond stage {traits.cond_kind!r})")
    elif image is not None:
        pixels = image_io.image_to_array(image, height, width)
        inputs.init_latents = _batch(pipe.encode(jnp.asarray(pixels)), batch_size)
        if mask is not None:      # inpainting by latent blending
            small = image_io.mask_to_latent(image_io.mask_to_array(mask, height, width), lh, lw)
            inputs.mask = _batch(small, batch_size)
            inputs.strength = 1.0 if strength is None else float(strength)
        else:
            inputs.strength = DEFAULT_IMG2IMG_STRENGTH if strength is None else float(strength)
    elif mask is not None:
        raise ValueError("mask= needs image= (the image to inpaint)")
    task_inputs.check_concat(traits, inputs.concat)
    return inputs


def _layout_tokens(traits: ModelTraits, layout) -> np.ndarray:
    if isinstance(layout, (str,)) or hasattr(layout, "__fspath__"):
        layout = layout_codes.read_layout(layout)
    length = int(traits.cond_params.get("max_seq_len", 92))
    return layout_codes.layout_tokens(layout, n_tokens=int(traits.cond_params.get("vocab_size", 8192)),
                                      max_objects=layout_codes.max_objects_for(length))


def decode_latents(pipe, latents, max_decode_pixels: int | None = DEFAULT_MAX_DECODE_PIXELS,
                   tile: int | None = None, overlap: int | None = None):
    """`pipe.decode(latents)`, in overlapping tiles when the image exceeds `max_decode_pixels`."""
    traits = pipe.traits
    _, lh, lw, _ = latents.shape
    if not tiled_decode.needs_tiling(lh * traits.factor, lw * traits.factor, max_decode_pixels):
        return pipe.decode(latents)
    tile = tile or traits.latent_size
    overlap = overlap if overlap is not None else tile // 4
    return tiled_decode.decode_tiled(pipe.decode, latents, tile, overlap, traits.factor)


def generate(pipe, prompt: str | Sequence[str] | None = None, *, negative_prompt: str | Sequence[str] = "",
             class_label=None, image=None, mask=None, low_res=None, segmentation=None, layout=None,
             num_steps: int = 50, sampler: str = "ddim", guidance_scale: float = 7.5, eta: float = 0.0,
             seed: int = 0, height: int | None = None, width: int | None = None, batch_size: int | None = None,
             strength: float | None = None, tokenizer=None, progress: bool = True,
             max_decode_pixels: int | None = DEFAULT_MAX_DECODE_PIXELS,
             return_latents: bool = False):
    """Samples the task the inputs describe and returns a list of PIL images (see the module docstring).

    Guidance applies to text and class conditioning (uncond: `negative_prompt` / the null class);
    other tasks sample without it. `strength` (img2img, default 0.75; 1.0 with a mask) is the
    fraction of the schedule re-run from the noised input. `return_latents=True` also returns the
    final latents: `(images, latents)`. The pipeline splits the batch over the local devices.
    """
    inputs = prepare(pipe, prompt=prompt, negative_prompt=negative_prompt, class_label=class_label, image=image,
                     mask=mask, low_res=low_res, segmentation=segmentation, layout=layout, height=height,
                     width=width, batch_size=batch_size, strength=strength, tokenizer=tokenizer)
    noise_key, sample_key = jax.random.split(jax.random.PRNGKey(seed))
    x_T = jax.random.normal(noise_key, inputs.latent_shape, jnp.float32)
    optional = {name: value for name, value in (("concat", inputs.concat), ("init_latents", inputs.init_latents),
                                                ("mask", inputs.mask), ("strength", inputs.strength))
                if value is not None}
    latents = pipe.sample_latents(
        x_T, context=inputs.context, uncond_context=inputs.uncond_context if inputs.guided else None,
        class_labels=inputs.class_labels, sampler=sampler, steps=num_steps, eta=eta,
        guidance_scale=guidance_scale if inputs.guided else 1.0, rng=sample_key, progress=progress, **optional)
    decoded = decode_latents(pipe, latents, max_decode_pixels)
    if inputs.pixel_mask is not None:   # the reference inpaint.py keeps the known pixels
        decoded = (1.0 - inputs.pixel_mask) * inputs.pixel_image + inputs.pixel_mask * jnp.clip(decoded, -1.0, 1.0)
    images = image_io.array_to_images(np.asarray(decoded))
    return (images, latents) if return_latents else images
