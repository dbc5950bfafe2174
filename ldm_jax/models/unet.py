"""The time-conditional LDM UNet (`ldm.modules.diffusionmodules.openaimodel.UNetModel`), NHWC.

Covers the CompVis latent-diffusion / stable-diffusion UNet (SD v1, class-conditional and
concat-conditioned LDMs) and the Stability-AI SD 2 additions (`use_linear_in_transformer`,
`num_head_channels`, `disable_self_attentions`, `num_attention_blocks`, per-level
`num_res_blocks`, "continuous"/"sequential" `num_classes`). Submodules are named after the
reference attributes, so a CompVis checkpoint's `model.diffusion_model.*` tensors load by name.
"""
import dataclasses
import functools
import math
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from ldm_jax.models import layers
from ldm_jax.models.attention import attend
from ldm_jax.models.spatial_transformer import SpatialTransformer, fitting_chunk_size

Dtype = Any

# With `n_embed` the reference still builds (but never uses) the `out` head.
UNUSED_OUT_HEAD_KEYS = ("out.0.weight", "out.0.bias", "out.2.weight", "out.2.bias")


def timestep_embedding(timesteps: jax.Array, dim: int, max_period: float = 10000.0) -> jax.Array:
    """Sinusoidal embedding (N,) -> (N, dim) in float32: cos then sin, a zero column if dim is odd."""
    half = dim // 2
    # The reference's float32 order of operations: (-log(max_period) * arange) / half, then exp.
    freqs = jnp.exp(jnp.float32(-math.log(max_period)) * jnp.arange(half, dtype=jnp.float32) / half)
    args = timesteps.astype(jnp.float32)[:, None] * freqs[None]
    embedding = jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)
    if dim % 2:
        embedding = jnp.concatenate([embedding, jnp.zeros_like(embedding[:, :1])], axis=-1)
    return embedding


def upsample_nearest(x: jax.Array) -> jax.Array:
    """Nearest-neighbour 2x upsampling of NHWC (torch F.interpolate(scale_factor=2))."""
    return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


class Upsample(nn.Module):
    """Nearest 2x upsampling, then a 3x3 `conv` if `use_conv`."""
    use_conv: bool
    out_channels: int | None = None
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = upsample_nearest(x)
        if self.use_conv:
            x = layers.conv(self.out_channels or x.shape[-1], 3, padding=1, name="conv",
                            dtype=self.dtype, param_dtype=self.param_dtype)(x)
        return x


class Downsample(nn.Module):
    """2x downsampling: a stride-2 3x3 conv `op` (padding 1) if `use_conv`, else 2x2 average pooling."""
    use_conv: bool
    out_channels: int | None = None
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        out_channels = self.out_channels or x.shape[-1]
        if self.use_conv:
            return layers.conv(out_channels, 3, stride=2, padding=1, name="op",
                               dtype=self.dtype, param_dtype=self.param_dtype)(x)
        if out_channels != x.shape[-1]:
            raise ValueError(f"{self.name}: average pooling cannot change {x.shape[-1]} channels "
                             f"to {out_channels}")
        return nn.avg_pool(x, (2, 2), strides=(2, 2))


