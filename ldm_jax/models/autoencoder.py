"""The first stages of LDM: `AutoencoderKL`, `VQModel` and `IdentityFirstStage` (CompVis latent-diffusion).

Images and latents are NHWC. `VQModel` follows the reference `VQModelInterface`, the variant
LDMs use: `encode` stops before the codebook and `decode` quantises first, so the diffusion
model works on the continuous pre-quantisation latent. `IdentityFirstStage` has no parameters:
the "latent" is the image, which makes an LDM config a pixel-space diffusion model.
"""
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from ldm_jax.models import layers
from ldm_jax.models.distributions import DiagonalGaussian
from ldm_jax.models.first_stage import DDConfig, Decoder, Encoder
from ldm_jax.models.quantizer import QuantizerInfo, VectorQuantizer, load_remap

Dtype = Any

# Reference params that only matter for training, logging or the reference's own loading.
_TRAINING_ONLY = frozenset({"lossconfig", "ckpt_path", "ignore_keys", "image_key", "colorize_nlabels",
                            "monitor"})
_KL_PARAMS = frozenset({"ddconfig", "embed_dim", "ema_decay", "learn_logvar"}) | _TRAINING_ONLY
_VQ_PARAMS = frozenset({"ddconfig", "n_embed", "embed_dim", "remap", "sane_index_shape", "use_ema",
                        "batch_resize_range", "scheduler_config", "lr_g_factor"}) | _TRAINING_ONLY
# `vq_interface` only changes the return of the reference's `quantize`, which no LDM calls on it.
_IDENTITY_PARAMS = frozenset({"vq_interface"})
_MODULE_OPTIONS = frozenset({"remat", "dtype", "param_dtype"})


class AutoencoderKL(nn.Module):
    """Encoder -> 1x1 quant_conv -> diagonal Gaussian posterior; post_quant_conv -> Decoder."""
    ddconfig: DDConfig
    embed_dim: int
    remat: bool = False
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    def setup(self):
        if not self.ddconfig.double_z:
            raise ValueError("AutoencoderKL needs ddconfig.double_z=True (the encoder predicts mean and logvar)")
        kw = dict(remat=self.remat, dtype=self.dtype, param_dtype=self.param_dtype)
        self.encoder = self.ddconfig.encoder(**kw)
        self.decoder = self.ddconfig.decoder(**kw)
        self.quant_conv = _pointwise(2 * self.embed_dim, self)
        self.post_quant_conv = _pointwise(self.ddconfig.z_channels, self)

    def encode(self, x: jax.Array, deterministic: bool = True) -> DiagonalGaussian:
        """Image (N, H, W, C) -> posterior over latents (N, H/f, W/f, embed_dim)."""
        moments = self.quant_conv(self.encoder(x, deterministic))
        return DiagonalGaussian.from_moments(moments.astype(jnp.float32))

    def decode(self, z: jax.Array, deterministic: bool = True) -> jax.Array:
        """Latent (N, h, w, embed_dim) -> image (N, h*f, w*f, out_ch)."""
        return self.decoder(self.post_quant_conv(z), deterministic)

    def __call__(self, x: jax.Array, sample_posterior: bool = False, rng: jax.Array | None = None,
                 deterministic: bool = True) -> tuple[jax.Array, DiagonalGaussian]:
        """(reconstruction, posterior); decodes a posterior sample (needs `rng`) or its mode.

        Unlike the reference (which samples by default) the mode is the default, so that a call
        without an rng is deterministic.
        """
        if sample_posterior and rng is None:
            raise ValueError("sample_posterior=True needs an rng")
        posterior = self.encode(x, deterministic)
        z = posterior.sample(rng) if sample_posterior else posterior.mode()
        return self.decode(z, deterministic), posterior


