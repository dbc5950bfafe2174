"""attend: every CPU formulation (whole, blockwise per head and query block) equals plain softmax attention,
and under a training mesh the examples stay split over the batch axes."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from ldm_jax.models import attention
from ldm_jax.parallel import mesh as mesh_lib


def _reference(q, k, v, mask=None):
    """softmax(q k^T / sqrt(d)) v in float64, (B, L, H, D) layout."""
    q, k, v = (np.asarray(t, np.float64) for t in (q, k, v))
    scores = np.einsum("blhd,bmhd->bhlm", q, k) / np.sqrt(q.shape[-1])
    if mask is not None:
        scores = np.where(mask, scores, -np.inf)
    weights = np.exp(scores - scores.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    return np.einsum("bhlm,bmhd->blhd", weights, v)


def _qkv(q_len=24, kv_len=24, heads=3, dim=8, batch=2, seed=0):
    rng = np.random.default_rng(seed)
    return (jnp.asarray(3 * rng.standard_normal((batch, length, heads, dim)), jnp.float32)
            for length in (q_len, kv_len, kv_len))


@pytest.mark.parametrize("block", [attention.CPU_SCORE_BLOCK, 96, 7])
def test_whole_and_blockwise_match_the_reference(monkeypatch, block):
    # 2 * 3 * 24 * 32 scores: one einsum with the default block; per head in query blocks of 3 (and
    # of 1: no divisor of 24 fits 7 // 32 = 0 rows) with the small ones.
    monkeypatch.setattr(attention, "CPU_SCORE_BLOCK", block)
    q, k, v = _qkv(kv_len=32)
    out = jax.jit(attention.attend)(q, k, v)
    np.testing.assert_allclose(out, _reference(q, k, v), atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("block", [attention.CPU_SCORE_BLOCK, 64])
def test_masks_and_causality(monkeypatch, block):
    monkeypatch.setattr(attention, "CPU_SCORE_BLOCK", block)
    q, k, v = _qkv(q_len=16, kv_len=16)
    padding = np.arange(16)[None, None, None, :] < np.array([16, 9])[:, None, None, None]  # per sample
    causal = np.tril(np.ones((16, 16), bool))
    np.testing.assert_allclose(attention.attend(q, k, v, mask=jnp.asarray(padding)),
                               _reference(q, k, v, padding), atol=2e-5, rtol=1e-5)
    np.testing.assert_allclose(attention.attend(q, k, v, is_causal=True), _reference(q, k, v, causal),
                               atol=2e-5, rtol=1e-5)
    np.testing.assert_allclose(attention.attend(q, k, v, mask=jnp.asarray(padding), is_causal=True),
                               _reference(q, k, v, padding & causal), atol=2e-5, rtol=1e-5)


def test_query_chunks_equal_the_whole():
    q, k, v = _qkv(q_len=32, kv_len=20)
    np.testing.assert_allclose(attention.attend(q, k, v, query_chunk_size=8), attention.attend(q, k, v),
                               atol=1e-5)


def test_half_precision_keeps_its_dtype_and_a_float32_softmax():
    q, k, v = (t.astype(jnp.bfloat16) for t in _qkv())
    out = attention.attend(q, k, v)
    assert out.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(out, np.float32), _reference(q, k, v), atol=0.05)


@pytest.mark.parametrize("block", [attention.CPU_SCORE_BLOCK, 96])
def test_the_hand_written_gradient_equals_autodiff(monkeypatch, block):
    monkeypatch.setattr(attention, "CPU_SCORE_BLOCK", block)
    q, k, v = _qkv(kv_len=32)
    cotangent = jnp.asarray(np.random.default_rng(3).standard_normal(q.shape[:3] + (v.shape[-1],)), jnp.float32)
    everywhere = jnp.ones((1, 1, q.shape[1], k.shape[1]), bool)  # the masked path: plain autodiff

    def loss(mask):
        return lambda q, k, v: jnp.sum(attention.attend(q, k, v, mask=mask) * cotangent)

    ours = jax.grad(loss(None), argnums=(0, 1, 2))(q, k, v)
    autodiff = jax.grad(loss(everywhere), argnums=(0, 1, 2))(q, k, v)
    for name, a, b in zip("qkv", ours, autodiff):
        np.testing.assert_allclose(a, b, atol=2e-5, rtol=1e-4, err_msg=f"d{name}")


def test_examples_stay_split_over_the_batch_axes_under_a_mesh():
    """With the logical rules in context (a training step), attention's inputs and output are split
    by example over data x fsdp, whatever the projections' fsdp-split kernels would suggest to XLA's
    partitioner (which otherwise replicates the arrays to re-split them)."""
    config = mesh_lib.default_mesh_config()
    config.shape = {"data": 2, "fsdp": 4, "tensor": 1}
    mesh, rules = mesh_lib.make_mesh(config), mesh_lib.logical_axis_rules(config)

    def attend(query):
        with jax.sharding.use_abstract_mesh(mesh.abstract_mesh), nn.logical_axis_rules(rules):
            return attention.attend(query, query, query)

    query = jax.device_put(jnp.ones((8, 16, 2, 4)), mesh_lib.replicated(mesh))
    out = jax.jit(attend)(query)
    assert out.sharding.is_equivalent_to(NamedSharding(mesh, PartitionSpec(("data", "fsdp"))), out.ndim)
    np.testing.assert_allclose(out, query)