class ResBlock(nn.Module):
    """Residual block conditioned on the time embedding, optionally resampling (up/down)."""
    out_channels: int | None = None
    dropout: float = 0.0
    use_conv: bool = False
    use_scale_shift_norm: bool = False
    up: bool = False
    down: bool = False
    num_groups: int = 32
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, emb: jax.Array, deterministic: bool = True) -> jax.Array:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        channels = x.shape[-1]
        out_channels = self.out_channels or channels
        h = nn.silu(layers.group_norm(self.num_groups, 1e-5, name=layers.indexed("in_layers", 0), **kw)(x))
        if self.up:  # the parameter-free `h_upd` / `x_upd`
            h, x = upsample_nearest(h), upsample_nearest(x)
        elif self.down:
            h, x = (nn.avg_pool(t, (2, 2), strides=(2, 2)) for t in (h, x))
        h = layers.conv(out_channels, 3, padding=1, name=layers.indexed("in_layers", 2), **kw)(h)

        emb_features = 2 * out_channels if self.use_scale_shift_norm else out_channels
        emb_out = layers.dense(emb_features, name=layers.indexed("emb_layers", 1), **kw)(nn.silu(emb))
        emb_out = emb_out[:, None, None, :].astype(h.dtype)
        out_norm = layers.group_norm(self.num_groups, 1e-5, name=layers.indexed("out_layers", 0), **kw)
        if self.use_scale_shift_norm:
            scale, shift = jnp.split(emb_out, 2, axis=-1)
            h = out_norm(h) * (1 + scale) + shift
        else:
            h = out_norm(h + emb_out)
        h = nn.silu(h)
        if self.dropout > 0:
            h = nn.Dropout(self.dropout, deterministic=deterministic)(h)
        h = layers.conv(out_channels, 3, padding=1, name=layers.indexed("out_layers", 3), **kw)(h)

        if out_channels != channels:
            x = layers.conv(out_channels, 3 if self.use_conv else 1, padding=1 if self.use_conv else 0,
                            name="skip_connection", **kw)(x)
        return x + h


class AttentionBlock(nn.Module):
    """Self-attention over the H*W positions with a fused 1-d `qkv` conv (no context).

    `use_new_attention_order` picks QKVAttention (split q/k/v, then heads) over the legacy
    QKVAttentionLegacy (split heads, then q/k/v): the same weights give different outputs.
    """
    num_heads: int = 1
    num_head_channels: int = -1
    use_new_attention_order: bool = False
    query_chunk_size: int | None = None
    num_groups: int = 32
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        batch, height, width, channels = x.shape
        if self.num_head_channels == -1:
            heads = self.num_heads
        elif channels % self.num_head_channels:
            raise ValueError(f"{self.name}: {channels} channels are not a multiple of "
                             f"num_head_channels {self.num_head_channels}")
        else:
            heads = channels // self.num_head_channels
        if heads < 1 or channels % heads:
            raise ValueError(f"{self.name}: {channels} channels cannot be split into {heads} heads")
        tokens = x.reshape(batch, height * width, channels)
        h = layers.group_norm(self.num_groups, 1e-5, name="norm", **kw)(tokens)
        qkv = layers.conv(3 * channels, (1,), name="qkv", **kw)(h)
        head_dim = channels // heads
        if self.use_new_attention_order:  # channel = (q|k|v, head, c)
            q, k, v = jnp.moveaxis(qkv.reshape(batch, height * width, 3, heads, head_dim), 2, 0)
        else:  # channel = (head, q|k|v, c)
            q, k, v = jnp.moveaxis(qkv.reshape(batch, height * width, heads, 3, head_dim), 3, 0)
        # The reference scales q and k by ch**-0.25 each: the same 1/sqrt(ch) that attend applies.
        h = attend(q, k, v, query_chunk_size=fitting_chunk_size(height * width, self.query_chunk_size))
        h = layers.conv(channels, (1,), name="proj_out", **kw)(h.reshape(batch, height * width, channels))
        return (tokens + h).reshape(x.shape)


def attention_heads(channels: int, num_heads: int, num_head_channels: int, legacy: bool,
                    use_spatial_transformer: bool) -> tuple[int, int]:
    """(num_heads, dim_head) exactly as the reference UNet derives them for a block of `channels`."""
    if num_head_channels == -1:
        dim_head = channels // num_heads
    else:
        num_heads = channels // num_head_channels
        dim_head = num_head_channels
    if legacy:
        dim_head = channels // num_heads if use_spatial_transformer else num_head_channels
    return num_heads, dim_head


