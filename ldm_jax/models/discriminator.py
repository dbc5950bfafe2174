"""The PatchGAN discriminator of the first-stage training loss (taming `NLayerDiscriminator`), NHWC.

pix2pix's N-layer PatchGAN: a 4x4 stride-2 conv and LeakyReLU(0.2); `n_layers - 1` blocks of 4x4
stride-2 conv (no bias), norm, LeakyReLU doubling the width up to 8 * ndf; one such block with
stride 1; a final 4x4 stride-1 conv to one logit per patch. For an H x W input the logit map is
(H // 2^n_layers - 2) x (W // 2^n_layers - 2), e.g. 30 x 30 at 256^2 with 3 layers.

Flax names mirror the reference `nn.Sequential` (`main.N`, counting the LeakyReLUs), so a
reference discriminator state dict maps key by key (`ldm_jax.convert.discriminator_weights`).
The norm is torch-exact BatchNorm (running statistics in the "batch_stats" collection, momentum
0.1, unbiased running variance) or taming's ActNorm, whose data-dependent initialisation runs in
`init` on the batch given there (the reference runs it on the first training batch).
"""
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ldm_jax.models import layers
from ldm_jax.models.conv import conv_general_dilated

Dtype = Any
KERNEL_SIZE = 4
PADDING = 1
LEAKY_SLOPE = 0.2
BATCH_STATS = "batch_stats"


def _torch_bias_init(fan_in: int):
    """torch's Conv2d bias default, U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (taming's weights_init keeps it)."""
    bound = 1.0 / np.sqrt(fan_in)

    def init(rng, shape, dtype=jnp.float32):
        return jax.random.uniform(rng, shape, dtype, -bound, bound)

    return nn.with_logical_partitioning(init, (layers.MLP,))


def patch_conv(features: int, in_features: int, stride: int, use_bias: bool, *, dtype: Dtype, param_dtype: Dtype,
               name: str) -> nn.Conv:
    """A 4x4 conv, padding 1, with taming's `weights_init`: kernel ~ N(0, 0.02)."""
    kernel_init = nn.with_logical_partitioning(nn.initializers.normal(0.02), (None, None, layers.EMBED, layers.MLP))
    return nn.Conv(features, (KERNEL_SIZE, KERNEL_SIZE), strides=stride, padding=[(PADDING, PADDING)] * 2,
                   use_bias=use_bias, dtype=dtype, param_dtype=param_dtype, precision="highest",
                   kernel_init=kernel_init, bias_init=_torch_bias_init(in_features * KERNEL_SIZE ** 2), name=name,
                   conv_general_dilated=conv_general_dilated)


class BatchNorm(nn.Module):
    """torch.nn.BatchNorm2d over NHWC: batch statistics in training, running ones otherwise.

    Running statistics update as torch's do (momentum 0.1, unbiased variance) but not during
    `init`; `scale` starts at N(1, 0.02) and `bias` at 0, as taming's `weights_init` sets them.
    Under `jit` with a sharded batch the statistics are over the global batch (the reference,
    without SyncBatchNorm, normalises each GPU's share separately).
    """
    momentum: float = 0.1
    epsilon: float = 1e-5
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        channels = x.shape[-1]
        scale_init = nn.with_logical_partitioning(
            lambda rng, shape, dtype: 1.0 + 0.02 * jax.random.normal(rng, shape, dtype), (layers.NORM,))
        scale = self.param("scale", scale_init, (channels,), self.param_dtype)
        bias = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros_init(), (layers.NORM,)),
                          (channels,), self.param_dtype)
        running_mean = self.variable(BATCH_STATS, "running_mean", jnp.zeros, (channels,), jnp.float32)
        running_var = self.variable(BATCH_STATS, "running_var", jnp.ones, (channels,), jnp.float32)
        batches = self.variable(BATCH_STATS, "num_batches_tracked", jnp.zeros, (), jnp.int32)
        x32 = x.astype(jnp.float32)
        if train:
            axes = tuple(range(x.ndim - 1))
            mean = jnp.mean(x32, axis=axes)
            var = jnp.mean(jnp.square(x32 - mean), axis=axes)
            if not self.is_initializing():
                count = x.size // channels
                unbiased = jax.lax.stop_gradient(var) * (count / max(count - 1, 1))
                batch_mean = jax.lax.stop_gradient(mean)
                running_mean.value = (1 - self.momentum) * running_mean.value + self.momentum * batch_mean
                running_var.value = (1 - self.momentum) * running_var.value + self.momentum * unbiased
                batches.value = batches.value + 1
        else:
            mean, var = running_mean.value, running_var.value
        y = (x32 - mean) * jax.lax.rsqrt(var + self.epsilon)
        return (y * scale.astype(jnp.float32) + bias.astype(jnp.float32)).astype(self.dtype)


