"""`prepare(pipe, ...)`: what each LDM task feeds the sampler, from the user's inputs (the first step of
the pipeline's `__call__`).

    pipe = LatentDiffusionPipeline.from_checkpoint("sd-v1-4.ckpt", config_path="v1-inference.yaml")
    images = pipe(prompt="an astronaut riding a horse", tokenizer="clip-vit-large-patch14/", num_steps=50)

A task is a plain function of (pipe, inputs) returning its share of the `SamplerInputs`: one
conditioning task (text, class, layout, UNet class labels) and one image task (semantic map,
low-res image, concat inpainting, image-to-image) follow from the model and the inputs given:
- unconditional models: nothing (batch_size samples);
- class-conditional (ClassEmbedder): `class_label` (int or list); guidance against the null class n_classes-1;
- text-to-image (CLIP / OpenCLIP / BERT): `prompt` (+ `negative_prompt`, default "") and `tokenizer`;
- image-to-image: `image` and `strength` on a model without concat inputs;
- inpainting: `image` + `mask` (white = generate): concat models (LDM inpainting, SD inpainting) get the
  masked image and mask as extra channels; other models blend the known latents in at every step;
- super-resolution (identity cond stage, LDM BSR): `low_res` (or `image`), upscaled by the first-stage factor;
- semantic synthesis (SpatialRescaler): `segmentation` (label map) -> one-hot -> concat;
- layout-to-image (BERTEmbedder over codes): `layout`, a list of boxes (see `ldm_jax.layout`).
Larger `height` / `width` than trained run the same UNet convolutionally.
"""
import dataclasses
from typing import Any, Callable

import jax.numpy as jnp
import numpy as np

from ldm_jax import images as image_io
from ldm_jax import layout as layout_codes
from ldm_jax.inference import inputs as task_inputs
from ldm_jax.inference.inputs import TaskInputs
from ldm_jax.ldm import ModelTraits

DEFAULT_IMG2IMG_STRENGTH = 0.75   # the reference img2img.py default


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


# -- conditioning tasks -----------------------------------------------------------------------------

def text_to_image(pipe, inputs: TaskInputs) -> dict:
    """The prompt's context, guided against the negative prompt's (default "")."""
    tokenize = task_inputs.text_tokenizer(pipe.traits, inputs.tokenizer)
    prompt = "" if inputs.prompt is None else inputs.prompt
    return dict(context=pipe.encode_text(jnp.asarray(tokenize(inputs.per_sample(prompt)))),
                uncond_context=pipe.encode_text(jnp.asarray(tokenize(inputs.per_sample(inputs.negative_prompt)))),
                guided=True)


def class_conditional(pipe, inputs: TaskInputs) -> dict:
    """The class embedding, guided against the null class n_classes - 1."""
    if inputs.class_label is None:
        raise ValueError("a class-conditional model needs class_label= (an int or a list of ints)")
    labels = jnp.asarray(inputs.per_sample(inputs.class_label), jnp.int32)
    return dict(context=pipe.encode_class(labels),
                uncond_context=pipe.encode_class(pipe.unconditional_class_labels(len(labels))), guided=True)


def layout_to_image(pipe, inputs: TaskInputs) -> dict:
    """The boxes as layout tokens through the BERT embedder (unguided, as the reference)."""
    if inputs.layout is None:
        raise ValueError("a layout-to-image model needs layout= (a list of boxes, see ldm_jax.layout)")
    return dict(context=pipe.encode_text(inputs.batched(_layout_tokens(pipe.traits, inputs.layout)[None])))


def unet_class_labels(pipe, inputs: TaskInputs) -> dict:
    """Labels for a UNet that embeds classes itself (num_classes, `y`)."""
    if inputs.class_label is None:
        raise ValueError("this UNet embeds class labels itself: pass class_label=")
    return dict(class_labels=jnp.asarray(inputs.per_sample(inputs.class_label), jnp.int32))


def _layout_tokens(traits: ModelTraits, layout) -> np.ndarray:
    if isinstance(layout, str) or hasattr(layout, "__fspath__"):
        layout = layout_codes.read_layout(layout)
    length = int(traits.cond_params.get("max_seq_len", 92))
    return layout_codes.layout_tokens(layout, n_tokens=int(traits.cond_params.get("vocab_size", 8192)),
                                      max_objects=layout_codes.max_objects_for(length))


# -- image tasks ------------------------------------------------------------------------------------