class UNetModel(nn.Module):
    """The LDM denoiser: `apply(variables, x, timesteps, context=None, y=None)` with x NHWC.

    Fields are the reference construction params (lists as tuples), plus `dtype` (compute),
    `param_dtype`, `remat` (rematerialise ResBlocks and attention blocks) and
    `query_chunk_size` (bound the attention memory at high resolution). Only `dims=2` exists.
    """
    image_size: int | None
    in_channels: int
    model_channels: int
    out_channels: int
    num_res_blocks: int | tuple[int, ...]
    attention_resolutions: tuple[int, ...]
    dropout: float = 0.0
    channel_mult: tuple[int, ...] = (1, 2, 4, 8)
    conv_resample: bool = True
    dims: int = 2
    num_classes: int | str | None = None
    num_heads: int = -1
    num_head_channels: int = -1
    num_heads_upsample: int = -1
    use_scale_shift_norm: bool = False
    resblock_updown: bool = False
    use_new_attention_order: bool = False
    use_spatial_transformer: bool = False
    transformer_depth: int = 1
    context_dim: int | None = None
    n_embed: int | None = None
    legacy: bool = True
    disable_self_attentions: tuple[bool, ...] | None = None
    num_attention_blocks: tuple[int, ...] | None = None
    disable_middle_self_attn: bool = False
    use_linear_in_transformer: bool = False
    adm_in_channels: int | None = None
    # Not reference params (their defaults are the reference UNet). num_groups: the reference
    # normalises 32 groups everywhere; a narrow UNet (e.g. 64 channels) trains faster with fewer,
    # wider groups. pooled_context: also add an MLP of the context's mean over its tokens to the
    # timestep embedding (as SDXL adds its pooled text embedding), so every ResBlock sees the prompt,
    # not only the cross-attention layers: global attributes (a colour, a shape) are learnt far sooner.
    num_groups: int = 32
    pooled_context: bool = False
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    remat: bool = False
    query_chunk_size: int | None = None

    def __post_init__(self):
        super().__post_init__()
        _validate(self)

    @property
    def res_blocks_per_level(self) -> tuple[int, ...]:
        if isinstance(self.num_res_blocks, int):
            return (self.num_res_blocks,) * len(self.channel_mult)
        return tuple(self.num_res_blocks)

    @nn.compact
    def __call__(self, x: jax.Array, timesteps: jax.Array, context: jax.Array | None = None,
                 y: jax.Array | None = None, *, deterministic: bool = True) -> jax.Array:
        if (y is None) != (self.num_classes is None):
            raise ValueError("UNetModel: pass y if and only if num_classes is set "
                             f"(num_classes={self.num_classes!r}, y is {'None' if y is None else 'given'})")
        if self.use_spatial_transformer and context is None:
            raise ValueError("UNetModel: use_spatial_transformer needs a context (N, L, context_dim)")
        factor = 2 ** (len(self.channel_mult) - 1)
        if x.ndim != 4 or x.shape[-1] != self.in_channels or x.shape[1] % factor or x.shape[2] % factor:
            raise ValueError(f"UNetModel: x has shape {x.shape}; expected NHWC with {self.in_channels} "
                             f"channels and H, W multiples of {factor}")
        timesteps = jnp.broadcast_to(timesteps, (x.shape[0],))  # a scalar t serves the whole batch
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        time_embed_dim = 4 * self.model_channels
        emb = timestep_embedding(timesteps, self.model_channels)
        emb = layers.dense(time_embed_dim, name=layers.indexed("time_embed", 0), **kw)(emb)
        emb = layers.dense(time_embed_dim, name=layers.indexed("time_embed", 2), **kw)(nn.silu(emb))
        if y is not None:
            emb = emb + self._label_embedding(y, time_embed_dim)
        if context is not None:
            context = context.astype(self.dtype)
        if self.pooled_context:
            h = layers.dense(time_embed_dim, name=layers.indexed("context_emb", 0), **kw)(jnp.mean(context, axis=1))
            emb = emb + layers.dense(time_embed_dim, name=layers.indexed("context_emb", 2), **kw)(nn.silu(h))

        def run(block, h):
            """A TimestepEmbedSequential: ResBlocks get emb, transformers the context."""
            for kind, layer in block:
                if kind == "res":
                    h = layer(h, emb, deterministic)
                elif kind == "context":
                    h = layer(h, context)
                else:
                    h = layer(h)
            return h

        h = x.astype(self.dtype)
        skips = []
        for block in self._input_blocks():
            h = run(block, h)
            skips.append(h)
        h = run(self._middle_block(), h)
        for block in self._output_blocks():
            h = run(block, jnp.concatenate([h, skips.pop()], axis=-1))

        if self.n_embed is not None:
            h = layers.group_norm(self.num_groups, 1e-5, name=layers.indexed("id_predictor", 0), **kw)(h)
            return layers.conv(self.n_embed, 1, name=layers.indexed("id_predictor", 1), **kw)(h)
        h = nn.silu(layers.group_norm(self.num_groups, 1e-5, name=layers.indexed("out", 0), **kw)(h))
        h = layers.conv(self.out_channels, 3, padding=1, name=layers.indexed("out", 2), **kw)(h)
        return h.astype(x.dtype)

    def _label_embedding(self, y: jax.Array, features: int) -> jax.Array:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        if isinstance(self.num_classes, int):
            return layers.embed(self.num_classes, features, name="label_emb", **kw)(y)
        if self.num_classes == "continuous":  # nn.Linear(1, ...) on one scalar per sample
            return layers.dense(features, name="label_emb", **kw)(y.reshape(y.shape[0], 1).astype(self.dtype))
        h = layers.dense(features, name=layers.indexed("label_emb", 0, 0), **kw)(y.astype(self.dtype))
        return layers.dense(features, name=layers.indexed("label_emb", 0, 2), **kw)(nn.silu(h))

    # -- block construction (called from __call__, so submodules are created in its compact scope) --

    def _res_block(self, name: str, out_channels: int, up: bool = False, down: bool = False):
        cls = nn.remat(ResBlock, static_argnums=(3,)) if self.remat else ResBlock
        return "res", cls(out_channels, self.dropout, use_scale_shift_norm=self.use_scale_shift_norm, up=up, down=down,
                          num_groups=self.num_groups, dtype=self.dtype, param_dtype=self.param_dtype, name=name)

    def _attention(self, name: str, channels: int, disable_self_attn: bool, upsample: bool = False):
        num_heads, dim_head = attention_heads(channels, self.num_heads, self.num_head_channels,
                                              self.legacy, self.use_spatial_transformer)
        kw = dict(query_chunk_size=self.query_chunk_size, num_groups=self.num_groups, dtype=self.dtype,
                  param_dtype=self.param_dtype, name=name)
        if self.use_spatial_transformer:
            # Rematerialised whole, as a ResBlock: its float32 GroupNorm and the projections around the
            # transformer blocks were otherwise kept for the backward pass (1.6 of the 2 GB SD v1 kept at
            # batch 8, experiments/bench_scale.py).
            cls = nn.remat(SpatialTransformer) if self.remat else SpatialTransformer
            return "context", cls(num_heads, dim_head, depth=self.transformer_depth, context_dim=self.context_dim,
                                  disable_self_attn=disable_self_attn, use_linear=self.use_linear_in_transformer, **kw)
        # Output blocks pass num_heads_upsample (default: num_heads); it only counts when dim_head is -1.
        heads = num_heads
        if upsample:
            heads = self.num_heads if self.num_heads_upsample == -1 else self.num_heads_upsample
        cls = nn.remat(AttentionBlock) if self.remat else AttentionBlock
        return "plain", cls(heads, dim_head, self.use_new_attention_order, **kw)

    def _has_attention(self, ds: int, level: int, index: int) -> bool:
        limit = self.num_attention_blocks
        return ds in self.attention_resolutions and (limit is None or index < limit[level])

    def _self_attention_disabled(self, level: int) -> bool:
        return bool(self.disable_self_attentions[level]) if self.disable_self_attentions else False

    def _input_blocks(self) -> list[list]:
        name = functools.partial(layers.indexed, "input_blocks")
        conv_in = layers.conv(self.model_channels, 3, padding=1, name=name(0, 0),
                              dtype=self.dtype, param_dtype=self.param_dtype)
        blocks, ds = [[("plain", conv_in)]], 1
        for level, mult in enumerate(self.channel_mult):
            ch = mult * self.model_channels
            for nr in range(self.res_blocks_per_level[level]):
                i = len(blocks)
                block = [self._res_block(name(i, 0), ch)]
                if self._has_attention(ds, level, nr):
                    block.append(self._attention(name(i, 1), ch, self._self_attention_disabled(level)))
                blocks.append(block)
            if level != len(self.channel_mult) - 1:
                i = len(blocks)
                if self.resblock_updown:
                    blocks.append([self._res_block(name(i, 0), ch, down=True)])
                else:
                    blocks.append([("plain", Downsample(self.conv_resample, ch, dtype=self.dtype,
                                                        param_dtype=self.param_dtype, name=name(i, 0)))])
                ds *= 2
        return blocks

    def _middle_block(self) -> list:
        ch = self.channel_mult[-1] * self.model_channels
        name = functools.partial(layers.indexed, "middle_block")
        return [self._res_block(name(0), ch),
                self._attention(name(1), ch, self.disable_middle_self_attn),
                self._res_block(name(2), ch)]

    def _output_blocks(self) -> list[list]:
        name = functools.partial(layers.indexed, "output_blocks")
        blocks, ds = [], 2 ** (len(self.channel_mult) - 1)
        for level, mult in reversed(list(enumerate(self.channel_mult))):
            ch = mult * self.model_channels
            num_res = self.res_blocks_per_level[level]
            for nr in range(num_res + 1):
                i = len(blocks)
                block = [self._res_block(name(i, 0), ch)]
                if self._has_attention(ds, level, nr):
                    block.append(self._attention(name(i, 1), ch, self._self_attention_disabled(level),
                                                 upsample=True))
                if level and nr == num_res:
                    j = len(block)
                    if self.resblock_updown:
                        block.append(self._res_block(name(i, j), ch, up=True))
                    else:
                        block.append(("plain", Upsample(self.conv_resample, ch, dtype=self.dtype,
                                                        param_dtype=self.param_dtype, name=name(i, j))))
                    ds //= 2
                blocks.append(block)
        return blocks


