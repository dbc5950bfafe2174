"""Scaled dot-product attention for every model, through `jax.nn.dot_product_attention`.

On a GPU this picks cuDNN flash attention when the shapes and dtype allow it; `query_chunk_size`
bounds memory for long sequences by attending one block of queries at a time.
"""
import jax
import jax.numpy as jnp


def attend(query: jax.Array, key: jax.Array, value: jax.Array, *, mask: jax.Array | None = None,
           is_causal: bool = False, query_chunk_size: int | None = None) -> jax.Array:
    """softmax(q k^T / sqrt(d)) v on (batch, length, heads, head_dim) arrays.

    `mask` is boolean, broadcastable to (batch, heads, q_len, kv_len), True where attention is allowed.
    The softmax runs in float32 whatever the input dtype, as the reference does.
    """
    q_len = query.shape[1]
    if query_chunk_size is None or query_chunk_size >= q_len:
        return _attend_full(query, key, value, mask, is_causal)
    if is_causal:
        raise ValueError("query_chunk_size is not supported together with is_causal; pass a mask instead")
    if q_len % query_chunk_size:
        raise ValueError(f"query length {q_len} is not a multiple of query_chunk_size {query_chunk_size}")
    num_chunks = q_len // query_chunk_size
    chunks = query.reshape(query.shape[0], num_chunks, query_chunk_size, *query.shape[2:])
    if mask is not None:
        mask = jnp.broadcast_to(mask, (query.shape[0], query.shape[2], q_len, key.shape[1]))
        mask = mask.reshape(mask.shape[0], mask.shape[1], num_chunks, query_chunk_size, -1)
        mask = jnp.moveaxis(mask, 2, 0)

    def one_chunk(_, inputs):
        chunk, chunk_mask = inputs
        return None, _attend_full(chunk, key, value, chunk_mask, False)

    _, out = jax.lax.scan(one_chunk, None, (jnp.moveaxis(chunks, 1, 0), mask))
    return jnp.moveaxis(out, 0, 1).reshape(query.shape[:2] + out.shape[3:])


def _implementation(query: jax.Array) -> str | None:
    """cuDNN flash attention on a GPU for half-precision inputs it supports, else XLA."""
    supported = (query.dtype in (jnp.bfloat16, jnp.float16) and query.shape[-1] % 8 == 0
                 and query.shape[-1] <= 128)
    return "cudnn" if supported and jax.default_backend() == "gpu" else None


def _attend_full(query, key, value, mask, is_causal):
    # "highest" keeps float32 inputs in full float32 on every backend (TPU and TF32 GPUs would
    # otherwise round to bfloat16 / TF32) so outputs match the float32 reference.
    with jax.default_matmul_precision("highest"):
        return jax.nn.dot_product_attention(query, key, value, mask=mask, is_causal=is_causal,
                                            implementation=_implementation(query))
