"""The FID Inception-v3 in Flax, NHWC: the `pt_inception-2015-12-05` network of pytorch-fid and torch-fidelity.

Both packages load the same port of TensorFlow's 2015-12-05 Inception graph (the file suffix
`6726825d` is the same): torchvision's Inception-v3 with 1008 classes, no aux head, BatchNorm eps
1e-3, and the FID block variants that reproduce the TensorFlow graph:

    FIDInceptionA / C / E_1   the pool branch averages without counting the zero padding
    FIDInceptionE_2           the pool branch is a 3x3 max-pool (stride 1, pad 1), not an average

Outputs: `pool3` (N, 2048), the final average pool (FID, precision/recall); `logits_unbiased`
(N, 1008) = pool3 @ fc.weight^T, which the Inception Score uses (as the original TensorFlow code
and torch-fidelity do); `logits` = logits_unbiased + fc.bias.

Input: uint8 images in [0, 255] or float images in [-1, 1], (N, H, W, 3), any size; they are
resized to 299 x 299 and normalised as one of the two packages does (`preprocessing`):

    "torch_fidelity"  TensorFlow 1.x bilinear resize (no half-pixel offset) on [0, 255], then
                      (x - 128) / 128: the TF graph's own input ops, which torch-fidelity
                      reproduces bit-exactly and ADM's evaluator runs. The paper used these.
    "pytorch_fid"     torch's bilinear resize (align_corners=False, no antialias) on [0, 1],
                      then 2x - 1.

Parameter names follow the PyTorch state dict (`Mixed_5b/branch1x1/conv/kernel` <->
`Mixed_5b.branch1x1.conv.weight`; a BatchNorm's running statistics are parameters named
`running_mean` / `running_var`, as this network is never trained), so conversion is
`ldm_jax.convert.inception_weights`.
"""
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ldm_jax.models import layers

Dtype = Any

INPUT_SIZE = 299
NUM_CLASSES = 1008
POOL3_FEATURES = 2048
BATCH_NORM_EPS = 1e-3
PREPROCESSING = ("torch_fidelity", "pytorch_fid")


# ----------------------------------------------------------------------------------------------
# Input: the two resizes and normalisations.


def _take(x: jax.Array, axis: int, index: np.ndarray) -> jax.Array:
    return jnp.take(x, jnp.asarray(index), axis=axis)


def _along(axis: int, ndim: int, values: np.ndarray) -> jax.Array:
    shape = [1] * ndim
    shape[axis] = len(values)
    return jnp.asarray(values.reshape(shape))


def _tf1_axis(x: jax.Array, axis: int, out_size: int) -> jax.Array:
    """TF 1.x ResizeBilinear (align_corners=False) along `axis`, with torch-fidelity's float32 arithmetic.

    source = destination * in / out (no half-pixel offset); lo + (hi - lo) * frac.
    """
    in_size = x.shape[axis]
    grid = np.arange(out_size, dtype=np.float32) * np.float32(in_size / out_size)
    lo = grid.astype(np.int64)
    hi = np.minimum(lo + 1, in_size - 1)
    low = _take(x, axis, lo)
    return low + (_take(x, axis, hi) - low) * _along(axis, x.ndim, grid - lo.astype(np.float32))


def _half_pixel_axis(x: jax.Array, axis: int, out_size: int) -> jax.Array:
    """torch's upsample_bilinear2d (align_corners=False, no antialias) along `axis`.

    source = (destination + 0.5) * in / out - 0.5, clamped at 0; torch evaluates it with a fused
    multiply-add, reproduced by one float64 evaluation rounded to float32. x0 * (1 - l) + x1 * l.
    """
    in_size = x.shape[axis]
    scale = np.float32(in_size / out_size)
    centres = (np.arange(out_size, dtype=np.float32) + np.float32(0.5)).astype(np.float64)
    source = np.maximum(np.float64(scale) * centres - 0.5, 0).astype(np.float32)
    lo = np.minimum(source.astype(np.int64), in_size - 1)
    hi = np.minimum(lo + 1, in_size - 1)
    weight = source - lo.astype(np.float32)
    return (_take(x, axis, lo) * _along(axis, x.ndim, np.float32(1) - weight)
            + _take(x, axis, hi) * _along(axis, x.ndim, weight))


