"""The spatial transformer blocks: naming, projections, self- vs cross-attention, chunking."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ldm_jax.models.abstract import abstract_module_params
from ldm_jax.models.spatial_transformer import (BasicTransformerBlock, CrossAttention, FeedForward,
                                                SpatialTransformer, fitting_chunk_size)
from tests.conftest import random_params


def _init(module, *args):
    return {"params": random_params(abstract_module_params(module, *args))}


@pytest.mark.parametrize("length, chunk, expected", [(64, None, None), (64, 64, None), (64, 100, None),
                                                     (64, 16, 16), (64, 24, 16), (77, 10, 7), (13, 4, 1)])
def test_fitting_chunk_size(length, chunk, expected):
    assert fitting_chunk_size(length, chunk) == expected


def test_cross_attention_without_context_is_self_attention():
    attn = CrossAttention(heads=2, dim_head=8)
    x = jax.random.normal(jax.random.key(1), (2, 6, 12))
    variables = _init(attn, x)
    params = variables["params"]
    assert params["to_q"]["kernel"].shape == (12, 16) and "bias" not in params["to_k"]
    assert set(params["to_out:0"]) == {"kernel", "bias"}
    apply = jax.jit(attn.apply)
    np.testing.assert_allclose(apply(variables, x), apply(variables, x, x), atol=1e-6)


def test_feed_forward_names_follow_glu():
    x = jnp.ones((1, 3, 8))
    assert set(_init(FeedForward(glu=True), x)["params"]) == {"net:0", "net:2"}
    assert _init(FeedForward(glu=True), x)["params"]["net:0"]["proj"]["kernel"].shape == (8, 64)
    assert set(_init(FeedForward(glu=False), x)["params"]) == {"net:0:0", "net:2"}


def test_disable_self_attn_attends_to_the_context():
    x, context = jnp.ones((1, 4, 16)), jnp.ones((1, 3, 24))
    params = _init(BasicTransformerBlock(2, 8, disable_self_attn=True), x, context)["params"]
    assert params["attn1"]["to_k"]["kernel"].shape == (24, 16)


@pytest.mark.parametrize("use_linear", [False, True])
def test_spatial_transformer_projections_and_options(use_linear):
    x = jax.random.normal(jax.random.key(2), (2, 4, 4, 32))
    context = jax.random.normal(jax.random.key(3), (2, 5, 24))
    st = SpatialTransformer(n_heads=2, d_head=16, depth=2, context_dim=24, use_linear=use_linear)
    variables = _init(st, x, context)
    kernel = variables["params"]["proj_in"]["kernel"]
    assert kernel.shape == ((32, 32) if use_linear else (1, 1, 32, 32))
    assert set(variables["params"]) == {"norm", "proj_in", "transformer_blocks:0", "transformer_blocks:1",
                                        "proj_out"}
    apply = jax.jit(st.apply)
    out = apply(variables, x, context)
    assert out.shape == x.shape
    assert float(jnp.abs(out - apply(variables, x, context * 2)).max()) > 1e-3
    np.testing.assert_allclose(jax.jit(st.clone(query_chunk_size=4).apply)(variables, x, context), out,
                               atol=1e-5)


def test_context_dim_mismatch_is_named():
    st = SpatialTransformer(n_heads=2, d_head=16, context_dim=24, name="mid")
    with pytest.raises(ValueError, match="context has 12 features, context_dim is 24"):
        st.init(jax.random.key(0), jnp.ones((1, 2, 2, 32)), jnp.ones((1, 3, 12)))
