"""One latent diffusion model as its config describes it: the modules, the schedule, the UNet's
conditioning wiring and the first-stage encode / decode. Sampling (`ldm_jax.inference`), training
(`training.ldm_stage`), the latent cache and the evaluation all build on it.

    ldm = LatentDiffusion(config)             # config.model: first_stage, unet, cond_stage?, diffusion
    z = ldm.first_stage.encoding(variables["first_stage"], images)   # unscaled (KL: the posterior mode)
    eps = ldm.apply_unet(variables["unet"], z_t, t, {"context": context})
    images = ldm.first_stage.decode(variables["first_stage"], z)
"""
import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from ldm_jax.config_checks import to_plain_dict
from ldm_jax.diffusion.schedule import DiffusionSchedule
from ldm_jax.models import components
from ldm_jax.models.distributions import DiagonalGaussian

TEXT_KINDS = ("clip_text", "open_clip_text", "bert_embedder")
# The UNet inputs a conditioning dict may hold (the reference DiffusionWrapper's c_concat, c_crossattn, y).
CONDITIONING_KEYS = ("concat", "context", "y")


@dataclasses.dataclass(frozen=True)
class ModelTraits:
    """The facts about a model that decide how its inputs are built, read once from its config."""
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
    def from_config(cls, config: ml_collections.ConfigDict) -> "ModelTraits":
        model = config.model
        diffusion = model.diffusion
        unet = model.unet.params
        cond = model.get("cond_stage")
        return cls(conditioning_key=diffusion.conditioning_key, cond_stage_source=diffusion.cond_stage_source,
                   cond_kind=None if cond is None else cond.kind,
                   cond_params={} if cond is None else to_plain_dict(cond.params),
                   latent_channels=int(unet.out_channels), unet_in_channels=int(unet.in_channels),
                   unet_levels=len(unet.channel_mult), num_classes=unet.get("num_classes"),
                   factor=downsampling_factor(model.first_stage), latent_size=int(diffusion.image_size),
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
    def has_cond_stage(self) -> bool:
        return self.cond_stage_source == "model"

    @property
    def is_text(self) -> bool:
        return self.has_cond_stage and self.cond_kind in TEXT_KINDS and not self.is_layout

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


def downsampling_factor(first_stage) -> int:
    """f of a first-stage component: 2 ** (levels - 1) of its ddconfig; 1 for the identity (pixel space)."""
    if first_stage.kind == "identity":
        return 1
    return 2 ** (len(first_stage.params.ddconfig.ch_mult) - 1)


class FirstStage:
    """A first-stage module (KL, VQ or identity) and the encodings an LDM takes from it."""

    def __init__(self, module: nn.Module):
        self.module = module

    @classmethod
    def from_config(cls, component, **module_kwargs) -> "FirstStage":
        return cls(components.build(to_plain_dict(component), **module_kwargs))

    def posterior(self, variables, images):
        """The encoder's output: a KL `DiagonalGaussian`, VQ's pre-quantisation h, or the images (identity)."""
        return self.module.apply(variables, images, method="encode")

    def encoding(self, variables, images, rng: jax.Array | None = None) -> jax.Array:
        """The unscaled latent of images, float32: a KL posterior sample with `rng` (the reference
        `get_first_stage_encoding`), else its mode; VQ's h; the images themselves for the identity."""
        posterior = self.posterior(variables, images)
        if not isinstance(posterior, DiagonalGaussian):
            return posterior.astype(jnp.float32)
        if rng is None:
            return posterior.mode()
        return posterior.sample_from_noise(jax.random.normal(rng, posterior.mean.shape, jnp.float32))

    def decode(self, variables, z) -> jax.Array:
        """Unscaled latents -> the raw decoder output (VQ quantises first)."""
        return self.module.apply(variables, z, method="decode")


class LatentDiffusion:
    """The first stage, UNet, optional cond stage and schedule of one LatentDiffusion config.

    `module_kwargs` (dtype, param_dtype) reach every module; `remat` the UNet's blocks.
    """

    def __init__(self, config: ml_collections.ConfigDict, *, remat: bool = False, **module_kwargs):
        model = config.model
        for section in ("first_stage", "unet", "diffusion"):
            if section not in model:
                raise ValueError(f"config.model has no {section!r}: not a latent diffusion config "
                                 f"(sections: {sorted(model)})")
        self.config = config
        self.diffusion = model.diffusion
        self.parameterization = self.diffusion.parameterization
        self.traits = ModelTraits.from_config(config)
        self.first_stage = FirstStage.from_config(model.first_stage, **module_kwargs)
        self.unet = components.build(model.unet.to_dict(), remat=remat, **module_kwargs)
        self.cond_stage = (components.build(model.cond_stage.to_dict(), **module_kwargs)
                           if "cond_stage" in model else None)
        self.schedule = DiffusionSchedule.from_config(self.diffusion)

    @property
    def scale_factor(self) -> float:
        return float(self.diffusion.scale_factor)

    def init_variables(self, rng: jax.Array) -> dict:
        """Random variables {"first_stage", "unet", "cond_stage"?}, each {"params": ...} as checkpoints load."""
        model = self.config.model
        modules = {"first_stage": (model.first_stage.kind, self.first_stage.module), "unet": ("unet", self.unet)}
        if self.cond_stage is not None:
            modules["cond_stage"] = (model.cond_stage.kind, self.cond_stage)
        keys = dict(zip(("first_stage", "unet", "cond_stage"), jax.random.split(rng, 3)))
        # A module without parameters (the identity first stage) inits to {}: give it the {"params": ...} form.
        return {name: {"params": {}, **module.init(keys[name], *components.example_inputs(kind, module))}
                for name, (kind, module) in modules.items()}

    def apply_unet(self, variables, x, t, cond=None, dropout_rng: jax.Array | None = None) -> jax.Array:
        """The reference DiffusionWrapper: `cond` {"concat", "context", "y"} concatenated along channels,
        attended to and embedded as the class. With `dropout_rng` the UNet's dropout is on (training)."""
        cond = cond or {}
        unknown = set(cond) - set(CONDITIONING_KEYS)
        if unknown:
            raise ValueError(f"unknown conditioning entries {sorted(unknown)}; expected {', '.join(CONDITIONING_KEYS)}")
        if cond.get("concat") is not None:
            x = jnp.concatenate([x, cond["concat"].astype(x.dtype)], axis=-1)
        train_dropout = dropout_rng is not None and self.unet.dropout > 0
        return self.unet.apply(variables, x, t, context=cond.get("context"), y=cond.get("y"),
                               deterministic=not train_dropout,
                               rngs={"dropout": dropout_rng} if train_dropout else None)

    def apply_cond_stage(self, variables, inputs) -> jax.Array:
        """The cond stage (text encoder, class embedder, spatial rescaler) on its inputs."""
        if self.cond_stage is None:
            raise ValueError(f"this model has no cond stage (cond_stage_source "
                             f"{self.traits.cond_stage_source!r})")
        return self.cond_stage.apply(variables, inputs)

    def encode(self, variables, images, scale_factor=None) -> jax.Array:
        """Images (N, H, W, 3) in [-1, 1] -> the scaled latents the UNet diffuses (KL: the posterior mode)."""
        scale = self.scale_factor if scale_factor is None else scale_factor
        return scale * self.first_stage.encoding(variables, images)

    def decode(self, variables, latents, scale_factor=None) -> jax.Array:
        """Scaled latents -> the raw decoder output: decode(latents / scale_factor)."""
        scale = self.scale_factor if scale_factor is None else scale_factor
        return self.first_stage.decode(variables, latents / scale)
