"""The convolutional encoder and decoder of the first-stage autoencoders (KL and VQ).

A Flax port of `Encoder` / `Decoder` in CompVis latent-diffusion
`ldm/modules/diffusionmodules/model.py` (NHWC). Submodules are named after the reference
attributes, so `encoder.down.0.block.0.conv1.weight` is the Flax path
`down:0:block:0 / conv1 / kernel`; the decoder's `up:i` is resolution level i (the
reference prepends each level), even though the levels run from the deepest one up.
"""
import dataclasses
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from ldm_jax.models import layers
from ldm_jax.models.attention import attend

Dtype = Any
ATTN_TYPES = ("vanilla", "none")


def _check_attn_type(attn_type: str) -> None:
    if attn_type not in ATTN_TYPES:
        raise ValueError(f"attn_type {attn_type!r} is not supported; expected one of {ATTN_TYPES}")


class ResnetBlock(nn.Module):
    """GroupNorm-swish-conv twice plus a shortcut (1x1 `nin_shortcut` or 3x3 `conv_shortcut`)."""
    out_channels: int | None = None
    conv_shortcut: bool = False
    dropout: float = 0.0
    num_groups: int = 32
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, deterministic: bool = True) -> jax.Array:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        out_channels = self.out_channels or x.shape[-1]
        h = nn.swish(layers.group_norm(self.num_groups, **kw, name="norm1")(x))
        h = layers.conv(out_channels, 3, padding=1, **kw, name="conv1")(h)
        h = nn.swish(layers.group_norm(self.num_groups, **kw, name="norm2")(h))
        h = nn.Dropout(self.dropout)(h, deterministic=deterministic)
        h = layers.conv(out_channels, 3, padding=1, **kw, name="conv2")(h)
        if x.shape[-1] != out_channels:
            if self.conv_shortcut:
                x = layers.conv(out_channels, 3, padding=1, **kw, name="conv_shortcut")(x)
            else:
                x = layers.conv(out_channels, 1, padding=0, **kw, name="nin_shortcut")(x)
        return x + h


class AttnBlock(nn.Module):
    """Single-head self-attention over all pixels, q/k/v/proj_out as 1x1 convs, residual."""
    num_groups: int = 32
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        batch, height, width, channels = x.shape
        h = layers.group_norm(self.num_groups, **kw, name="norm")(x)
        # (N, H, W, C) -> (N, H*W, heads=1, C)
        q, k, v = (layers.conv(channels, 1, padding=0, **kw, name=name)(h).reshape(batch, -1, 1, channels)
                   for name in ("q", "k", "v"))
        h = attend(q, k, v).reshape(batch, height, width, channels)
        return x + layers.conv(channels, 1, padding=0, **kw, name="proj_out")(h)


class Downsample(nn.Module):
    """Halves H and W: zero pad right/bottom by one then a stride-2 3x3 conv, or 2x2 average pooling."""
    with_conv: bool = True
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if not self.with_conv:
            return nn.avg_pool(x, (2, 2), strides=(2, 2))
        # torch pads (left 0, right 1, top 0, bottom 1): asymmetric, so it is not "SAME".
        return layers.conv(x.shape[-1], 3, stride=2, padding=((0, 1), (0, 1)), dtype=self.dtype,
                           param_dtype=self.param_dtype, name="conv")(x)


class Upsample(nn.Module):
    """Doubles H and W by nearest-neighbour repetition, then an optional 3x3 conv."""
    with_conv: bool = True
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
        if self.with_conv:
            x = layers.conv(x.shape[-1], 3, padding=1, dtype=self.dtype, param_dtype=self.param_dtype,
                            name="conv")(x)
        return x


def _resnet_block(remat: bool):
    # `deterministic` (argument 2, counting self) must stay a Python bool under remat.
    return nn.remat(ResnetBlock, static_argnums=(2,)) if remat else ResnetBlock


def _attn_block(attn_type: str, channels_kw: dict, name: str):
    """The reference `make_attn`: an AttnBlock, or None for the attention-free variant."""
    return AttnBlock(**channels_kw, name=name) if attn_type == "vanilla" else None


class Encoder(nn.Module):
    """Image (N, H, W, in_channels) -> latent (N, H/f, W/f, z_channels or 2*z_channels)."""
    ch: int
    num_res_blocks: int
    in_channels: int
    resolution: int
    z_channels: int
    ch_mult: tuple[int, ...] = (1, 2, 4, 8)
    attn_resolutions: tuple[int, ...] = ()
    dropout: float = 0.0
    resamp_with_conv: bool = True
    double_z: bool = True
    attn_type: str = "vanilla"
    num_groups: int = 32
    remat: bool = False
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, deterministic: bool = True) -> jax.Array:
        _check_attn_type(self.attn_type)
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        block = _resnet_block(self.remat)
        h = layers.conv(self.ch, 3, padding=1, **kw, name="conv_in")(x)
        curr_res = self.resolution
        for i_level, mult in enumerate(self.ch_mult):
            for i_block in range(self.num_res_blocks):
                h = block(self.ch * mult, dropout=self.dropout, num_groups=self.num_groups, **kw,
                          name=f"down:{i_level}:block:{i_block}")(h, deterministic)
                if curr_res in self.attn_resolutions:
                    attn = _attn_block(self.attn_type, {**kw, "num_groups": self.num_groups},
                                       f"down:{i_level}:attn:{i_block}")
                    h = attn(h) if attn is not None else h
            if i_level != len(self.ch_mult) - 1:
                h = Downsample(self.resamp_with_conv, **kw, name=f"down:{i_level}:downsample")(h)
                curr_res //= 2
        h = _middle(h, block, self.attn_type, self.dropout, {**kw, "num_groups": self.num_groups}, deterministic)
        h = nn.swish(layers.group_norm(self.num_groups, **kw, name="norm_out")(h))
        out_channels = 2 * self.z_channels if self.double_z else self.z_channels
        return layers.conv(out_channels, 3, padding=1, **kw, name="conv_out")(h)


