"""The vector quantiser of the VQ autoencoder (taming-transformers `VectorQuantizer2`), NHWC.

Nearest-codebook lookup with the straight-through estimator, the codebook/commitment loss,
and the optional `remap` of indices onto a subset of "used" codes.
"""
from typing import Any, NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ldm_jax.models import layers

Dtype = Any


class QuantizerInfo(NamedTuple):
    """What the reference returns as `info` (its `min_encodings` is always None and is left out)."""
    perplexity: jax.Array
    indices: jax.Array


class VectorQuantizer(nn.Module):
    """Maps each latent vector (last axis, size `e_dim`) to its nearest of `n_e` codebook rows.

    `remap` holds the used code indices (the reference loads them from a .npy file); indices
    are then reported in [0, len(remap)), codes outside it as `unknown_index`: "random" (a
    uniform draw, needs `rng`), "extra" (the value len(remap)) or a fixed int.
    `legacy=True` keeps the reference's swapped loss weighting: beta weights the codebook term.
    """
    n_e: int
    e_dim: int
    beta: float = 0.25
    remap: tuple[int, ...] | None = None
    unknown_index: str | int = "random"
    sane_index_shape: bool = False
    legacy: bool = True
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    def setup(self):
        if isinstance(self.unknown_index, str) and self.unknown_index not in ("random", "extra"):
            raise ValueError(f"unknown_index must be 'random', 'extra' or an int, got {self.unknown_index!r}")
        self.embedding = layers.embed(self.n_e, self.e_dim, dtype=self.dtype, param_dtype=self.param_dtype)

    @property
    def re_embed(self) -> int:
        """How many distinct index values the quantiser reports (n_e without remap)."""
        if self.remap is None:
            return self.n_e
        return len(self.remap) + (1 if self.unknown_index == "extra" else 0)

    def __call__(self, z: jax.Array, rng: jax.Array | None = None):
        """Returns (z_q, loss, QuantizerInfo(perplexity, indices)) for z of shape (N, H, W, e_dim).

        z_q = z + stop_gradient(e - z); indices are flat (N*H*W,) or, with `sane_index_shape`,
        (N, H, W); `rng` is needed only for `remap` with unknown_index="random".
        """
        if z.shape[-1] != self.e_dim:
            raise ValueError(f"latent has {z.shape[-1]} channels, the codebook has e_dim={self.e_dim}")
        codes, indices = self.nearest(z)
        loss = self.loss(z, codes)
        z_q = z + jax.lax.stop_gradient(codes - z)
        perplexity = codebook_perplexity(indices, self.n_e)
        if self.remap is not None:
            indices = self.remap_to_used(indices, rng)
        if not self.sane_index_shape:
            indices = indices.reshape(-1)
        return z_q, loss, QuantizerInfo(perplexity, indices)

    def nearest(self, z: jax.Array) -> tuple[jax.Array, jax.Array]:
        """The nearest codebook rows (no straight-through) and their raw indices, shaped z.shape[:-1]."""
        codebook = self.embedding.embedding.astype(jnp.float32)
        flat = z.reshape(-1, self.e_dim).astype(jnp.float32)
        # Same expansion as the reference, ||z||^2 + ||e||^2 - 2 z.e, at full float32 precision,
        # so that ties are broken (and indices chosen) exactly as there.
        distances = (jnp.sum(jnp.square(flat), axis=1, keepdims=True) + jnp.sum(jnp.square(codebook), axis=1)
                     - 2.0 * jnp.dot(flat, codebook.T, precision=jax.lax.Precision.HIGHEST))
        indices = jnp.argmin(distances, axis=1).reshape(z.shape[:-1])
        return self.embedding(indices).astype(z.dtype), indices

    def straight_through(self, z: jax.Array) -> jax.Array:
        """Only the quantised latent, z + stop_gradient(e - z): no loss, indices or rng needed."""
        codes, _ = self.nearest(z)
        return z + jax.lax.stop_gradient(codes - z)

    def loss(self, z: jax.Array, z_q: jax.Array) -> jax.Array:
        """Codebook + commitment loss; legacy: mean((sg(e)-z)^2) + beta*mean((e-sg(z))^2)."""
        z, z_q = z.astype(jnp.float32), z_q.astype(jnp.float32)
        commitment = jnp.mean(jnp.square(jax.lax.stop_gradient(z_q) - z))
        codebook = jnp.mean(jnp.square(z_q - jax.lax.stop_gradient(z)))
        if self.legacy:
            return commitment + self.beta * codebook
        return self.beta * commitment + codebook

    def get_codebook_entry(self, indices: jax.Array, shape: Sequence[int] | None = None) -> jax.Array:
        """Codebook rows for (remapped, if `remap`) `indices`, reshaped to `shape` = (N, H, W, e_dim)."""
        if self.remap is not None:
            indices = self.unmap_to_all(indices)
        z_q = self.embedding(indices.reshape(-1))
        return z_q.reshape(tuple(shape)) if shape is not None else z_q.reshape(*indices.shape, self.e_dim)

    def remap_to_used(self, indices: jax.Array, rng: jax.Array | None = None) -> jax.Array:
        """Raw codebook indices -> positions in `remap`; codes not in it become `unknown_index`."""
        used = jnp.asarray(self.remap, dtype=indices.dtype)
        match = indices[..., None] == used
        new = jnp.argmax(match, axis=-1).astype(indices.dtype)
        unknown = ~jnp.any(match, axis=-1)
        if self.unknown_index == "random":
            if rng is None:
                raise ValueError("remap with unknown_index='random' needs an rng to draw unknown indices")
            fill = jax.random.randint(rng, indices.shape, 0, self.re_embed, dtype=indices.dtype)
        elif self.unknown_index == "extra":
            fill = jnp.full_like(indices, len(self.remap))
        else:
            fill = jnp.full_like(indices, int(self.unknown_index))
        return jnp.where(unknown, fill, new)

    def unmap_to_all(self, indices: jax.Array) -> jax.Array:
        """Positions in `remap` -> raw codebook indices; the "extra" index reads as position 0."""
        used = jnp.asarray(self.remap, dtype=indices.dtype)
        if self.re_embed > len(self.remap):
            indices = jnp.where(indices >= len(self.remap), 0, indices)
        return used[indices]


def codebook_perplexity(indices: jax.Array, n_e: int) -> jax.Array:
    """exp(entropy) of the code usage: how many codes are effectively in use (1 to n_e)."""
    usage = jnp.mean(jax.nn.one_hot(indices.reshape(-1), n_e, dtype=jnp.float32), axis=0)
    return jnp.exp(-jnp.sum(usage * jnp.log(usage + 1e-10)))


def load_remap(remap: str | Sequence[int] | np.ndarray | None) -> tuple[int, ...] | None:
    """The reference `remap` (a path to a .npy of used indices, or the indices) as a hashable tuple."""
    if remap is None:
        return None
    used = np.load(remap) if isinstance(remap, str) else np.asarray(remap)
    if used.ndim != 1 or not np.issubdtype(used.dtype, np.integer):
        raise ValueError(f"remap must hold a 1-D array of integer code indices, got {used.dtype} {used.shape}")
    return tuple(int(i) for i in used)
