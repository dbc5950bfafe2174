"""Improved precision and recall (Kynkäänniemi et al. 2019), and the VGG-16 fc2 features they were defined on.

Each feature set approximates its manifold by the union of balls around its samples, a ball's
radius being the distance to the sample's k-th nearest neighbour in its own set (k = 3):

    precision = the fraction of fake samples inside the real manifold
    recall    = the fraction of real samples inside the fake manifold

As torch-fidelity 0.4.0 computes it: Euclidean distances, radius = the (k+1)-th smallest distance
to the own set (the sample itself counts, at distance 0), inside means `distance <= radius` for some
ball. Distances are taken on the device in blocks of `block_size` rows, so two 50k sets fit.

The feature network of the paper that defined the metric is VGG-16's fc2 layer (4096 values, taken
before or after its ReLU) on 224 x 224 inputs; `VGG16Fc2` is torch-fidelity's `vgg16` extractor
(TF1 bilinear resize of [0, 255] pixels, ImageNet normalisation, torchvision's VGG-16). Its
convolutions are LPIPS's (`ldm_jax.models.lpips.vgg16_taps`), with torchvision's names, so the
weights come from torchvision's `vgg16-397923af.pth` by `vgg16_params_from_torch`. (ADM's
evaluator, which the LDM paper used for its precision/recall, feeds Inception pool3 features
instead: pass those to `precision_recall` to reproduce the paper's tables.)
"""
import functools
import os
from typing import Any, Mapping, Sequence

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ldm_jax.convert import checkpoint_files, state_dict
from ldm_jax.models import inception, layers, lpips
from ldm_jax.models.abstract import abstract_module_params

Dtype = Any

NEIGHBOURHOOD = 3
VGG16_INPUT_SIZE = 224
VGG16_HIDDEN = 4096
# torchvision's ImageNet normalisation, in [0, 255] pixel units as torch-fidelity applies it.
IMAGENET_MEAN = 255 * np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = 255 * np.array([0.229, 0.224, 0.225], np.float32)
VGG16_SOURCE = "torchvision VGG16 state dict"
# classifier.6 is the 1000-way ImageNet head, after the features taken here.
_IGNORED_PREFIX = "classifier.6."


# ----------------------------------------------------------------------------------------------
# The metric.


def _squared_distances(rows: jax.Array, points: jax.Array) -> jax.Array:
    cross = jnp.dot(rows, points.T, precision=jax.lax.Precision.HIGHEST)
    squared = jnp.sum(rows * rows, axis=1)[:, None] - 2 * cross + jnp.sum(points * points, axis=1)[None, :]
    return jnp.maximum(squared, 0.0)


@functools.partial(jax.jit, static_argnames="k")
def _radii_block(rows: jax.Array, points: jax.Array, k: int) -> jax.Array:
    # The (k+1)-th smallest squared distance: the sample itself is the first, at 0.
    return -jax.lax.top_k(-_squared_distances(rows, points), k + 1)[0][:, k]


@jax.jit
def _inside_block(rows: jax.Array, points: jax.Array, squared_radii: jax.Array) -> jax.Array:
    return jnp.any(_squared_distances(rows, points) <= squared_radii[None, :], axis=1)


def _blockwise(fn, rows: np.ndarray, block_size: int, *args) -> np.ndarray:
    """fn over `rows` in blocks of one shape (the last one zero-padded), so it compiles once."""
    size = min(block_size, len(rows))
    out = []
    for start in range(0, len(rows), size):
        block = rows[start:start + size]
        padded = np.concatenate([block, np.zeros((size - len(block), rows.shape[1]), rows.dtype)])
        out.append(np.asarray(fn(jnp.asarray(padded), *args))[:len(block)])
    return np.concatenate(out)


def _as_features(name: str, features) -> np.ndarray:
    features = np.asarray(features, np.float32)
    if features.ndim != 2:
        raise ValueError(f"{name} must be (N, D), got shape {features.shape}")
    if not np.isfinite(features).all():
        raise ValueError(f"{name} hold NaN or infinite values")
    return features


def _squared_radii(features: np.ndarray, k: int, block_size: int) -> np.ndarray:
    if len(features) <= k:
        raise ValueError(f"a k={k} neighbourhood needs more than {k} samples, got {len(features)}")
    return _blockwise(functools.partial(_radii_block, k=k), features, block_size, jnp.asarray(features))


def _fraction_inside(queries: np.ndarray, points: np.ndarray, squared_radii: np.ndarray, block_size: int) -> float:
    inside = _blockwise(_inside_block, queries, block_size, jnp.asarray(points), jnp.asarray(squared_radii))
    return float(np.mean(inside))


def manifold_radii(features, k: int = NEIGHBOURHOOD, block_size: int = 2048) -> np.ndarray:
    """The distance of each sample (N, D) to its k-th nearest neighbour in the same set, (N,)."""
    return np.sqrt(_squared_radii(_as_features("features", features), k, block_size))


def fraction_inside(queries, points, radii, block_size: int = 2048) -> float:
    """The fraction of `queries` within `radii` (Euclidean, inclusive) of at least one of `points`."""
    queries, points = _as_features("queries", queries), _as_features("points", points)
    radii = np.asarray(radii, np.float32)
    if queries.shape[1] != points.shape[1] or radii.shape != (len(points),):
        raise ValueError(f"queries {queries.shape}, points {points.shape} and radii {radii.shape} do not fit: "
                         "expected (Q, D), (N, D) and (N,)")
    return _fraction_inside(queries, points, np.square(radii), block_size)