def semantic_synthesis(pipe, inputs: TaskInputs) -> dict:
    """The label map, one-hot and through the SpatialRescaler, as concat channels."""
    if inputs.segmentation is None:
        raise ValueError("a semantic synthesis model needs segmentation= (a label map)")
    onehot = image_io.segmentation_to_onehot(inputs.segmentation, int(pipe.traits.cond_params["in_channels"]),
                                             inputs.height, inputs.width)
    return dict(concat=inputs.batched(task_inputs.semantic_concat(pipe, onehot, *inputs.latent_size)))


def super_resolution(pipe, inputs: TaskInputs) -> dict:
    """The low-resolution image at latent size as concat channels (LDM BSR)."""
    if inputs.low_res is None:
        raise ValueError("a super-resolution model needs low_res= (or image=), the low-resolution image")
    small = image_io.image_to_array(inputs.low_res, *inputs.latent_size)
    return dict(concat=inputs.batched(task_inputs.super_resolution_concat(small, *inputs.latent_size)))


def concat_inpainting(pipe, inputs: TaskInputs) -> dict:
    """The masked image's encoding and the mask as concat channels (LDM or SD inpainting)."""
    if inputs.image is None or inputs.mask is None:
        raise ValueError("an inpainting model needs image= and mask= (white = generate)")
    pixels = image_io.image_to_array(inputs.image, inputs.height, inputs.width)
    pixel_mask = image_io.mask_to_array(inputs.mask, inputs.height, inputs.width)
    if pipe.traits.is_sd_inpainting:
        return dict(concat=inputs.batched(task_inputs.sd_inpainting_concat(pipe, pixels, pixel_mask)))
    return dict(concat=inputs.batched(task_inputs.ldm_inpainting_concat(pipe, pixels, pixel_mask)),
                pixel_image=pixels, pixel_mask=pixel_mask)   # the reference inpaint.py pastes them back


def image_to_image(pipe, inputs: TaskInputs) -> dict:
    """The image's latents re-noised to `strength`; with a mask, the known latents blended in at every step."""
    pixels = image_io.image_to_array(inputs.image, inputs.height, inputs.width)
    init_latents = inputs.batched(pipe.encode(jnp.asarray(pixels)))
    if inputs.mask is None:
        strength = DEFAULT_IMG2IMG_STRENGTH if inputs.strength is None else inputs.strength
        return dict(init_latents=init_latents, strength=float(strength))
    small = image_io.mask_to_latent(image_io.mask_to_array(inputs.mask, inputs.height, inputs.width),
                                    *inputs.latent_size)
    return dict(init_latents=init_latents, mask=inputs.batched(small),
                strength=1.0 if inputs.strength is None else float(inputs.strength))


def conditioning_task(traits: ModelTraits) -> Callable | None:
    """The task that conditions this model, if any."""
    if traits.is_text:
        return text_to_image
    if traits.is_class_conditional:
        return class_conditional
    if traits.is_layout:
        return layout_to_image
    if traits.num_classes is not None:
        return unet_class_labels
    return None


def image_task(traits: ModelTraits, inputs: TaskInputs) -> Callable | None:
    """The task that turns the model's concat channels, or the given image, into sampler inputs."""
    if traits.is_semantic:
        return semantic_synthesis
    if traits.is_super_resolution:
        return super_resolution
    if traits.is_ldm_inpainting or traits.is_sd_inpainting:
        return concat_inpainting
    if traits.concat_channels:
        raise ValueError(f"no task here builds the {traits.concat_channels} concat channels of this model "
                         f"(conditioning_key {traits.conditioning_key!r}, cond stage {traits.cond_kind!r})")
    if inputs.image is not None:
        return image_to_image
    if inputs.mask is not None:
        raise ValueError("mask= needs image= (the image to inpaint)")
    return None


def prepare(pipe, **user_inputs) -> SamplerInputs:
    """The sampler inputs of the task the model and the user's inputs imply (see `TaskInputs.sized`
    for the keywords: prompt, negative_prompt, class_label, image, mask, low_res, segmentation,
    layout, height, width, batch_size, strength, tokenizer)."""
    traits = pipe.traits
    inputs = TaskInputs.sized(traits, **user_inputs)
    sampler_inputs = SamplerInputs(latent_shape=(inputs.batch_size, *inputs.latent_size, traits.latent_channels))
    for task in (conditioning_task(traits), image_task(traits, inputs)):
        if task is not None:
            sampler_inputs = dataclasses.replace(sampler_inputs, **task(pipe, inputs))
    task_inputs.check_concat(traits, sampler_inputs.concat)
    return sampler_inputs