def resize_bilinear_tf1(images: jax.Array, size: tuple[int, int]) -> jax.Array:
    """TensorFlow 1.x bilinear resize (align_corners=False) of NHWC float images, as torch-fidelity."""
    return _tf1_axis(_tf1_axis(images, 2, size[1]), 1, size[0])


def resize_bilinear_torch(images: jax.Array, size: tuple[int, int]) -> jax.Array:
    """torch `F.interpolate(mode="bilinear", align_corners=False)` of NHWC float images (no antialias)."""
    return _half_pixel_axis(_half_pixel_axis(images, 2, size[1]), 1, size[0])


def to_pixel_values(images: jax.Array) -> jax.Array:
    """float32 values in [0, 255]: uint8 as is, floats in [-1, 1] scaled (not rounded)."""
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"expected RGB images (N, H, W, 3), got shape {images.shape}")
    if images.dtype == jnp.uint8:
        return images.astype(jnp.float32)
    if not jnp.issubdtype(images.dtype, jnp.floating):
        raise TypeError(f"expected uint8 images in [0, 255] or float images in [-1, 1], got dtype {images.dtype}")
    return (images.astype(jnp.float32) + 1.0) * 127.5


def preprocess(images: jax.Array, preprocessing: str = "torch_fidelity",
               size: int = INPUT_SIZE) -> jax.Array:
    """uint8 or [-1, 1] images -> the network's (N, size, size, 3) input, as `preprocessing` does it."""
    pixels = to_pixel_values(images)
    if preprocessing == "torch_fidelity":
        return (resize_bilinear_tf1(pixels, (size, size)) - 128.0) / 128.0
    if preprocessing == "pytorch_fid":
        return 2.0 * resize_bilinear_torch(pixels / 255.0, (size, size)) - 1.0
    raise ValueError(f"unknown Inception preprocessing {preprocessing!r}; expected one of {PREPROCESSING}")


# ----------------------------------------------------------------------------------------------
# The network.


class FrozenBatchNorm(nn.Module):
    """Inference BatchNorm with the running statistics as parameters: x * alpha + beta, as torch's eval."""
    epsilon: float = BATCH_NORM_EPS
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        channels = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones_init(), (channels,), self.param_dtype)
        bias = self.param("bias", nn.initializers.zeros_init(), (channels,), self.param_dtype)
        mean = self.param("running_mean", nn.initializers.zeros_init(), (channels,), self.param_dtype)
        var = self.param("running_var", nn.initializers.ones_init(), (channels,), self.param_dtype)
        alpha = scale / jnp.sqrt(var + self.epsilon)
        return x * alpha.astype(x.dtype) + (bias - mean * alpha).astype(x.dtype)


class BasicConv2d(nn.Module):
    """Conv (no bias) -> BatchNorm (eps 1e-3) -> ReLU; `padding` is (rows, columns), symmetric like torch."""
    features: int
    kernel_size: tuple[int, int] = (1, 1)
    stride: int = 1
    padding: tuple[int, int] = (0, 0)
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        pad = [(self.padding[0], self.padding[0]), (self.padding[1], self.padding[1])]
        x = layers.conv(self.features, self.kernel_size, stride=self.stride, padding=pad, use_bias=False,
                        dtype=self.dtype, param_dtype=self.param_dtype, name="conv")(x)
        return nn.relu(FrozenBatchNorm(param_dtype=self.param_dtype, name="bn")(x))