class ActNorm(nn.Module):
    """taming's ActNorm (affine, no logdet): scale * (x + loc), initialised from the `init` batch.

    loc = -mean and scale = 1 / (std + 1e-6) per channel (unbiased std, as torch's `Tensor.std`), so
    the first batch leaves the layer standardised; afterwards both are ordinary trained params.
    """
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        del train  # same computation in both modes once initialised
        flat = x.astype(jnp.float32).reshape(-1, x.shape[-1])
        count = flat.shape[0]

        def init_loc(rng, shape, dtype):
            return (-jnp.mean(flat, axis=0)).astype(dtype)

        def init_scale(rng, shape, dtype):
            std = jnp.sqrt(jnp.sum(jnp.square(flat - jnp.mean(flat, axis=0)), axis=0) / max(count - 1, 1))
            return (1.0 / (std + 1e-6)).astype(dtype)

        axes = (layers.NORM,)
        loc = self.param("loc", nn.with_logical_partitioning(init_loc, axes), (x.shape[-1],), self.param_dtype)
        scale = self.param("scale", nn.with_logical_partitioning(init_scale, axes), (x.shape[-1],), self.param_dtype)
        return (scale.astype(jnp.float32) * (x.astype(jnp.float32) + loc.astype(jnp.float32))).astype(self.dtype)


class NLayerDiscriminator(nn.Module):
    """PatchGAN: image (N, H, W, input_nc) -> logits (N, H // 2^n_layers - 2, W // 2^n_layers - 2, 1).

    `train=True` normalises with batch statistics and, for BatchNorm, updates the running ones:
    apply with `mutable=["batch_stats"]`.
    """
    input_nc: int = 3
    ndf: int = 64
    n_layers: int = 3
    use_actnorm: bool = False
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = True) -> jax.Array:
        if x.ndim != 4 or x.shape[-1] != self.input_nc:
            raise ValueError(f"NLayerDiscriminator(input_nc={self.input_nc}) expects (N, H, W, {self.input_nc}), "
                             f"got {x.shape}")
        if min(output_size(x.shape[1], self.n_layers), output_size(x.shape[2], self.n_layers)) < 1:
            raise ValueError(f"NLayerDiscriminator with n_layers={self.n_layers} needs images of at least "
                             f"{3 * 2 ** self.n_layers}^2 (one logit), got {x.shape[1]}x{x.shape[2]}")
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        norm = ActNorm if self.use_actnorm else BatchNorm
        use_bias = self.use_actnorm  # BatchNorm's affine shift makes a conv bias redundant
        index = 0  # position in the reference nn.Sequential `main`, LeakyReLUs counted

        def conv(h, features, stride, bias):
            nonlocal index
            h = patch_conv(features, h.shape[-1], stride, bias, **kw, name=layers.indexed("main", index))(h)
            index += 1
            return h

        def norm_and_activation(h):
            nonlocal index
            h = norm(**kw, name=layers.indexed("main", index))(h, train)
            index += 2  # the norm and the LeakyReLU
            return nn.leaky_relu(h, LEAKY_SLOPE)

        h = nn.leaky_relu(conv(x, self.ndf, 2, True), LEAKY_SLOPE)
        index += 1
        for n in range(1, self.n_layers):
            h = norm_and_activation(conv(h, self.ndf * min(2 ** n, 8), 2, use_bias))
        h = norm_and_activation(conv(h, self.ndf * min(2 ** self.n_layers, 8), 1, use_bias))
        return conv(h, 1, 1, True)


def output_size(size: int, n_layers: int) -> int:
    """The logit map's side for an input side `size`: n_layers halvings (k4 s2 p1), then two k4 s1 p1 (-1 each)."""
    for _ in range(n_layers):
        size = (size + 2 * PADDING - KERNEL_SIZE) // 2 + 1
    return size - 2
