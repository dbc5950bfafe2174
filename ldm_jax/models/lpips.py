"""LPIPS, the learned perceptual image distance (Zhang et al. 2018), VGG16 variant v0.1, NHWC.

The network `lpips.LPIPS(net="vgg", version="0.1")` and taming's `LPIPS` both compute, and the
reference `LPIPSWithDiscriminator` uses as its perceptual term:

    x -> (x - shift) / scale                       the ScalingLayer (inputs in [-1, 1])
      -> torchvision vgg16().features, tapped after relu1_2, relu2_2, relu3_3, relu4_3, relu5_3
      -> per layer: unit-normalise over channels, squared difference of the two images,
         1x1 conv to one channel without bias (`lin0` .. `lin4`), spatial mean
      -> sum over the five layers                  one distance per image pair

Parameter names follow the PyTorch layouts so conversion is a rename (see
`ldm_jax.convert.lpips_weights`): the VGG convs are `features:N` (torchvision `features.N`) and the
heads `linK / model:1` (lpips `linK.model.1`, index 0 being the Dropout). The weights are frozen
during autoencoder training; `widths` other than VGG16's exist for small test networks only.
"""
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ldm_jax.models import layers

Dtype = Any

# The lpips ScalingLayer: ImageNet statistics re-expressed for inputs in [-1, 1].
SHIFT = np.array([-0.030, -0.088, -0.188], np.float32)
SCALE = np.array([0.458, 0.448, 0.450], np.float32)

VGG16_WIDTHS = (64, 128, 256, 512, 512)
# Indices of the 3x3 convs in torchvision `vgg16().features`, one tuple per LPIPS slice; a ReLU
# follows every conv and a 2x2 max-pool opens every slice but the first.
VGG16_CONV_INDICES = ((0, 2), (5, 7), (10, 12, 14), (17, 19, 21), (24, 26, 28))
# lpips `normalize_tensor`: x / (||x||_channels + eps).
NORMALIZE_EPS = 1e-10


def _unit_normalize(features: jax.Array) -> jax.Array:
    """features / (channel norm + 1e-10), with a finite gradient where a pixel's features are all 0.

    The forward value equals the reference's everywhere; torch's gradient of sqrt at 0 is inf * 0 =
    NaN there, so the norm is taken through a double `where` instead.
    """
    squared = jnp.sum(jnp.square(features), axis=-1, keepdims=True)
    positive = squared > 0
    norm = jnp.where(positive, jnp.sqrt(jnp.where(positive, squared, 1.0)), 0.0)
    return features / (norm + NORMALIZE_EPS)


class NetLinLayer(nn.Module):
    """The lpips head of one layer: (Dropout), 1x1 conv to one channel without bias, named `model:1`."""
    dropout_rate: float = 0.5
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, deterministic: bool = True) -> jax.Array:
        x = nn.Dropout(self.dropout_rate)(x, deterministic=deterministic)
        return layers.conv(1, 1, padding=0, use_bias=False, dtype=self.dtype, param_dtype=self.param_dtype,
                           name="model:1")(x)


def vgg16_taps(x: jax.Array, widths: Sequence[int], dtype: Dtype, param_dtype: Dtype) -> list[jax.Array]:
    """relu1_2 .. relu5_3 of VGG16 for x (N, H, W, 3); called inside a compact module that owns the convs."""
    if len(widths) != len(VGG16_CONV_INDICES):
        raise ValueError(f"VGG16 has {len(VGG16_CONV_INDICES)} LPIPS slices, got {len(widths)} widths {tuple(widths)}")
    taps = []
    h = x
    for slice_index, (indices, width) in enumerate(zip(VGG16_CONV_INDICES, widths)):
        if slice_index:
            h = nn.max_pool(h, (2, 2), strides=(2, 2), padding="VALID")
        for index in indices:
            h = layers.conv(width, 3, padding=1, dtype=dtype, param_dtype=param_dtype,
                            name=layers.indexed("features", index))(h)
            h = nn.relu(h)
        taps.append(h)
    return taps


class LPIPS(nn.Module):
    """LPIPS(x0, x1) -> (N,) perceptual distances for image batches in [-1, 1], NHWC.

    `deterministic=False` applies the heads' Dropout(0.5) (needs a "dropout" rng); the metric, and
    the reference loss in eval mode, use none.
    """
    widths: Sequence[int] = VGG16_WIDTHS
    dropout_rate: float = 0.5
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x0: jax.Array, x1: jax.Array, deterministic: bool = True) -> jax.Array:
        if x0.shape != x1.shape or x0.ndim != 4 or x0.shape[-1] != 3:
            raise ValueError(f"LPIPS compares two RGB batches of equal shape (N, H, W, 3), "
                             f"got {x0.shape} and {x1.shape}")
        batch = x0.shape[0]
        # Both images through the VGG in one batch.
        x = (jnp.concatenate([x0, x1]).astype(jnp.float32) - SHIFT) / SCALE
        taps = vgg16_taps(x.astype(self.dtype), self.widths, self.dtype, self.param_dtype)
        distance = jnp.zeros((batch,), jnp.float32)
        for k, tap in enumerate(taps):
            tap = tap.astype(jnp.float32)
            diff = jnp.square(_unit_normalize(tap[:batch]) - _unit_normalize(tap[batch:]))
            head = NetLinLayer(self.dropout_rate, dtype=self.dtype, param_dtype=self.param_dtype, name=f"lin{k}")
            distance = distance + jnp.mean(head(diff, deterministic).astype(jnp.float32), axis=(1, 2, 3))
        return distance


def example_inputs(module: LPIPS) -> tuple[jax.Array, jax.Array]:
    """Two (1, 16, 16, 3) batches whose `module.init` creates every parameter (16 = 2^4 max-pools)."""
    x = jnp.zeros((1, 16, 16, 3), jnp.float32)
    return x, x
