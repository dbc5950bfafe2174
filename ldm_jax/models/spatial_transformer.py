"""The LDM spatial transformer: cross-attention from image positions to a conditioning sequence.

Mirrors `ldm/modules/attention.py` of CompVis latent-diffusion / stable-diffusion and the
Stability-AI SD 2 variant (linear `proj_in` / `proj_out`, `disable_self_attn`). Submodules are
named after the reference attributes so that checkpoints load by name; inputs are NHWC.
"""
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from ldm_jax.models import layers
from ldm_jax.models.attention import attend

Dtype = Any


def fitting_chunk_size(length: int, query_chunk_size: int | None) -> int | None:
    """The largest divisor of `length` not above `query_chunk_size` (None: no chunking).

    The UNet attends at several resolutions, so one configured chunk size rarely divides every
    sequence length; a divisor keeps the memory bound without padding.
    """
    if query_chunk_size is None or query_chunk_size >= length:
        return None
    if query_chunk_size < 1:
        raise ValueError(f"query_chunk_size must be positive, got {query_chunk_size}")
    return next(size for size in range(query_chunk_size, 0, -1) if length % size == 0)


class CrossAttention(nn.Module):
    """Multi-head attention of `x` (B, N, D) over `context` (B, M, Dc), or over itself if None."""
    heads: int = 8
    dim_head: int = 64
    query_chunk_size: int | None = None
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, context: jax.Array | None = None) -> jax.Array:
        inner_dim = self.heads * self.dim_head
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        context = x if context is None else context
        q = layers.dense(inner_dim, use_bias=False, name="to_q", **kw)(x)
        k = layers.dense(inner_dim, use_bias=False, name="to_k", **kw)(context)
        v = layers.dense(inner_dim, use_bias=False, name="to_v", **kw)(context)
        # 'b n (h d)': heads are the outer factor of the feature axis.
        q, k, v = (t.reshape(*t.shape[:2], self.heads, self.dim_head) for t in (q, k, v))
        out = attend(q, k, v, query_chunk_size=fitting_chunk_size(q.shape[1], self.query_chunk_size))
        out = out.reshape(*out.shape[:2], inner_dim)
        return layers.dense(x.shape[-1], name=layers.indexed("to_out", 0), **kw)(out)


class GEGLU(nn.Module):
    """A gated GELU: one projection to 2*dim_out, the second half (exact GELU) gates the first."""
    dim_out: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        h = layers.dense(2 * self.dim_out, name="proj", dtype=self.dtype, param_dtype=self.param_dtype)(x)
        h, gate = jnp.split(h, 2, axis=-1)
        return h * layers.gelu(gate)


class FeedForward(nn.Module):
    """The transformer MLP: `net:0` (GEGLU, or Dense+GELU as `net:0:0`), then `net:2` Dense."""
    mult: int = 4
    glu: bool = False
    dim_out: int | None = None
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        inner_dim = int(x.shape[-1] * self.mult)
        if self.glu:
            h = GEGLU(inner_dim, name=layers.indexed("net", 0), **kw)(x)
        else:
            h = layers.dense(inner_dim, name=layers.indexed("net", 0, 0), **kw)(x)
            h = layers.gelu(h)
        return layers.dense(self.dim_out or x.shape[-1], name=layers.indexed("net", 2), **kw)(h)


class BasicTransformerBlock(nn.Module):
    """Pre-norm self-attention, cross-attention and gated feed-forward, each residual.

    With `disable_self_attn` (SD 2 upscaler) `attn1` also attends to the context.
    """
    n_heads: int
    d_head: int
    gated_ff: bool = True
    disable_self_attn: bool = False
    query_chunk_size: int | None = None
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, context: jax.Array | None = None) -> jax.Array:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        attn = dict(heads=self.n_heads, dim_head=self.d_head, query_chunk_size=self.query_chunk_size, **kw)
        h = layers.layer_norm(1e-5, name="norm1", **kw)(x)
        x = CrossAttention(name="attn1", **attn)(h, context if self.disable_self_attn else None) + x
        h = layers.layer_norm(1e-5, name="norm2", **kw)(x)
        x = CrossAttention(name="attn2", **attn)(h, context) + x
        h = layers.layer_norm(1e-5, name="norm3", **kw)(x)
        return FeedForward(glu=self.gated_ff, name="ff", **kw)(h) + x


class SpatialTransformer(nn.Module):
    """GroupNorm, project in, `depth` transformer blocks over the H*W positions, project out, residual.

    `use_linear` (SD 2) projects with Dense layers after flattening instead of 1x1 convs.
    `context_dim`, when set, is checked against the context's last axis.
    """
    n_heads: int
    d_head: int
    depth: int = 1
    context_dim: int | None = None
    disable_self_attn: bool = False
    use_linear: bool = False
    query_chunk_size: int | None = None
    num_groups: int = 32
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, context: jax.Array | None = None) -> jax.Array:
        if context is not None and self.context_dim is not None and context.shape[-1] != self.context_dim:
            raise ValueError(f"{self.name}: context has {context.shape[-1]} features, "
                             f"context_dim is {self.context_dim}")
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        batch, height, width, channels = x.shape
        inner_dim = self.n_heads * self.d_head

        def project(features, name):
            if self.use_linear:
                return layers.dense(features, name=name, **kw)
            return layers.conv(features, 1, name=name, **kw)

        h = layers.group_norm(self.num_groups, 1e-6, name="norm", **kw)(x)
        if not self.use_linear:
            h = project(inner_dim, "proj_in")(h)
        h = h.reshape(batch, height * width, h.shape[-1])
        if self.use_linear:
            h = project(inner_dim, "proj_in")(h)
        for i in range(self.depth):
            h = BasicTransformerBlock(self.n_heads, self.d_head, disable_self_attn=self.disable_self_attn,
                                      query_chunk_size=self.query_chunk_size,
                                      name=layers.indexed("transformer_blocks", i), **kw)(h, context)
        if self.use_linear:
            h = project(channels, "proj_out")(h)
        h = h.reshape(batch, height, width, h.shape[-1])
        if not self.use_linear:
            h = project(channels, "proj_out")(h)
        return h + x