class Decoder(nn.Module):
    """Latent (N, h, w, z_channels) -> image (N, h*f, w*f, out_ch)."""
    ch: int
    out_ch: int
    num_res_blocks: int
    resolution: int
    z_channels: int
    ch_mult: tuple[int, ...] = (1, 2, 4, 8)
    attn_resolutions: tuple[int, ...] = ()
    dropout: float = 0.0
    resamp_with_conv: bool = True
    give_pre_end: bool = False
    tanh_out: bool = False
    attn_type: str = "vanilla"
    num_groups: int = 32
    remat: bool = False
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, z: jax.Array, deterministic: bool = True) -> jax.Array:
        _check_attn_type(self.attn_type)
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        block = _resnet_block(self.remat)
        num_levels = len(self.ch_mult)
        h = layers.conv(self.ch * self.ch_mult[-1], 3, padding=1, **kw, name="conv_in")(z)
        h = _middle(h, block, self.attn_type, self.dropout, {**kw, "num_groups": self.num_groups}, deterministic)
        curr_res = self.resolution // 2 ** (num_levels - 1)
        for i_level in reversed(range(num_levels)):
            for i_block in range(self.num_res_blocks + 1):
                h = block(self.ch * self.ch_mult[i_level], dropout=self.dropout, num_groups=self.num_groups, **kw,
                          name=f"up:{i_level}:block:{i_block}")(h, deterministic)
                if curr_res in self.attn_resolutions:
                    attn = _attn_block(self.attn_type, {**kw, "num_groups": self.num_groups},
                                       f"up:{i_level}:attn:{i_block}")
                    h = attn(h) if attn is not None else h
            if i_level != 0:
                h = Upsample(self.resamp_with_conv, **kw, name=f"up:{i_level}:upsample")(h)
                curr_res *= 2
        if self.give_pre_end:
            return h
        h = nn.swish(layers.group_norm(self.num_groups, **kw, name="norm_out")(h))
        h = layers.conv(self.out_ch, 3, padding=1, **kw, name="conv_out")(h)
        return jnp.tanh(h) if self.tanh_out else h


def _middle(h, block, attn_type, dropout, kw, deterministic):
    """The `mid` stage shared by encoder and decoder: block_1, attn_1, block_2 at constant width.

    Called from inside a compact `__call__`, so the submodules belong to that module.
    """
    channels = h.shape[-1]
    h = block(channels, dropout=dropout, **kw, name="mid:block_1")(h, deterministic)
    attn = _attn_block(attn_type, kw, "mid:attn_1")
    h = attn(h) if attn is not None else h
    return block(channels, dropout=dropout, **kw, name="mid:block_2")(h, deterministic)


@dataclasses.dataclass(frozen=True)
class DDConfig:
    """The reference `ddconfig` shared by Encoder and Decoder (hashable, lists as tuples)."""
    ch: int
    out_ch: int
    num_res_blocks: int
    in_channels: int
    resolution: int
    z_channels: int
    ch_mult: tuple[int, ...] = (1, 2, 4, 8)
    attn_resolutions: tuple[int, ...] = ()
    dropout: float = 0.0
    resamp_with_conv: bool = True
    double_z: bool = True
    give_pre_end: bool = False
    tanh_out: bool = False
    attn_type: str = "vanilla"
    # Not a reference key (every released model uses 32): fewer groups keep narrow toy models from
    # normalising each channel on its own, which erases the image's absolute colours.
    num_groups: int = 32

    def __post_init__(self):
        _check_attn_type(self.attn_type)

    @property
    def downsampling_factor(self) -> int:
        """f: how much smaller the latent is than the image along H and W."""
        return 2 ** (len(self.ch_mult) - 1)

    @classmethod
    def from_reference(cls, ddconfig: Mapping) -> "DDConfig":
        """Builds the config from the reference YAML `ddconfig` mapping; unknown keys raise ValueError."""
        known = {f.name for f in dataclasses.fields(cls)} | {"use_linear_attn"}
        unknown = sorted(set(ddconfig) - known)
        if unknown:
            raise ValueError(f"unknown ddconfig param(s) {unknown}; expected a subset of {sorted(known)}")
        values = dict(ddconfig)
        if values.pop("use_linear_attn", False):
            values["attn_type"] = "linear"  # rejected by __post_init__ with a clear message
        for key in ("ch_mult", "attn_resolutions"):
            if key in values:
                values[key] = tuple(int(v) for v in values[key])
        return cls(**values)

    def encoder(self, **kwargs) -> Encoder:
        """The Encoder of this config; `kwargs` adds remat / dtype / param_dtype / name."""
        return _build(Encoder, self, kwargs)

    def decoder(self, **kwargs) -> Decoder:
        """The Decoder of this config; `kwargs` adds remat / dtype / param_dtype / name."""
        return _build(Decoder, self, kwargs)


def _build(module_cls, config: DDConfig, extra: dict) -> nn.Module:
    names = {f.name for f in dataclasses.fields(module_cls)} & {f.name for f in dataclasses.fields(config)}
    return module_cls(**{name: getattr(config, name) for name in names}, **extra)
