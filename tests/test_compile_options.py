"""The forward-only compiler options: CPU only, accepted by XLA:CPU, and the same results."""
import jax
import jax.numpy as jnp
import numpy as np

from ldm_jax import compile_options
from ldm_jax.diffusion.sampling import LatentSampler
from ldm_jax.diffusion.schedule import DiffusionSchedule


def test_only_the_cpu_gets_options():
    assert compile_options.forward_only("cpu") == {"xla_cpu_use_fusion_emitters": False}
    assert compile_options.forward_only("gpu") is None
    assert compile_options.forward_only("tpu") is None
    assert compile_options.forward_only() == compile_options.forward_only(jax.default_backend())


def _block(x, w):
    """Reductions, transcendental and elementwise fusions around a matmul, as a UNet block has them."""
    mean = jnp.mean(x, axis=-1, keepdims=True)
    h = (x - mean) * jax.lax.rsqrt(jnp.var(x, axis=-1, keepdims=True) + 1e-5)
    h = jax.nn.softmax(h @ w, axis=-1)
    return jax.nn.gelu(h, approximate=False) + jnp.tanh(x)


def test_options_compile_to_the_same_results():
    x = jax.random.normal(jax.random.key(0), (64, 32))
    w = jax.random.normal(jax.random.key(1), (32, 32))
    default = jax.jit(_block)(x, w)
    forward_only = jax.jit(_block, compiler_options=compile_options.forward_only("cpu"))(x, w)
    np.testing.assert_allclose(forward_only, default, rtol=1e-6, atol=1e-6)


def test_a_sampler_with_the_options_samples_as_one_without():
    schedule = DiffusionSchedule.create("linear", 1000, 0.00085, 0.012)
    model_fn = lambda params, x, t, cond: params * x  # noqa: E731
    x_T = jnp.ones((1, 2, 2, 1))
    options = LatentSampler(model_fn, schedule, jit_kwargs={"compiler_options": compile_options.forward_only("cpu")})
    plain = LatentSampler(model_fn, schedule)
    np.testing.assert_allclose(options(jnp.float32(0.5), x_T, None, steps=4, progress=False),
                               plain(jnp.float32(0.5), x_T, None, steps=4, progress=False), rtol=1e-6)