def precision_recall(real_features, fake_features, k: int = NEIGHBOURHOOD,
                     block_size: int = 2048) -> tuple[float, float]:
    """(precision, recall) of fake features (M, D) against real features (N, D), k-NN manifolds."""
    real = _as_features("real_features", real_features)
    fake = _as_features("fake_features", fake_features)
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"real and fake features differ in width: {real.shape} vs {fake.shape}")
    # Squared distances throughout: no square root and back between the radii and the comparisons.
    precision = _fraction_inside(fake, real, _squared_radii(real, k, block_size), block_size)
    recall = _fraction_inside(real, fake, _squared_radii(fake, k, block_size), block_size)
    return precision, recall


# ----------------------------------------------------------------------------------------------
# The VGG-16 fc2 feature network and its weights.


class VGG16Fc2(nn.Module):
    """images (N, H, W, 3), uint8 or [-1, 1] -> {"fc2", "fc2_relu"} (N, hidden), as torch-fidelity's `vgg16`.

    `widths` and `hidden` other than VGG-16's exist for small test networks only.
    """
    widths: Sequence[int] = lpips.VGG16_WIDTHS
    hidden: int = VGG16_HIDDEN
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, images: jax.Array) -> dict[str, jax.Array]:
        pixels = inception.to_pixel_values(images)
        x = inception.resize_bilinear_tf1(pixels, (VGG16_INPUT_SIZE, VGG16_INPUT_SIZE))
        x = ((x - IMAGENET_MEAN) / IMAGENET_STD).astype(self.dtype)
        h = lpips.vgg16_taps(x, self.widths, self.dtype, self.param_dtype)[-1]
        h = nn.max_pool(h, (2, 2), strides=(2, 2))  # features.30; torchvision's 7x7 adaptive pool is then a no-op
        # Flattened in (H, W, C) order; the converter reorders classifier.0's columns from torch's (C, H, W).
        h = h.reshape(h.shape[0], -1)
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        h = nn.relu(layers.dense(self.hidden, name=layers.indexed("classifier", 0), **kw)(h))
        fc2 = layers.dense(self.hidden, name=layers.indexed("classifier", 3), **kw)(h).astype(jnp.float32)
        return {"fc2": fc2, "fc2_relu": nn.relu(fc2)}


def abstract_vgg16_params(module: VGG16Fc2 | None = None) -> dict:
    """The VGG16Fc2 parameter tree as ShapeDtypeStructs (nothing allocated)."""
    return abstract_module_params(module or VGG16Fc2(), jnp.zeros((1, 32, 32, 3), jnp.uint8))


def _fc1_channels(params_like: Mapping) -> int:
    return params_like[layers.indexed("features", lpips.VGG16_CONV_INDICES[-1][-1])]["kernel"].shape[-1]


def _reorder_fc1(weight: np.ndarray, channels: int, to_torch: bool) -> np.ndarray:
    """classifier.0.weight (out, in) between torch's (C, H, W) input order and our (H, W, C)."""
    out_features, in_features = weight.shape
    side = int(round(np.sqrt(in_features // channels)))
    if channels * side * side != in_features:
        raise state_dict.CheckpointMismatchError(
            f"classifier.0.weight has {in_features} inputs, not {channels} channels x a square feature map")
    if to_torch:
        return weight.reshape(out_features, side, side, channels).transpose(0, 3, 1, 2).reshape(out_features, -1)
    return weight.reshape(out_features, channels, side, side).transpose(0, 2, 3, 1).reshape(out_features, -1)


def vgg16_params_from_torch(torch_state_dict: Mapping[str, np.ndarray], params_like: Mapping | None = None) -> dict:
    """VGG16Fc2 params from torchvision's `vgg16().state_dict()` (`classifier.6` is ignored).

    Raises `CheckpointMismatchError` naming every missing, unexpected or misshapen key.
    """
    params_like = params_like or abstract_vgg16_params()
    arrays = {key: np.asarray(value) for key, value in torch_state_dict.items()}
    if "classifier.0.weight" in arrays and arrays["classifier.0.weight"].ndim == 2:
        arrays["classifier.0.weight"] = _reorder_fc1(arrays["classifier.0.weight"], _fc1_channels(params_like),
                                                     to_torch=False)
    ignored = [key for key in arrays if key.startswith(_IGNORED_PREFIX)]
    return state_dict.load_params(params_like, arrays, ignored=ignored, source=VGG16_SOURCE)


def vgg16_params_to_torch(params: Mapping) -> dict[str, np.ndarray]:
    """torchvision's VGG-16 state dict (without the `classifier.6` head) of VGG16Fc2 params."""
    params = flax.core.unfreeze(params)
    out = state_dict.to_state_dict(params)
    out["classifier.0.weight"] = _reorder_fc1(out["classifier.0.weight"], _fc1_channels(params), to_torch=True)
    return out


def load_vgg16_params(path: str | os.PathLike) -> dict:
    """VGG16Fc2 params from torchvision's `vgg16-397923af.pth` (or its `.safetensors` copy)."""
    weights = checkpoint_files.read_state_dict(path)
    try:
        return vgg16_params_from_torch(weights)
    except state_dict.CheckpointMismatchError as error:
        raise state_dict.CheckpointMismatchError(f"VGG16 weights {path}: {error}") from error
