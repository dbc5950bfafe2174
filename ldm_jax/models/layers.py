"""Building blocks shared by every model: layers whose parameters carry logical axis names.

Parameter names follow the reference PyTorch modules so that checkpoint conversion is a
mechanical rename (see `ldm_jax.convert.state_dict`): a module is named after the
reference attribute, and a list index is written `name:i` (orbax reserves '.').
"""
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ldm_jax.models.conv import conv_general_dilated

Dtype = Any

# Logical axis names. The mesh rules that map them to `data` / `fsdp` / `tensor` live in configs.
EMBED = "embed"    # input features of a kernel
MLP = "mlp"        # output features of a kernel
HEADS = "heads"    # attention heads (unused by kernels stored fused, kept for activations)
VOCAB = "vocab"    # rows of an embedding table
NORM = "norm"      # affine parameters of a normalisation layer


def indexed(name: str, *indices: int) -> str:
    """The Flax name of element `indices` of the reference module list `name`."""
    return ":".join([name, *map(str, indices)])


# torch's default for Conv / Linear (kaiming_uniform with a=sqrt(5)): U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
# Uniform is also far cheaper to compile than the truncated normal of lecun_normal.
_TORCH_DEFAULT = nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform")


def _kernel_init(ndim: int, base=_TORCH_DEFAULT):
    return nn.with_logical_partitioning(base, (None,) * (ndim - 2) + (EMBED, MLP))


_bias_init = nn.with_logical_partitioning(nn.initializers.zeros_init(), (MLP,))
_norm_scale_init = nn.with_logical_partitioning(nn.initializers.ones_init(), (NORM,))
_norm_bias_init = nn.with_logical_partitioning(nn.initializers.zeros_init(), (NORM,))


def conv(features: int, kernel_size: int | Sequence[int], *, stride: int = 1, padding: Any = "SAME",
         dtype: Dtype = jnp.float32, param_dtype: Dtype = jnp.float32, name: str | None = None,
         use_bias: bool = True) -> nn.Conv:
    """A Conv with logical axes on its kernel; `padding` int pads symmetrically like torch."""
    if isinstance(kernel_size, int):
        kernel_size = (kernel_size, kernel_size)
    if isinstance(padding, int):
        padding = [(padding, padding)] * len(kernel_size)
    return nn.Conv(features, tuple(kernel_size), strides=stride, padding=padding, use_bias=use_bias,
                   dtype=dtype, param_dtype=param_dtype, precision="highest",
                   kernel_init=_kernel_init(len(kernel_size) + 2), bias_init=_bias_init, name=name,
                   conv_general_dilated=conv_general_dilated)


def dense(features: int, *, use_bias: bool = True, dtype: Dtype = jnp.float32,
          param_dtype: Dtype = jnp.float32, name: str | None = None) -> nn.Dense:
    """A Dense layer with logical axes on its kernel (the reference nn.Linear)."""
    return nn.Dense(features, use_bias=use_bias, dtype=dtype, param_dtype=param_dtype,
                    precision="highest", kernel_init=_kernel_init(2), bias_init=_bias_init, name=name)


class GroupNorm(nn.Module):
    """GroupNorm computed in float32, as the reference GroupNorm32 does; parameters `scale`, `bias`.

    Statistics are reduced per channel over the spatial axes first, then per group: on XLA:CPU this
    is 2-5x faster than reducing (spatial, channels-in-group) at once as `nn.GroupNorm` does.
    """
    num_groups: int = 32
    epsilon: float = 1e-6
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        channels = x.shape[-1]
        if channels % self.num_groups:
            raise ValueError(f"{self.name or type(self).__name__}: {channels} channels do not split into {self.num_groups} groups")
        scale = self.param("scale", _norm_scale_init, (channels,), self.param_dtype)
        bias = self.param("bias", _norm_bias_init, (channels,), self.param_dtype)
        spatial = tuple(range(1, x.ndim - 1))
        per_group = channels // self.num_groups

        def group_mean(values):  # (B, *spatial, C) -> (B, 1..., C): the mean of each channel's group
            channel_mean = jnp.mean(values, axis=spatial)
            group = jnp.mean(channel_mean.reshape(-1, self.num_groups, per_group), axis=-1)
            return jnp.repeat(group, per_group, axis=-1).reshape(x.shape[:1] + (1,) * len(spatial) + (channels,))

        x = x.astype(jnp.float32)
        centred = x - group_mean(x)
        normed = centred * jax.lax.rsqrt(group_mean(jnp.square(centred)) + self.epsilon)
        return (normed * scale.astype(jnp.float32) + bias.astype(jnp.float32)).astype(self.dtype)


def group_norm(num_groups: int = 32, epsilon: float = 1e-6, *, dtype: Dtype = jnp.float32,
               param_dtype: Dtype = jnp.float32, name: str | None = None) -> GroupNorm:
    """GroupNorm computed in float32, as the reference GroupNorm32 does."""
    return GroupNorm(num_groups=num_groups, epsilon=epsilon, dtype=dtype, param_dtype=param_dtype, name=name)


def gelu(x):
    """Exact (erf) GELU in torch's form, x/2 (1 + erf(x / sqrt 2)): 2.5x faster on XLA:CPU than
    `jax.nn.gelu(approximate=False)`, which goes through erfc."""
    return 0.5 * x * (1.0 + jax.lax.erf(x * np.asarray(1.0 / np.sqrt(2.0), x.dtype)))


def layer_norm(epsilon: float = 1e-5, *, dtype: Dtype = jnp.float32, param_dtype: Dtype = jnp.float32,
               name: str | None = None) -> nn.LayerNorm:
    """LayerNorm with the torch default epsilon and exact variance."""
    return nn.LayerNorm(epsilon=epsilon, dtype=dtype, param_dtype=param_dtype, use_fast_variance=False,
                        scale_init=_norm_scale_init, bias_init=_norm_bias_init, name=name)


def embed(num_embeddings: int, features: int, *, dtype: Dtype = jnp.float32,
          param_dtype: Dtype = jnp.float32, name: str | None = None) -> nn.Embed:
    """An embedding table (the reference nn.Embedding), rows on the `vocab` axis."""
    init = nn.with_logical_partitioning(nn.initializers.normal(1.0), (VOCAB, EMBED))
    return nn.Embed(num_embeddings, features, dtype=dtype, param_dtype=param_dtype,
                    embedding_init=init, name=name)