def _validate(unet: UNetModel) -> None:
    """The reference constructor's assertions, as ValueErrors naming the field."""
    def fail(message):
        raise ValueError(f"UNetModel: {message}")

    if unet.dims != 2:
        fail(f"dims={unet.dims} is not supported (only 2-d images)")
    if unet.use_spatial_transformer and unet.context_dim is None:
        fail("use_spatial_transformer needs context_dim")
    if unet.pooled_context and not unet.use_spatial_transformer:
        fail("pooled_context needs a context: set use_spatial_transformer and context_dim")
    if unet.context_dim is not None and not unet.use_spatial_transformer:
        fail("context_dim is set but use_spatial_transformer is False")
    if unet.num_heads == -1 and unet.num_head_channels == -1:
        fail("either num_heads or num_head_channels has to be set")
    levels = len(unet.channel_mult)
    if not isinstance(unet.num_res_blocks, int) and len(unet.num_res_blocks) != levels:
        fail(f"num_res_blocks {unet.num_res_blocks} needs one entry per channel_mult level ({levels})")
    if unet.disable_self_attentions is not None and len(unet.disable_self_attentions) != levels:
        fail(f"disable_self_attentions needs one entry per channel_mult level ({levels})")
    if unet.num_attention_blocks is not None:
        per_level = unet.res_blocks_per_level
        if len(unet.num_attention_blocks) != levels or any(
                n > r for n, r in zip(unet.num_attention_blocks, per_level)):
            fail(f"num_attention_blocks {unet.num_attention_blocks} must have {levels} entries, "
                 f"each at most num_res_blocks {per_level}")
    if unet.num_classes is not None and not isinstance(unet.num_classes, int):
        if unet.num_classes not in ("continuous", "sequential"):
            fail(f"num_classes must be an int, 'continuous' or 'sequential', got {unet.num_classes!r}")
        if unet.num_classes == "sequential" and unet.adm_in_channels is None:
            fail("num_classes='sequential' needs adm_in_channels")


