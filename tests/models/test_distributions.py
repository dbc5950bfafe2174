"""DiagonalGaussian: the KL autoencoder's posterior."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ldm_jax.models.distributions import DiagonalGaussian


def moments(shape=(2, 3, 4, 6), seed=0):
    return jax.random.normal(jax.random.key(seed), shape) * 2.0


def test_splits_channels_and_clamps_logvar():
    m = moments().at[..., 3:].set(jnp.array([-50.0, 0.5, 40.0]))
    posterior = DiagonalGaussian.from_moments(m)
    np.testing.assert_array_equal(posterior.mean, m[..., :3])
    np.testing.assert_array_equal(posterior.logvar[0, 0, 0], [-30.0, 0.5, 20.0])
    np.testing.assert_allclose(posterior.std, np.exp(0.5 * np.asarray(posterior.logvar)), rtol=1e-6)
    np.testing.assert_allclose(posterior.var, np.exp(np.asarray(posterior.logvar)), rtol=1e-6)
    np.testing.assert_array_equal(posterior.mode(), posterior.mean)
    with pytest.raises(ValueError, match="even"):
        DiagonalGaussian.from_moments(jnp.zeros((1, 2, 2, 3)))


def test_sampling_uses_the_given_key_or_noise():
    posterior = DiagonalGaussian.from_moments(moments())
    sample = posterior.sample(jax.random.key(7))
    noise = jax.random.normal(jax.random.key(7), posterior.mean.shape)
    np.testing.assert_array_equal(sample, posterior.sample_from_noise(noise))
    assert not np.allclose(sample, posterior.sample(jax.random.key(8)))


def test_kl_and_nll():
    posterior = DiagonalGaussian.from_moments(moments())
    mean, logvar = np.asarray(posterior.mean, np.float64), np.asarray(posterior.logvar, np.float64)
    expected = 0.5 * np.sum(mean ** 2 + np.exp(logvar) - 1 - logvar, axis=(1, 2, 3))
    np.testing.assert_allclose(posterior.kl(), expected, rtol=1e-5)
    standard = DiagonalGaussian(jnp.zeros_like(posterior.mean), jnp.zeros_like(posterior.logvar))
    np.testing.assert_allclose(posterior.kl(standard), posterior.kl(), rtol=1e-5)
    np.testing.assert_allclose(posterior.kl(posterior), np.zeros(2), atol=1e-4)
    other = DiagonalGaussian.from_moments(moments(seed=1))
    assert (np.asarray(posterior.kl(other)) > 0).all()

    x = np.asarray(jax.random.normal(jax.random.key(3), posterior.mean.shape), np.float64)
    expected_nll = 0.5 * np.sum(np.log(2 * np.pi) + logvar + (x - mean) ** 2 / np.exp(logvar), axis=(1, 2, 3))
    np.testing.assert_allclose(posterior.nll(x), expected_nll, rtol=1e-5)
    np.testing.assert_allclose(posterior.nll(x, dims=(1, 2)).sum(-1), expected_nll, rtol=1e-5)


def test_deterministic_posterior_and_jit():
    posterior = DiagonalGaussian.from_moments(moments(), deterministic=True)
    np.testing.assert_array_equal(posterior.sample(jax.random.key(0)), posterior.mean)
    np.testing.assert_array_equal(posterior.kl(), np.zeros(2))
    # A pytree: crosses jit with `deterministic` kept static.
    kl = jax.jit(lambda p: p.kl())(DiagonalGaussian.from_moments(moments()))
    np.testing.assert_allclose(kl, DiagonalGaussian.from_moments(moments()).kl(), rtol=1e-6)