class _Block(nn.Module):
    """Shared helpers of the Mixed blocks: a named BasicConv2d, and the two pools of the FID graph."""
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    def conv(self, name: str, features: int, kernel=(1, 1), stride: int = 1, padding=(0, 0)) -> BasicConv2d:
        kernel = (kernel, kernel) if isinstance(kernel, int) else tuple(kernel)
        padding = (padding, padding) if isinstance(padding, int) else tuple(padding)
        return BasicConv2d(features, kernel, stride, padding, self.dtype, self.param_dtype, name=name)


def _avg_pool_3x3_same(x: jax.Array) -> jax.Array:
    # TensorFlow's average pool ignores the zero padding (torch: count_include_pad=False).
    return nn.avg_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)), count_include_pad=False)


def _max_pool_3x3(x: jax.Array, stride: int, pad: int = 0) -> jax.Array:
    return nn.max_pool(x, (3, 3), strides=(stride, stride), padding=((pad, pad), (pad, pad)))


class InceptionA(_Block):
    """FIDInceptionA (Mixed_5b/c/d)."""
    pool_features: int = 32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        b1 = self.conv("branch1x1", 64)(x)
        b5 = self.conv("branch5x5_2", 64, 5, padding=2)(self.conv("branch5x5_1", 48)(x))
        b3 = self.conv("branch3x3dbl_1", 64)(x)
        b3 = self.conv("branch3x3dbl_3", 96, 3, padding=1)(self.conv("branch3x3dbl_2", 96, 3, padding=1)(b3))
        bp = self.conv("branch_pool", self.pool_features)(_avg_pool_3x3_same(x))
        return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(_Block):
    """InceptionB (Mixed_6a), unchanged from torchvision: the 35 -> 17 reduction."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        b3 = self.conv("branch3x3", 384, 3, stride=2)(x)
        bd = self.conv("branch3x3dbl_2", 96, 3, padding=1)(self.conv("branch3x3dbl_1", 64)(x))
        bd = self.conv("branch3x3dbl_3", 96, 3, stride=2)(bd)
        return jnp.concatenate([b3, bd, _max_pool_3x3(x, 2)], axis=-1)


class InceptionC(_Block):
    """FIDInceptionC (Mixed_6b..e): factorised 7x7 convolutions."""
    channels_7x7: int = 128

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c7 = self.channels_7x7
        b1 = self.conv("branch1x1", 192)(x)
        b7 = self.conv("branch7x7_1", c7)(x)
        b7 = self.conv("branch7x7_2", c7, (1, 7), padding=(0, 3))(b7)
        b7 = self.conv("branch7x7_3", 192, (7, 1), padding=(3, 0))(b7)
        bd = self.conv("branch7x7dbl_1", c7)(x)
        bd = self.conv("branch7x7dbl_2", c7, (7, 1), padding=(3, 0))(bd)
        bd = self.conv("branch7x7dbl_3", c7, (1, 7), padding=(0, 3))(bd)
        bd = self.conv("branch7x7dbl_4", c7, (7, 1), padding=(3, 0))(bd)
        bd = self.conv("branch7x7dbl_5", 192, (1, 7), padding=(0, 3))(bd)
        bp = self.conv("branch_pool", 192)(_avg_pool_3x3_same(x))
        return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(_Block):
    """InceptionD (Mixed_7a), unchanged from torchvision: the 17 -> 8 reduction."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        b3 = self.conv("branch3x3_2", 320, 3, stride=2)(self.conv("branch3x3_1", 192)(x))
        b7 = self.conv("branch7x7x3_1", 192)(x)
        b7 = self.conv("branch7x7x3_2", 192, (1, 7), padding=(0, 3))(b7)
        b7 = self.conv("branch7x7x3_3", 192, (7, 1), padding=(3, 0))(b7)
        b7 = self.conv("branch7x7x3_4", 192, 3, stride=2)(b7)
        return jnp.concatenate([b3, b7, _max_pool_3x3(x, 2)], axis=-1)