# Reference params that do not change what the model computes.
_INFERENCE_IRRELEVANT = frozenset({"use_checkpoint", "use_fp16", "use_bf16"})
_OPTIONS = frozenset({"dtype", "param_dtype", "remat", "query_chunk_size", "parent", "name"})
_TUPLE_FIELDS = ("attention_resolutions", "channel_mult", "num_res_blocks", "disable_self_attentions",
                 "num_attention_blocks")


def unet_from_reference(params: Mapping[str, Any], **options) -> UNetModel:
    """A UNetModel from the reference `unet_config.params` mapping (e.g. a fixture YAML).

    `options` sets the JAX-only fields (dtype, param_dtype, remat, query_chunk_size).
    Raises ValueError naming any param the reference UNet does not know.
    """
    fields = {f.name: f for f in dataclasses.fields(UNetModel) if f.name not in _OPTIONS}
    unknown = sorted(set(params) - set(fields) - _INFERENCE_IRRELEVANT)
    if unknown:
        raise ValueError(f"unknown UNetModel params: {', '.join(unknown)}")
    missing = sorted(name for name, field in fields.items()
                     if field.default is dataclasses.MISSING and name not in params)
    if missing:
        raise ValueError(f"missing UNetModel params: {', '.join(missing)}")
    bad_options = sorted(set(options) - (_OPTIONS - {"parent", "name"}))
    if bad_options:
        raise ValueError(f"unknown UNetModel options: {', '.join(bad_options)}")
    kwargs = {k: v for k, v in params.items() if k in fields}
    for key in _TUPLE_FIELDS:
        if isinstance(kwargs.get(key), (list, tuple)):
            kwargs[key] = tuple(kwargs[key])
    context_dim = kwargs.get("context_dim")
    if isinstance(context_dim, (list, tuple)):
        if len(set(context_dim)) != 1:
            raise ValueError(f"context_dim: a different context per transformer block ({list(context_dim)}) "
                             "is not supported")
        kwargs["context_dim"] = int(context_dim[0])
    return UNetModel(**kwargs, **options)


def example_inputs(unet: UNetModel) -> tuple:
    """Small (x, timesteps[, context][, y]) that make `unet.init` create every parameter."""
    size = max(8, 2 ** (len(unet.channel_mult) - 1))  # every level must halve evenly
    x = jnp.zeros((1, size, size, unet.in_channels), jnp.float32)
    timesteps = jnp.zeros((1,), jnp.int32)
    context = None if unet.context_dim is None else jnp.zeros((1, 8, unet.context_dim), jnp.float32)
    if unet.num_classes is None:
        return (x, timesteps) if context is None else (x, timesteps, context)
    if isinstance(unet.num_classes, int):
        y = jnp.zeros((1,), jnp.int32)
    elif unet.num_classes == "continuous":
        y = jnp.zeros((1,), jnp.float32)
    else:
        y = jnp.zeros((1, unet.adm_in_channels), jnp.float32)
    return x, timesteps, context, y
