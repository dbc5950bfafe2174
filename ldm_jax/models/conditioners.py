"""Non-text conditioning encoders of the LDM configs: ClassEmbedder and SpatialRescaler.

ClassEmbedder turns class labels into a one-token context (N, 1, embed_dim) for cross-attention.
SpatialRescaler downsamples a conditioning image `n_stages` times by `multiplier`, exactly as
`torch.nn.functional.interpolate(x, scale_factor=multiplier, mode=method)` does (no antialiasing,
align_corners=False, the given scale factor used for the coordinate mapping), then optionally maps
channels with a 1x1 conv (`channel_mapper`).
"""
import math
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ldm_jax.models import layers

Dtype = Any


class ClassEmbedder(nn.Module):
    """Class labels (N,) -> (N, 1, embed_dim) rows of the table `embedding` (n_classes rows).

    For classifier-free guidance the reference reserves the LAST row, n_classes - 1, as the null
    class (configure n_classes = number of real classes + 1). With `ucg_rate` > 0 and a `ucg_rng`
    given, each label is replaced by the null class with probability ucg_rate (training only).
    `key` names the batch entry holding the labels, as in the reference.
    """
    embed_dim: int
    n_classes: int = 1000
    key: str = "class"
    ucg_rate: float = 0.0
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, class_labels, *, ucg_rng: jax.Array | None = None):
        labels = jnp.asarray(class_labels)
        if labels.ndim != 1:
            raise ValueError(f"class_labels must be (batch,), got shape {labels.shape}")
        if ucg_rng is not None and self.ucg_rate > 0:
            dropped = jax.random.bernoulli(ucg_rng, self.ucg_rate, labels.shape)
            labels = jnp.where(dropped, self.n_classes - 1, labels)
        table = layers.embed(self.n_classes, self.embed_dim, dtype=self.dtype, param_dtype=self.param_dtype,
                             name="embedding")
        return table(labels[:, None])


def unconditional_class_labels(module: ClassEmbedder, batch_size: int) -> jax.Array:
    """The null-class labels for the unconditional branch of classifier-free guidance."""
    return jnp.full((batch_size,), module.n_classes - 1, jnp.int32)


def class_embedder_from_reference(params: Mapping, **module_kwargs) -> ClassEmbedder:
    """Builds a ClassEmbedder from reference params {embed_dim, n_classes, key, ucg_rate}."""
    params = dict(params)
    unknown = set(params) - {"embed_dim", "n_classes", "key", "ucg_rate"}
    if unknown:
        raise ValueError(f"unknown ClassEmbedder params: {sorted(unknown)}")
    if "embed_dim" not in params:
        raise ValueError("ClassEmbedder params lack the required 'embed_dim'")
    return ClassEmbedder(**params, **module_kwargs)


# ---------------------------------------------------------------- torch-compatible interpolation

# How many spatial axes each torch mode accepts; None: any.
_METHOD_RANKS = {"nearest": None, "area": None, "linear": 1, "bilinear": 2, "bicubic": 2, "trilinear": 3}
_CUBIC_A = -0.75  # torch's bicubic coefficient


def _output_size(in_size: int, scale_factor: float) -> int:
    return int(math.floor(in_size * scale_factor))


def _cubic_weights(t: float) -> list[float]:
    near = lambda x: ((_CUBIC_A + 2) * x - (_CUBIC_A + 3)) * x * x + 1
    far = lambda x: ((_CUBIC_A * x - 5 * _CUBIC_A) * x + 8 * _CUBIC_A) * x - 4 * _CUBIC_A
    return [far(t + 1), near(t), near(1 - t), far(2 - t)]


