"""Shared layers: GroupNorm (per-channel-first reductions) and the erf GELU against plain formulas."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ldm_jax.models import layers


def _group_norm_reference(x, scale, bias, groups, eps):
    x = np.asarray(x, np.float64)
    grouped = x.reshape(x.shape[0], -1, groups, x.shape[-1] // groups)
    mean = grouped.mean(axis=(1, 3), keepdims=True)
    var = grouped.var(axis=(1, 3), keepdims=True)
    return ((grouped - mean) / np.sqrt(var + eps)).reshape(x.shape) * scale + bias


@pytest.mark.parametrize("shape", [(2, 5, 6, 64), (3, 7, 32)])  # images and token sequences
def test_group_norm_matches_the_definition(shape):
    rng = np.random.default_rng(0)
    x = jnp.asarray(4 * rng.standard_normal(shape) + 2, jnp.float32)  # an offset mean, as after convs
    scale, bias = rng.standard_normal(shape[-1]), rng.standard_normal(shape[-1])
    norm = layers.group_norm(8, 1e-5)
    out = norm.apply({"params": {"scale": jnp.asarray(scale, jnp.float32), "bias": jnp.asarray(bias, jnp.float32)}}, x)
    np.testing.assert_allclose(out, _group_norm_reference(x, scale, bias, 8, 1e-5), atol=2e-5)


def test_group_norm_keeps_the_compute_dtype_and_rejects_uneven_groups():
    x = jnp.ones((1, 4, 4, 64), jnp.bfloat16)
    variables = layers.group_norm(32, dtype=jnp.bfloat16).init(jax.random.key(0), x)
    assert layers.group_norm(32, dtype=jnp.bfloat16).apply(variables, x).dtype == jnp.bfloat16
    with pytest.raises(ValueError, match="48 channels do not split into 32 groups"):
        layers.group_norm(32).init(jax.random.key(0), jnp.ones((1, 4, 4, 48)))


def test_gelu_is_the_exact_erf_form():
    x = jnp.linspace(-8.0, 8.0, 101)
    np.testing.assert_allclose(layers.gelu(x), jax.nn.gelu(x, approximate=False), atol=1e-6)
