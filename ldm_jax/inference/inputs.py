"""A task's inputs: what the user gave, sized (`TaskInputs`), its tokenizer and its concat channels.

`pipe.traits` (`ldm_jax.ldm.ModelTraits`) says which conditioning the UNet takes, where it comes
from, the latent channels and the first-stage factor; `TaskInputs.sized` fixes the batch and the
pixel size from the inputs and the traits; `text_tokenizer` picks the tokenizer of the model's
text encoder. The `*_concat` functions build the extra UNet input channels of the concat models,
in the reference's channel order (after the noisy latent):

| model | concat (after the noisy latent x) | mask convention |
|---|---|---|
| LDM inpainting (`inpainting_big`, concat, cond stage = first stage) | [E(masked image), mask] | mask in {-1, 1}, masked pixels black (-1) |
| SD inpainting (hybrid, in = 2C + 1) | [mask, scale * E(masked image)] | mask in {0, 1}, masked pixels grey (0) |
| LDM BSR super-resolution (concat, identity cond stage) | [low-res image in [-1, 1] at latent size] | |
| semantic synthesis (concat, SpatialRescaler) | [SpatialRescaler(one-hot map)] | |

(`latent-diffusion/scripts/inpaint.py`: `c = cond_stage_model.encode(masked_image); cc = interpolate(mask,
size=c.shape[-2:]); c = cat((c, cc))` with mask and masked image mapped by x*2-1; Stability
`LatentInpaintDiffusion`: `concat_keys = ("mask", "masked_image")`, mask nearest-resized, masked image
through `get_first_stage_encoding`, and `DiffusionWrapper` puts `cat([x] + c_concat)`.)
"""
import dataclasses
from typing import Any

import jax.numpy as jnp
import numpy as np

from ldm_jax import images as image_io
from ldm_jax.ldm import ModelTraits
from ldm_jax.models import tokenizers


@dataclasses.dataclass(frozen=True)
class TaskInputs:
    """The user's inputs of one call, with the batch and pixel size they imply (see `sized`)."""
    batch_size: int
    height: int
    width: int
    factor: int                 # first-stage downsampling: latents are (height / factor, width / factor)
    prompt: Any = None
    negative_prompt: Any = ""
    class_label: Any = None
    image: Any = None
    mask: Any = None            # white = generate
    low_res: Any = None
    segmentation: Any = None
    layout: Any = None
    strength: float | None = None
    tokenizer: Any = None

    @property
    def latent_size(self) -> tuple[int, int]:
        return self.height // self.factor, self.width // self.factor

    @classmethod
    def sized(cls, traits: ModelTraits, *, height=None, width=None, batch_size=None, **inputs) -> "TaskInputs":
        """Fills in the batch (the number of prompts or labels, else 1) and the pixel size (given, else
        the size of the image, low-res image or map, else the trained size), checked against the UNet."""
        if traits.is_super_resolution and inputs.get("low_res") is None:
            inputs["low_res"], inputs["image"] = inputs.get("image"), None   # image= serves as low_res
        scale, sized_by = (traits.factor, inputs["low_res"]) if inputs.get("low_res") is not None else (1, None)
        sized_by = next((x for x in (sized_by, inputs.get("image"), inputs.get("segmentation")) if x is not None),
                        None)
        if (height is None or width is None) and sized_by is not None:
            h, w = _pixel_size(sized_by)
            height, width = image_io.round_down_to_multiple(h * scale, w * scale, traits.pixel_multiple)
        side = traits.latent_size * traits.factor
        height, width = int(height or side), int(width or side)
        multiple = traits.pixel_multiple
        if height % multiple or width % multiple:
            raise ValueError(f"height and width must be multiples of {multiple} (first-stage factor "
                             f"{traits.factor} x 2^{traits.unet_levels - 1} UNet levels), got {height}x{width}")
        if batch_size is None:
            many = [x for x in (inputs.get("prompt"), inputs.get("class_label")) if isinstance(x, (list, tuple))]
            batch_size = len(many[0]) if many else 1
        return cls(batch_size=int(batch_size), height=height, width=width, factor=traits.factor, **inputs)

    def per_sample(self, value) -> list:
        """`value` (one, or one per sample) as a list of batch_size items."""
        values = list(value) if isinstance(value, (list, tuple)) else [value]
        if len(values) == 1:
            values = values * self.batch_size
        if len(values) != self.batch_size:
            raise ValueError(f"got {len(values)} inputs for batch_size {self.batch_size}")
        return values

    def batched(self, array) -> jnp.ndarray:
        """`array` with a leading batch of 1 or batch_size, repeated to batch_size."""
        array = jnp.asarray(array)
        if array.shape[0] == self.batch_size:
            return array
        if array.shape[0] != 1:
            raise ValueError(f"an input of batch {array.shape[0]} cannot serve batch_size {self.batch_size}")
        return jnp.repeat(array, self.batch_size, axis=0)


