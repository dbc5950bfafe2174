"""The diagonal Gaussian posterior of the KL autoencoder (reference `DiagonalGaussianDistribution`).

NHWC: the moments hold mean || logvar along the last (channel) axis.
"""
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

LOGVAR_MIN, LOGVAR_MAX = -30.0, 20.0


@flax.struct.dataclass
class DiagonalGaussian:
    """N(mean, exp(logvar)) per element; a pytree, so it can cross `jit` and `apply`.

    With `deterministic=True` the std and var are zero, `sample` returns the mean and
    `kl` / `nll` are zero, as in the reference.
    """
    mean: jax.Array
    logvar: jax.Array
    deterministic: bool = flax.struct.field(pytree_node=False, default=False)

    @classmethod
    def from_moments(cls, moments: jax.Array, deterministic: bool = False) -> "DiagonalGaussian":
        """Splits (..., 2C) moments into mean and logvar (clamped to [-30, 20]) along the last axis."""
        if moments.shape[-1] % 2:
            raise ValueError(f"moments need an even channel count (mean || logvar), got shape {moments.shape}")
        mean, logvar = jnp.split(moments, 2, axis=-1)
        return cls(mean, jnp.clip(logvar, LOGVAR_MIN, LOGVAR_MAX), deterministic)

    @property
    def std(self) -> jax.Array:
        return jnp.zeros_like(self.mean) if self.deterministic else jnp.exp(0.5 * self.logvar)

    @property
    def var(self) -> jax.Array:
        return jnp.zeros_like(self.mean) if self.deterministic else jnp.exp(self.logvar)

    def sample(self, rng: jax.Array) -> jax.Array:
        """mean + std * eps with eps ~ N(0, I) drawn from `rng`."""
        return self.sample_from_noise(jax.random.normal(rng, self.mean.shape, self.mean.dtype))

    def sample_from_noise(self, noise: jax.Array) -> jax.Array:
        """mean + std * noise, for a given standard-normal `noise` (e.g. one recorded elsewhere)."""
        return self.mean + self.std * noise

    def mode(self) -> jax.Array:
        return self.mean

    def kl(self, other: "DiagonalGaussian | None" = None) -> jax.Array:
        """KL(self || other), or against N(0, I) when `other` is None; summed over all but the batch axis."""
        axes = tuple(range(1, self.mean.ndim))
        if self.deterministic:
            return jnp.zeros(self.mean.shape[:1], self.mean.dtype)
        if other is None:
            terms = jnp.square(self.mean) + self.var - 1.0 - self.logvar
        else:
            terms = (jnp.square(self.mean - other.mean) / other.var + self.var / other.var
                     - 1.0 - self.logvar + other.logvar)
        return 0.5 * jnp.sum(terms, axis=axes)

    def nll(self, sample: jax.Array, dims: tuple[int, ...] = (1, 2, 3)) -> jax.Array:
        """Negative log-likelihood of `sample`, summed over `dims`."""
        if self.deterministic:
            return jnp.zeros((), self.mean.dtype)
        terms = np.log(2.0 * np.pi) + self.logvar + jnp.square(sample - self.mean) / self.var
        return 0.5 * jnp.sum(terms, axis=dims)
