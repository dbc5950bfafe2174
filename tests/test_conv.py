"""The CPU convolution (patch matmuls) against XLA's convolution: values and gradients, every plan."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from ldm_jax.models import conv

CASES = [  # (input NHWC, kernel HWIO, strides, padding)
    ((2, 2, 2, 8), (3, 3, 8, 4), (1, 1), "SAME"),
    ((2, 9, 7, 3), (3, 3, 3, 5), (1, 1), ((1, 1), (1, 1))),
    ((1, 8, 8, 4), (3, 3, 4, 6), (2, 2), ((0, 1), (0, 1))),  # the autoencoder's downsample
    ((1, 9, 9, 4), (4, 4, 4, 2), (2, 2), ((1, 1), (1, 1))),  # the discriminator's patch conv
    ((2, 5, 5, 6), (1, 1, 6, 3), (1, 1), "VALID"),
]


def xla_conv(x, kernel, strides, padding):
    return lax.conv_general_dilated(x, kernel, strides, padding, dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                    precision="highest")


def ours(x, kernel, strides, padding):
    return conv.conv_general_dilated(x, kernel, strides, padding, dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                     precision="highest")


def loss(fn, strides, padding):
    return lambda x, kernel: jnp.sum(jnp.sin(fn(x, kernel, strides, padding)))


def compiled(fn, *args) -> str:
    """The optimised HLO's instructions (`dot(`, `convolution(`, ...), without metadata."""
    return "\n".join(line.split(", metadata=")[0] for line in jax.jit(fn).lower(*args).compile().as_text().splitlines())


@pytest.mark.parametrize("forward_max_pixels,budget,forward_op,backward_op",
                         [(10**9, 2**40, "dot", "dot"), (0, 2**40, "convolution", "dot"),
                          (0, 0, "convolution", "convolution")])
@pytest.mark.parametrize("x_shape,kernel_shape,strides,padding", CASES)
def test_matches_xla_convolution(monkeypatch, forward_max_pixels, budget, forward_op, backward_op,
                                 x_shape, kernel_shape, strides, padding):
    monkeypatch.setattr(conv, "MATMUL_MIN_KERNEL_SIZE", 0)
    monkeypatch.setattr(conv, "MATMUL_FORWARD_MAX_PIXELS", forward_max_pixels)
    monkeypatch.setattr(conv, "PATCH_BUDGET_BYTES", budget)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal(x_shape), jnp.float32)
    kernel = jnp.asarray(rng.standard_normal(kernel_shape), jnp.float32)
    np.testing.assert_allclose(ours(x, kernel, strides, padding), xla_conv(x, kernel, strides, padding),
                               rtol=1e-5, atol=1e-5)
    grad = jax.grad(loss(ours, strides, padding), argnums=(0, 1))
    for g, w in zip(grad(x, kernel), jax.grad(loss(xla_conv, strides, padding), argnums=(0, 1))(x, kernel)):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)

    if kernel_shape[:2] == (1, 1):
        return  # XLA itself turns a 1x1 convolution into a dot
    assert f" {forward_op}(" in compiled(lambda x, k: ours(x, k, strides, padding), x, kernel)
    backward = compiled(lambda x, k: jax.vjp(lambda x, k: ours(x, k, strides, padding), x, k)[1](
        jnp.ones(xla_conv(x, kernel, strides, padding).shape)), x, kernel)
    other_op = {"dot": "convolution", "convolution": "dot"}[backward_op]
    assert f" {backward_op}(" in backward and f" {other_op}(" not in backward


def test_plan_follows_size_and_budget():
    pads = ((1, 1), (1, 1))
    assert conv._plan((2, 8, 8, 1280), (3, 3, 1280, 1280), (1, 1), pads, 4) == (True, True)
    assert conv._plan((2, 64, 64, 320), (3, 3, 320, 320), (1, 1), pads, 4) == (False, True)
    assert conv._plan((4, 256, 256, 128), (3, 3, 128, 128), (1, 1), pads, 4) == (False, False)


def test_narrow_convolution_stays_xla():
    x, kernel = jnp.ones((1, 6, 6, 64)), jnp.ones((3, 3, 64, 64))
    assert " convolution(" in compiled(lambda x, k: ours(x, k, (1, 1), "SAME"), x, kernel)


def test_grouped_convolution_stays_xla(monkeypatch):
    monkeypatch.setattr(conv, "MATMUL_MIN_KERNEL_SIZE", 0)
    x, kernel = jnp.ones((1, 6, 6, 4)), jnp.ones((3, 3, 2, 4))
    grouped = lambda x, k: conv.conv_general_dilated(x, k, (1, 1), "SAME", feature_group_count=2,  # noqa: E731
                                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    assert " convolution(" in compiled(grouped, x, kernel)
    np.testing.assert_allclose(grouped(x, kernel), lax.conv_general_dilated(
        x, kernel, (1, 1), "SAME", feature_group_count=2, dimension_numbers=("NHWC", "HWIO", "NHWC")))