def interpolation_matrix(in_size: int, scale_factor: float, method: str) -> np.ndarray:
    """The (out, in) matrix of torch's 1-D `interpolate(scale_factor=...)` along one axis."""
    out_size = _output_size(in_size, scale_factor)
    if out_size < 1:
        raise ValueError(f"scale_factor {scale_factor} shrinks a size-{in_size} axis to nothing")
    if method not in _METHOD_RANKS:
        raise ValueError(f"unknown interpolation method {method!r}; expected one of {sorted(_METHOD_RANKS)}")
    matrix = np.zeros((out_size, in_size), np.float64)
    # torch maps coordinates with 1/scale_factor (not in/out) when a scale factor is given, in float32.
    f32 = np.float32
    scale = f32(1.0 / scale_factor)
    for o in range(out_size):
        if method == "nearest":
            if out_size == in_size:
                source = o
            elif out_size == 2 * in_size:
                source = o // 2
            else:
                source = min(int(np.floor(f32(o) * scale)), in_size - 1)
            matrix[o, source] = 1.0
        elif method == "area":
            # adaptive average pooling to out_size: window [floor(o*in/out), ceil((o+1)*in/out)).
            start = int(np.floor(f32(o * in_size) / f32(out_size)))
            end = int(np.ceil(f32((o + 1) * in_size) / f32(out_size)))
            matrix[o, start:end] = 1.0 / (end - start)
        elif method == "bicubic":
            source = scale * (f32(o) + f32(0.5)) - f32(0.5)
            i0 = int(np.floor(source))
            for offset, weight in zip(range(-1, 3), _cubic_weights(float(source - f32(i0)))):
                matrix[o, min(max(i0 + offset, 0), in_size - 1)] += weight
        else:  # linear, bilinear, trilinear: separable linear interpolation
            source = max(scale * (f32(o) + f32(0.5)) - f32(0.5), f32(0))
            i0 = min(int(np.floor(source)), in_size - 1)
            frac = float(min(max(source - f32(i0), f32(0)), f32(1)))
            i1 = i0 + (1 if i0 < in_size - 1 else 0)
            matrix[o, i0] += 1.0 - frac
            matrix[o, i1] += frac
    return matrix.astype(np.float32)


def interpolate(x: jax.Array, scale_factor: float, method: str) -> jax.Array:
    """torch.nn.functional.interpolate(x, scale_factor, mode=method) on channels-last x (N, *spatial, C)."""
    if method not in _METHOD_RANKS:
        raise ValueError(f"unknown interpolation method {method!r}; expected one of {sorted(_METHOD_RANKS)}")
    spatial = x.ndim - 2
    if _METHOD_RANKS[method] not in (None, spatial):
        raise ValueError(f"method {method!r} needs {_METHOD_RANKS[method]} spatial axes, input has shape {x.shape}")
    for axis in range(1, x.ndim - 1):
        matrix = jnp.asarray(interpolation_matrix(x.shape[axis], scale_factor, method), x.dtype)
        x = jnp.moveaxis(jnp.tensordot(matrix, x, axes=([1], [axis]), precision="highest"), 0, axis)
    return x


class SpatialRescaler(nn.Module):
    """Reference SpatialRescaler on NHWC input: `n_stages` resizes by `multiplier`, then an optional 1x1 conv."""
    n_stages: int = 1
    method: str = "bilinear"
    multiplier: float = 0.5
    in_channels: int = 3
    out_channels: int | None = None
    bias: bool = False
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        if self.n_stages < 0:
            raise ValueError(f"n_stages must be >= 0, got {self.n_stages}")
        for _ in range(self.n_stages):
            x = interpolate(x, self.multiplier, self.method)
        if self.out_channels is None:
            return x
        if x.shape[-1] != self.in_channels:
            raise ValueError(f"SpatialRescaler expects {self.in_channels} input channels, got shape {x.shape}")
        mapper = layers.conv(self.out_channels, 1, use_bias=self.bias, dtype=self.dtype,
                             param_dtype=self.param_dtype, name="channel_mapper")
        return mapper(x)


def spatial_rescaler_from_reference(params: Mapping, **module_kwargs) -> SpatialRescaler:
    """Builds a SpatialRescaler from reference params (n_stages, method, multiplier, in_channels,
    out_channels, bias)."""
    params = dict(params)
    unknown = set(params) - {"n_stages", "method", "multiplier", "in_channels", "out_channels", "bias"}
    if unknown:
        raise ValueError(f"unknown SpatialRescaler params: {sorted(unknown)}")
    method = params.get("method", "bilinear")
    if method not in _METHOD_RANKS:
        raise ValueError(f"SpatialRescaler method {method!r} is not one of {sorted(_METHOD_RANKS)}")
    return SpatialRescaler(**params, **module_kwargs)


def class_embedder_example_inputs(module: ClassEmbedder) -> tuple:
    """One class label."""
    return (np.zeros((1,), np.int32),)


def spatial_rescaler_example_inputs(module: SpatialRescaler) -> tuple:
    """One small NHWC image that survives every downsampling stage."""
    side = max(2, int(math.ceil(2 / module.multiplier ** module.n_stages))) if module.multiplier < 1 else 2
    return (np.zeros((1, side, side, module.in_channels), np.float32),)


def example_inputs(module: nn.Module) -> tuple:
    """Example inputs for either conditioner of this file."""
    if isinstance(module, ClassEmbedder):
        return class_embedder_example_inputs(module)
    if isinstance(module, SpatialRescaler):
        return spatial_rescaler_example_inputs(module)
    raise TypeError(f"no example inputs for {type(module).__name__}")