class InceptionE(_Block):
    """FIDInceptionE_1 (Mixed_7b, average pool branch) or FIDInceptionE_2 (Mixed_7c, `max_pool=True`)."""
    max_pool: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        b1 = self.conv("branch1x1", 320)(x)
        b3 = self.conv("branch3x3_1", 384)(x)
        b3 = jnp.concatenate([self.conv("branch3x3_2a", 384, (1, 3), padding=(0, 1))(b3),
                              self.conv("branch3x3_2b", 384, (3, 1), padding=(1, 0))(b3)], axis=-1)
        bd = self.conv("branch3x3dbl_2", 384, 3, padding=1)(self.conv("branch3x3dbl_1", 448)(x))
        bd = jnp.concatenate([self.conv("branch3x3dbl_3a", 384, (1, 3), padding=(0, 1))(bd),
                              self.conv("branch3x3dbl_3b", 384, (3, 1), padding=(1, 0))(bd)], axis=-1)
        pooled = _max_pool_3x3(x, 1, pad=1) if self.max_pool else _avg_pool_3x3_same(x)
        bp = self.conv("branch_pool", 192)(pooled)
        return jnp.concatenate([b1, b3, bd, bp], axis=-1)


class Classifier(nn.Module):
    """The 1008-way `fc` layer, returning the logits without and with its bias."""
    num_classes: int = NUM_CLASSES
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, pool3: jax.Array) -> tuple[jax.Array, jax.Array]:
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (pool3.shape[-1], self.num_classes),
                            self.param_dtype)
        bias = self.param("bias", nn.initializers.zeros_init(), (self.num_classes,), self.param_dtype)
        unbiased = jnp.dot(pool3, kernel.astype(jnp.float32), precision=jax.lax.Precision.HIGHEST)
        return unbiased, unbiased + bias.astype(jnp.float32)


class FIDInceptionV3(nn.Module):
    """images (N, H, W, 3), uint8 or [-1, 1] -> {"pool3", "logits_unbiased", "logits"}, all float32."""
    preprocessing: str = "torch_fidelity"
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, images: jax.Array) -> dict[str, jax.Array]:
        x = preprocess(images, self.preprocessing).astype(self.dtype)
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        x = BasicConv2d(32, (3, 3), stride=2, name="Conv2d_1a_3x3", **kw)(x)
        x = BasicConv2d(32, (3, 3), name="Conv2d_2a_3x3", **kw)(x)
        x = BasicConv2d(64, (3, 3), padding=(1, 1), name="Conv2d_2b_3x3", **kw)(x)
        x = _max_pool_3x3(x, 2)
        x = BasicConv2d(80, (1, 1), name="Conv2d_3b_1x1", **kw)(x)
        x = BasicConv2d(192, (3, 3), name="Conv2d_4a_3x3", **kw)(x)
        x = _max_pool_3x3(x, 2)
        x = InceptionA(pool_features=32, name="Mixed_5b", **kw)(x)
        x = InceptionA(pool_features=64, name="Mixed_5c", **kw)(x)
        x = InceptionA(pool_features=64, name="Mixed_5d", **kw)(x)
        x = InceptionB(name="Mixed_6a", **kw)(x)
        for name, channels in (("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160), ("Mixed_6e", 192)):
            x = InceptionC(channels_7x7=channels, name=name, **kw)(x)
        x = InceptionD(name="Mixed_7a", **kw)(x)
        x = InceptionE(max_pool=False, name="Mixed_7b", **kw)(x)
        x = InceptionE(max_pool=True, name="Mixed_7c", **kw)(x)
        pool3 = jnp.mean(x.astype(jnp.float32), axis=(1, 2))
        unbiased, logits = Classifier(param_dtype=self.param_dtype, name="fc")(pool3)
        return {"pool3": pool3, "logits_unbiased": unbiased, "logits": logits}


def example_inputs() -> tuple[jax.Array]:
    """A (1, 299, 299, 3) uint8 batch whose `init` creates every parameter."""
    return (jnp.zeros((1, INPUT_SIZE, INPUT_SIZE, 3), jnp.uint8),)