def _pixel_size(image) -> tuple[int, int]:
    """(height, width) of an image input: a path, a PIL image, an (H, W[, C]) or (N, H, W, C) array."""
    if isinstance(image, np.ndarray):
        return tuple(image.shape[-3:-1]) if image.ndim >= 3 else tuple(image.shape)
    pil = image_io.load_image(image, "L")
    return pil.height, pil.width


def text_tokenizer(traits: ModelTraits, tokenizer):
    """A tokenizer for the model's text encoder: `tokenizer` itself if callable, else built from its files."""
    if tokenizer is None:
        raise ValueError(f"a prompt for a {traits.cond_kind} text encoder needs tokenizer= (a tokenizer, or the "
                         "folder of its vocabulary files: vocab.json + merges.txt or bpe_simple_vocab_16e6.txt.gz "
                         "for CLIP / OpenCLIP, vocab.txt for BERT)")
    if callable(tokenizer):
        return tokenizer
    if traits.cond_kind == "clip_text":
        return tokenizers.clip_tokenizer(tokenizer, int(traits.cond_params.get("max_position_embeddings", 77)))
    if traits.cond_kind == "open_clip_text":
        return tokenizers.open_clip_tokenizer(tokenizer, int(traits.cond_params.get("context_length", 77)))
    return tokenizers.bert_tokenizer(tokenizer, int(traits.cond_params.get("max_seq_len", 77)))


def first_stage_encoding(pipe, images) -> jnp.ndarray:
    """The unscaled first-stage encoding (what the reference's `cond_stage_model.encode` returns)."""
    return jnp.asarray(pipe.encode(jnp.asarray(images))) / pipe.traits.scale_factor


def ldm_inpainting_concat(pipe, image: np.ndarray, mask: np.ndarray) -> jnp.ndarray:
    """[E(masked image), mask] for the LDM inpainting model; image (N,H,W,3) in [-1,1], mask (N,H,W,1) {0,1}.

    As `scripts/inpaint.py`: masked_image = (1 - mask) * image01 and mask are mapped by x*2-1, so masked
    pixels are black and the mask is -1/1; the mask reaches latent size by nearest sampling.
    """
    image01 = (image + 1.0) / 2.0
    masked = ((1.0 - mask) * image01) * 2.0 - 1.0
    encoded = first_stage_encoding(pipe, masked)
    small = image_io.mask_to_latent(mask * 2.0 - 1.0, encoded.shape[1], encoded.shape[2])
    return jnp.concatenate([encoded, jnp.asarray(small)], axis=-1)


def sd_inpainting_concat(pipe, image: np.ndarray, mask: np.ndarray) -> jnp.ndarray:
    """[mask, scale * E(masked image)] for SD inpainting (Stability `LatentInpaintDiffusion`).

    masked_image = image * (mask < 0.5) (masked pixels grey), encoded with the scale factor; the {0,1}
    mask is resized to the latent by nearest sampling.
    """
    masked = image * (mask < 0.5)
    encoded = jnp.asarray(pipe.encode(jnp.asarray(masked, jnp.float32)))
    small = image_io.mask_to_latent(mask, encoded.shape[1], encoded.shape[2])
    return jnp.concatenate([jnp.asarray(small), encoded], axis=-1)


def super_resolution_concat(low_res: np.ndarray, latent_height: int, latent_width: int) -> jnp.ndarray:
    """The low-resolution image (N, h, w, 3) in [-1, 1] at latent size (LDM BSR: identity cond stage)."""
    if low_res.shape[1:3] != (latent_height, latent_width):
        raise ValueError(f"the low-resolution image is {low_res.shape[1:3]}, the latent {latent_height}x"
                         f"{latent_width}: they must match (the condition is concatenated as is)")
    return jnp.asarray(low_res, jnp.float32)


def semantic_concat(pipe, onehot: np.ndarray, latent_height: int, latent_width: int) -> jnp.ndarray:
    """SpatialRescaler(one-hot segmentation) — the concat input of the semantic synthesis models."""
    rescaled = jnp.asarray(pipe.encode_condition(jnp.asarray(onehot, jnp.float32)))
    if rescaled.shape[1:3] != (latent_height, latent_width):
        raise ValueError(f"the rescaled segmentation is {rescaled.shape[1:3]} but the latent is "
                         f"{latent_height}x{latent_width}: give a map of the image size")
    return rescaled


def check_concat(traits: ModelTraits, concat) -> None:
    """The concat input must supply exactly the UNet's extra input channels."""
    have = 0 if concat is None else int(concat.shape[-1])
    if have != traits.concat_channels:
        raise ValueError(f"the UNet takes {traits.unet_in_channels} input channels = {traits.latent_channels} "
                         f"latent + {traits.concat_channels} concat, but the task supplies {have} concat channels")
