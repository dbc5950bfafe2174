"""What each LDM task feeds the sampler, given a pipeline: the model's kind, sizes and conditioning.

`ModelTraits.of(pipe)` reads the config once: which conditioning the UNet takes
(`conditioning_key`), where it comes from (`cond_stage_source`), the cond-stage kind, the latent
channels and the first-stage downsampling factor. The `*_concat` functions build the extra UNet
input channels of the concat models, in the reference's channel order (after the noisy latent):

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

import jax.numpy as jnp
import numpy as np

from ldm_jax import images as image_io
from ldm_jax.models import components, tokenizers

TEXT_KINDS = ("clip_text", "open_clip_text", "bert_embedder")


@dataclasses.dataclass(frozen=True)
class ModelTraits:
    """The facts about a loaded model that decide how its inputs are built."""
    conditioning_key: str         # none / crossattn / concat / hybrid / adm
    cond_stage_source: str        # none / model / first_stage / identity
    cond_kind: str | None         # the cond_stage component's kind when the source is "model"
    cond_params: dict
    latent_channels: int          # UNet output channels = the latent's
    unet_in_channels: int
    unet_levels: int              # len(channel_mult): latents must divide by 2**(levels-1)
    num_classes: int | None       # the UNet's own class embedding (y), if any
    factor: int                   # first-stage downsampling factor f
    latent_size: int              # the trained latent side (diffusion.image_size)
    scale_factor: float

    @classmethod
    def of(cls, pipe) -> "ModelTraits":
        model = pipe.config.model
        diffusion = model.diffusion
        unet = model.unet.params
        cond = model.get("cond_stage")
        return cls(conditioning_key=diffusion.conditioning_key, cond_stage_source=diffusion.cond_stage_source,
                   cond_kind=None if cond is None else cond.kind,
                   cond_params={} if cond is None else _plain(cond.params),
                   latent_channels=int(unet.out_channels), unet_in_channels=int(unet.in_channels),
                   unet_levels=len(unet.channel_mult), num_classes=unet.get("num_classes"),
                   factor=_downsampling_factor(model.first_stage), latent_size=int(diffusion.image_size),
                   scale_factor=float(diffusion.scale_factor))

    @property
    def pixel_multiple(self) -> int:
        """Image sides must be multiples of this for the latent to pass every UNet level."""
        return self.factor * 2 ** (self.unet_levels - 1)

    @property
    def concat_channels(self) -> int:
        """How many channels the concat conditioning must supply."""
        if self.conditioning_key not in ("concat", "hybrid"):
            return 0
        return self.unet_in_channels - self.latent_channels

    @property
    def is_text(self) -> bool:
        return (self.cond_stage_source == "model" and self.cond_kind in TEXT_KINDS
                and not (self.cond_kind == "bert_embedder" and not self.cond_params.get("use_tokenizer", True)))

    @property
    def is_layout(self) -> bool:
        return self.cond_kind == "bert_embedder" and not self.cond_params.get("use_tokenizer", True)

    @property
    def is_class_conditional(self) -> bool:
        return self.cond_kind == "class_embedder"

    @property
    def is_semantic(self) -> bool:
        return self.cond_kind == "spatial_rescaler" and self.conditioning_key in ("concat", "hybrid")

    @property
    def is_super_resolution(self) -> bool:
        return self.cond_stage_source == "identity" and self.conditioning_key in ("concat", "hybrid")

    @property
    def is_ldm_inpainting(self) -> bool:
        return self.cond_stage_source == "first_stage" and self.conditioning_key == "concat"

    @property
    def is_sd_inpainting(self) -> bool:
        return self.conditioning_key == "hybrid" and self.unet_in_channels == 2 * self.latent_channels + 1


def _downsampling_factor(first_stage) -> int:
    """f of the first stage: 2 ** (levels - 1) of its ddconfig; 1 for the identity (pixel space)."""
    if first_stage.kind == "identity":
        return 1
    return 2 ** (len(first_stage.params.ddconfig.ch_mult) - 1)


def _plain(value):
    return value.to_dict() if hasattr(value, "to_dict") else dict(value)


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


def apply_cond_stage(pipe, inputs):
    """The cond stage model on `inputs` (the pipeline's own `encode_condition` when it has one)."""
    if hasattr(pipe, "encode_condition"):
        return pipe.encode_condition(inputs)
    variables = _section_variables(pipe, "cond_stage")
    module = components.build(pipe.config.model.cond_stage.to_dict())
    return module.apply(variables, jnp.asarray(inputs))


def _section_variables(pipe, section: str):
    for name in ("variables", "params"):
        holder = getattr(pipe, name, None)
        if isinstance(holder, dict) and section in holder:
            return holder[section]
    raise AttributeError(f"{type(pipe).__name__} exposes neither encode_condition nor variables[{section!r}]")


def first_stage_encoding(pipe, images) -> jnp.ndarray:
    """The unscaled first-stage encoding (what the reference's `cond_stage_model.encode` returns)."""
    traits = ModelTraits.of(pipe)
    return jnp.asarray(pipe.encode(jnp.asarray(images))) / traits.scale_factor


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
    rescaled = jnp.asarray(apply_cond_stage(pipe, jnp.asarray(onehot, jnp.float32)))
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
