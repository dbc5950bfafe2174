"""A small classifier trained on the dataset at hand, whose pooled features stand in for Inception's.

FID needs a feature network that knows the data; the FID Inception's weights cannot be downloaded
here, and on 32x32 coloured shapes a net trained on those shapes separates good samples from bad
ones better anyway. `train_feature_net` fits a four-level CNN to the class labels in minutes on a
CPU; `feature_fn` returns its global-average-pooled features ("features", the FID space) and
logits, sharded over the local devices like `features.inception_feature_fn`.

    params, history = train_feature_net(batches, num_classes=12, steps=400, seed=0)
    fn = feature_fn(params, num_classes=12, batch_size=64)
    fn(images)["features"]          # (n, 128) for images (n, H, W, 3) in [-1, 1] or uint8
"""
from typing import Iterator, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from ldm_jax.evaluation import features as features_lib


class SmallClassifier(nn.Module):
    """Conv-GroupNorm-SiLU blocks, each level halving the resolution: {"features", "logits"}."""
    num_classes: int
    widths: Sequence[int] = (32, 64, 128)

    @nn.compact
    def __call__(self, images: jax.Array) -> dict[str, jax.Array]:
        x = as_signed(images)
        for width in self.widths:
            x = nn.silu(nn.GroupNorm(num_groups=8)(nn.Conv(width, (3, 3))(x)))
            x = nn.silu(nn.GroupNorm(num_groups=8)(nn.Conv(width, (3, 3), strides=2)(x)))
        pooled = jnp.mean(x, axis=(1, 2))
        return {"features": pooled, "logits": nn.Dense(self.num_classes)(pooled)}


def as_signed(images) -> jax.Array:
    """uint8 [0, 255] or float [-1, 1] images -> float32 [-1, 1]."""
    images = jnp.asarray(images)
    if images.dtype == jnp.uint8:
        return images.astype(jnp.float32) / 127.5 - 1.0
    return images.astype(jnp.float32)


def train_feature_net(batches: Iterator[Mapping[str, np.ndarray]], *, num_classes: int, steps: int, seed: int,
                      learning_rate: float = 2.0e-3, progress=None) -> tuple[dict, list[float]]:
    """Fits `SmallClassifier` to batches {"image", "label"}; returns (params, per-step losses).

    `progress`, if given, is called once per step (e.g. a tqdm bar's `update`).
    """
    module = SmallClassifier(num_classes)
    first = next(batches)
    params = module.init(jax.random.key(seed), as_signed(first["image"][:1]))["params"]
    tx = optax.adam(optax.cosine_decay_schedule(learning_rate, steps))
    opt_state = tx.init(params)

    @jax.jit
    def step(params, opt_state, images, labels):
        def loss_fn(params):
            logits = module.apply({"params": params}, images)["logits"]
            return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    losses, batch = [], first
    for index in range(steps):
        if index:
            batch = next(batches)
        labels = np.asarray(batch["label"])
        if labels.min() < 0 or labels.max() >= num_classes:
            raise ValueError(f"feature-net labels must lie in [0, {num_classes}), got [{labels.min()}, {labels.max()}]")
        params, opt_state, loss = step(params, opt_state, as_signed(batch["image"]), labels)
        losses.append(float(loss))
        if progress is not None:
            progress(1)
    return params, losses


def feature_fn(params, *, num_classes: int, batch_size: int) -> features_lib.FeatureFn:
    """images -> {"features": (n, C), "logits": (n, num_classes)}, sharded over the local devices."""
    module = SmallClassifier(num_classes)
    return features_lib.sharded_feature_fn(lambda variables, images: module.apply(variables, images),
                                           {"params": params}, batch_size)


def compute_features(fn: features_lib.FeatureFn, images: np.ndarray, batch_size: int) -> dict[str, np.ndarray]:
    """`fn` over `images` in batches of `batch_size`, concatenated."""
    parts = [fn(images[start:start + batch_size]) for start in range(0, len(images), batch_size)]
    return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}