class VQModel(nn.Module):
    """Encoder -> quant_conv -> vector quantiser (`quantize`) -> post_quant_conv -> Decoder."""
    ddconfig: DDConfig
    n_embed: int
    embed_dim: int
    beta: float = 0.25
    remap: tuple[int, ...] | None = None
    unknown_index: str | int = "random"
    sane_index_shape: bool = False
    legacy: bool = True
    remat: bool = False
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    def setup(self):
        kw = dict(remat=self.remat, dtype=self.dtype, param_dtype=self.param_dtype)
        self.encoder = self.ddconfig.encoder(**kw)
        self.decoder = self.ddconfig.decoder(**kw)
        # Named "quantize" like the reference attribute; the attribute name is free for the method.
        self.quantizer = VectorQuantizer(self.n_embed, self.embed_dim, beta=self.beta, remap=self.remap,
                                         unknown_index=self.unknown_index,
                                         sane_index_shape=self.sane_index_shape, legacy=self.legacy,
                                         dtype=self.dtype, param_dtype=self.param_dtype, name="quantize")
        self.quant_conv = _pointwise(self.embed_dim, self)
        self.post_quant_conv = _pointwise(self.ddconfig.z_channels, self)

    def encode(self, x: jax.Array, deterministic: bool = True) -> jax.Array:
        """Image -> pre-quantisation latent h (N, H/f, W/f, embed_dim): what an LDM diffuses in."""
        return self.quant_conv(self.encoder(x, deterministic))

    def quantize(self, h: jax.Array, rng: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
        """(z_q, indices shaped (N, h, w)); `rng` only for remap with unknown_index="random"."""
        z_q, _, info = self.quantizer(h, rng)
        return z_q, info.indices.reshape(h.shape[:-1])

    def quantize_with_info(self, h: jax.Array, rng: jax.Array | None = None
                           ) -> tuple[jax.Array, jax.Array, QuantizerInfo]:
        """The quantiser's full output: (z_q, codebook loss, QuantizerInfo(perplexity, indices))."""
        return self.quantizer(h, rng)

    def decode(self, h: jax.Array, force_not_quantize: bool = False, deterministic: bool = True) -> jax.Array:
        """Latent -> image, snapping h to the codebook first unless `force_not_quantize`."""
        z_q = h if force_not_quantize else self.quantizer.straight_through(h)
        return self.decoder(self.post_quant_conv(z_q), deterministic)

    def decode_code(self, indices: jax.Array, deterministic: bool = True) -> jax.Array:
        """Code indices (N, h, w) (remapped ones if `remap`) -> image."""
        z_q = self.quantizer.get_codebook_entry(indices, (*indices.shape, self.embed_dim))
        return self.decoder(self.post_quant_conv(z_q), deterministic)

    def __call__(self, x: jax.Array, rng: jax.Array | None = None, deterministic: bool = True
                 ) -> tuple[jax.Array, jax.Array, QuantizerInfo]:
        """(reconstruction, codebook loss, QuantizerInfo) as the reference VQModel.forward."""
        z_q, emb_loss, info = self.quantizer(self.encode(x, deterministic), rng)
        return self.decoder(self.post_quant_conv(z_q), deterministic), emb_loss, info


class IdentityFirstStage(nn.Module):
    """The reference `IdentityFirstStage`: encode(x) = x, decode(z) = z, no parameters (pixel-space diffusion)."""

    def encode(self, x: jax.Array, deterministic: bool = True) -> jax.Array:
        """The image itself is the latent (the factor f is 1)."""
        return x

    def decode(self, z: jax.Array, deterministic: bool = True) -> jax.Array:
        """The latent itself is the image."""
        return z

    def __call__(self, x: jax.Array, deterministic: bool = True) -> jax.Array:
        return x


def _pointwise(features: int, parent: nn.Module) -> nn.Conv:
    return layers.conv(features, 1, padding=0, dtype=parent.dtype, param_dtype=parent.param_dtype)


def _check_params(params: Mapping, allowed: frozenset, kind: str) -> None:
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise ValueError(f"unknown {kind} param(s) {unknown}; expected a subset of {sorted(allowed)}")
    for required in ("ddconfig", "embed_dim"):
        if required not in params:
            raise ValueError(f"{kind} params lack {required!r}")


def autoencoder_kl_from_reference(params: Mapping, **kwargs) -> AutoencoderKL:
    """AutoencoderKL from the reference `model.params` mapping; `kwargs` sets remat / dtype / param_dtype."""
    _check_params(params, _KL_PARAMS, "AutoencoderKL")
    return AutoencoderKL(DDConfig.from_reference(params["ddconfig"]), int(params["embed_dim"]), **kwargs)


def vq_from_reference(params: Mapping, **kwargs) -> VQModel:
    """VQModel from the reference VQModel / VQModelInterface `model.params` (remap: path to a .npy).

    The reference fixes beta=0.25 and legacy=True; `kwargs` sets those and remat / dtype / param_dtype.
    """
    _check_params(params, _VQ_PARAMS, "VQModel")
    if "n_embed" not in params:
        raise ValueError("VQModel params lack 'n_embed'")
    return VQModel(DDConfig.from_reference(params["ddconfig"]), int(params["n_embed"]), int(params["embed_dim"]),
                   remap=load_remap(params.get("remap")),
                   sane_index_shape=bool(params.get("sane_index_shape", False)), **kwargs)


def identity_first_stage_from_reference(params: Mapping, **kwargs) -> IdentityFirstStage:
    """IdentityFirstStage from the reference params (none, or `vq_interface`, which changes nothing here).

    `kwargs` may hold the options every builder takes (remat / dtype / param_dtype): with nothing to
    compute they change nothing.
    """
    unknown = sorted(set(params) - _IDENTITY_PARAMS)
    if unknown:
        raise ValueError(f"unknown IdentityFirstStage param(s) {unknown}; expected a subset of "
                         f"{sorted(_IDENTITY_PARAMS)}")
    unknown = sorted(set(kwargs) - _MODULE_OPTIONS)
    if unknown:
        raise TypeError(f"unknown IdentityFirstStage option(s) {unknown}; expected a subset of "
                        f"{sorted(_MODULE_OPTIONS)}")
    return IdentityFirstStage()


def example_inputs(module: nn.Module) -> tuple:
    """Small inputs (batch 1, latent 2x2) whose `module.init` creates every parameter."""
    if isinstance(module, (AutoencoderKL, VQModel)):
        config = module.ddconfig
        size = 2 * config.downsampling_factor
        x = jnp.zeros((1, size, size, config.in_channels), jnp.float32)
        if isinstance(module, VQModel) and module.remap is not None and module.unknown_index == "random":
            return x, jax.random.key(0)
        return (x,)
    if isinstance(module, IdentityFirstStage):
        return (jnp.zeros((1, 2, 2, 3), jnp.float32),)  # any shape: there is nothing to create
    if isinstance(module, Encoder):
        size = 2 ** len(module.ch_mult)
        return (jnp.zeros((1, size, size, module.in_channels), jnp.float32),)
    if isinstance(module, Decoder):
        return (jnp.zeros((1, 2, 2, module.z_channels), jnp.float32),)
    raise TypeError(f"no example inputs for {type(module).__name__}")
