"""Scaled dot-product attention for every model, with the fastest formulation for each backend.

`implementation(platform, dtype, lengths, head_dim)` picks it:
- CPU, any dtype: explicit einsums and a float32 softmax. A large score matrix (many heads of a long
  sequence, e.g. the UNet's self-attention at 32x32 latents: 16 x 1024 x 1024) is computed one head
  and one block of queries at a time, so each block's scores stay in cache: 5-8x faster on XLA:CPU
  than `jax.nn.dot_product_attention`, and faster than torch's SDPA at the UNet's shapes
  (experiments/bench_sampling.py). Without a mask the gradient is hand-written (`custom_vjp`):
  it recomputes the weights and keeps every matmul in XLA:CPU's fast form (experiments/bench_train.py).
- CUDA GPU, float16 / bfloat16 with head_dim <= 128 in multiples of 8 and even lengths: cuDNN's flash
  attention through `jax.nn.dot_product_attention`. float32 (which cuDNN's kernel does not take), other
  head sizes and odd lengths (77 text tokens): XLA's implementation, float32 in full float32.
- TPU, unmasked non-causal attention with both lengths >= 1024 and multiples of 128 (the UNet's and
  the autoencoder's self-attention from 32x32 latents up): the Pallas splash-attention kernel
  (`attention_tpu.py`), whose forward and gradient never hold a (q, k) score matrix in HBM. Shorter
  sequences, cross-attention to 77 text tokens, masks and causal text encoders: XLA's implementation.
  A Pallas kernel cannot be partitioned by XLA, so it runs per device: in single-device programs,
  inside a `shard_map(..., check_vma=False)` over every mesh axis, and in a training step over a mesh
  (examples split over data / fsdp, heads over tensor) in a shard_map of its own (`_kernel_lowers`); a
  plain `jit` over several devices with no mesh in context keeps XLA (training steps, the pipeline
  and `parallel.local.LocalDevices.run` put their mesh in context).

The formulation is picked when the program is lowered (`jax.lax.platform_dependent`), so a program
compiled ahead of time for a TPU or a GPU from a CPU host (experiments/bench_scale.py) holds theirs.
`query_chunk_size` bounds memory on any backend by attending one block of queries at a time.
"""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ldm_jax.models import attention_tpu

# Sequences at least this long (query and key) take the TPU kernel: from 32x32 latents up. A guess
# from the kernel's design (one head's 1024 x 1024 float32 scores are 4 MiB), not a TPU measurement.
TPU_KERNEL_MIN_LENGTH = 1024
# Wider heads (no released model has them) stay with XLA rather than untried kernel tiles.
TPU_KERNEL_MAX_HEAD_DIM = 256
# Score elements per block on the CPU path (16 MiB of float32): small enough to stay in L3.
CPU_SCORE_BLOCK = 1 << 22
# The logical axes of (batch, length, heads, head_dim) arrays.
HEADS_AXES = ("batch", "length", "heads", None)


def attend(query: jax.Array, key: jax.Array, value: jax.Array, *, mask: jax.Array | None = None,
           is_causal: bool = False, query_chunk_size: int | None = None) -> jax.Array:
    """softmax(q k^T / sqrt(d)) v on (batch, length, heads, head_dim) arrays.

    `mask` is boolean, broadcastable to (batch, heads, q_len, kv_len), True where attention is allowed.
    The softmax runs in float32 whatever the input dtype, as the reference does.
    """
    # Under a mesh, examples split over the batch axes and heads over `tensor` (the logical rules):
    # otherwise XLA's SPMD partitioner takes the projections' fsdp split of the features onto the
    # heads and replicates the arrays to undo it ("involuntary full rematerialization").
    query, key, value = (nn.with_logical_constraint(t, HEADS_AXES) for t in (query, key, value))
    return nn.with_logical_constraint(_attend(query, key, value, mask, is_causal, query_chunk_size), HEADS_AXES)


def _attend(query, key, value, mask, is_causal, query_chunk_size):
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


def implementation(platform: str, dtype, q_len: int, kv_len: int, head_dim: int, *, plain: bool) -> str:
    """The formulation for one lowering platform ("cpu", "cuda", "rocm", "tpu") and input shapes:
    "einsum" (`_attend_cpu`), "cudnn", "splash" (`attention_tpu`) or "xla". `plain`: no mask, not
    causal, and in a program that can hold a Pallas kernel (`_kernel_lowers`)."""
    half = jnp.dtype(dtype) in (jnp.bfloat16, jnp.float16)
    if platform == "cpu":
        return "einsum"
    # cuDNN's flash attention takes only half precision, and head_dim <= 128 in multiples of 8 on
    # every GPU generation; float32 stays with XLA, which keeps it in float32 ("highest"). jax 0.10.2's
    # cuDNN gradient refuses odd lengths ("Unsupported sequence length Q 4096, KV 77": its training
    # path always passes a bias), so cross-attention to 77 text tokens and CLIP's own stay with XLA.
    if (platform == "cuda" and half and head_dim % 8 == 0 and head_dim <= 128
            and q_len % 2 == 0 and kv_len % 2 == 0):
        return "cudnn"
    # The kernel pays off once one head's scores (q_len x kv_len) outgrow the TPU's on-chip memory;
    # it tiles both lengths by 128 and is given no masks. So cross-attention to 77 text tokens and
    # the short sequences of the text encoders stay with XLA.
    if (platform == "tpu" and plain and min(q_len, kv_len) >= TPU_KERNEL_MIN_LENGTH
            and q_len % attention_tpu.BLOCK == 0 and kv_len % attention_tpu.BLOCK == 0
            and head_dim <= TPU_KERNEL_MAX_HEAD_DIM):
        return "splash"
    return "xla"


def _kernel_lowers(query) -> bool:
    """Whether a Pallas TPU kernel can be lowered here. XLA cannot partition one, so it runs per device:
    - in a single-device program;
    - inside a `shard_map` over every mesh axis, unless under shard_map's replication check
      (`check_vma=True`, the default), which jax 0.10.2's splash kernel outputs fail: it shows as
      inputs carrying varying manual axes;
    - under a mesh in context and no manual axes (`jit_train_step`'s, `parallel.local.in_context`'s),
      in a shard_map of its own (`attention_tpu.attend_splash_per_device`) where batch and heads divide.
    A plain `jit` over several devices with no mesh in context keeps XLA: how it is sharded is unknown
    while tracing."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty:
        return jax.device_count() == 1
    if mesh.are_all_axes_manual:
        return not jax.typeof(query).manual_axis_type.varying
    return not mesh.manual_axes and attention_tpu.mesh_split(query) is not None


def _attend_full(query, key, value, mask, is_causal):
    """The formulation of the platform the program is lowered for: chosen at lowering, not from the
    default backend, so a program compiled ahead of time for a TPU or a GPU on a CPU host gets theirs.
    cuDNN's branch is traced only where cuDNN is installed (`cudnn_present`)."""
    def choice(platform):
        plain = mask is None and not is_causal and _kernel_lowers(query)
        return implementation(platform, query.dtype, query.shape[1], key.shape[1], query.shape[-1], plain=plain)

    def on_cpu():
        cpu_mask = mask
        if is_causal:
            causal = jnp.tril(jnp.ones((query.shape[1], key.shape[1]), bool))
            cpu_mask = causal if mask is None else jnp.logical_and(mask, causal)
        return _attend_cpu(query, key, value, cpu_mask).astype(value.dtype)  # as XLA's: the branches must agree

    def with_xla(kernel=None):  # None: XLA's own
        # "highest" keeps float32 inputs in full float32 on every backend (TPU and TF32 GPUs would
        # otherwise round to bfloat16 / TF32) so outputs match the float32 reference.
        with jax.default_matmul_precision("highest"):
            return jax.nn.dot_product_attention(query, key, value, mask=mask, is_causal=is_causal,
                                                implementation=kernel)

    on_gpu = {}
    if choice("cuda") == "cudnn" and cudnn_present():
        on_gpu["cuda"] = lambda: with_xla("cudnn")
    on_tpu = {}
    if choice("tpu") == "splash":
        on_tpu["tpu"] = lambda: attention_tpu.attend_splash_per_device(query, key, value)
    return jax.lax.platform_dependent(cpu=on_cpu, **on_gpu, **on_tpu, default=with_xla)


@functools.cache
def cudnn_present() -> bool:
    """Whether cuDNN's attention can be traced here: on a GPU host, or on a CPU host with jax's CUDA
    plugin and cuDNN installed, compiling for GPUs ahead of time (experiments/bench_scale.py)."""
    query = jax.ShapeDtypeStruct((1, 128, 1, 64), jnp.bfloat16)
    try:
        jax.eval_shape(lambda q: jax.nn.dot_product_attention(q, q, q, implementation="cudnn"), query)
    except Exception:  # jax raises RuntimeError without cuDNN; other errors mean the same: not here
        return False
    return True


def _scores(a, b):
    """a b^T / sqrt(d) in float32, on (..., length, head_dim) arrays."""
    scores = jnp.einsum("...qd,...kd->...qk", a, b, preferred_element_type=jnp.float32)
    return scores * np.float32(1.0 / np.sqrt(a.shape[-1]))


def _softmax_attention(query, key, value, mask):
    """Attention on (..., length, head_dim) arrays: scores and softmax in float32."""
    if mask is None:
        return _unmasked_attention(query, key, value)
    scores = jnp.where(mask, _scores(query, key), jnp.finfo(jnp.float32).min)
    weights = jnp.exp(scores - jax.lax.stop_gradient(jnp.max(scores, axis=-1, keepdims=True)))
    return _normalised_output(weights, value)


def _normalised_output(weights, value):
    # Normalising the (q, d) output instead of the (q, k) weights saves a pass over the scores.
    out = jnp.einsum("...qk,...kd->...qd", weights.astype(value.dtype), value, preferred_element_type=jnp.float32)
    return out / jnp.sum(weights, axis=-1, keepdims=True)


def _unmasked_forward(query, key, value):
    scores = _scores(query, key)
    row_max = jnp.max(scores, axis=-1, keepdims=True)
    weights = jnp.exp(scores - row_max)
    row_sum = jnp.sum(weights, axis=-1, keepdims=True)
    out = jnp.einsum("...qk,...kd->...qd", weights.astype(value.dtype), value,
                     preferred_element_type=jnp.float32) / row_sum
    return out.astype(value.dtype), (query, key, value, out, row_max, row_sum)


def _unmasked_backward(saved, grad):
    """The attention gradient recomputing the weights (nothing (q, k)-sized is stored), with the
    key-side products written from transposed scores so every matmul is in XLA:CPU's fast form
    (autodiff's contraction over the leading axis of the score matrix ran 14x slower)."""
    query, key, value, out, row_max, row_sum = saved
    transpose = lambda x: jnp.swapaxes(x, -1, -2)  # noqa: E731
    scale = np.float32(1.0 / np.sqrt(query.shape[-1]))
    grad = grad.astype(jnp.float32)
    delta = jnp.sum(grad * out, axis=-1, keepdims=True)
    weights = jnp.exp(_scores(query, key) - row_max) / row_sum
    weights_t = jnp.exp(_scores(key, query) - transpose(row_max)) / transpose(row_sum)
    d_scores = weights * (jnp.einsum("...qd,...kd->...qk", grad, value) - delta) * scale
    d_scores_t = weights_t * (jnp.einsum("...kd,...qd->...kq", value, grad) - transpose(delta)) * scale
    return (jnp.einsum("...qk,...kd->...qd", d_scores, key).astype(query.dtype),
            jnp.einsum("...kq,...qd->...kd", d_scores_t, query).astype(key.dtype),
            jnp.einsum("...kq,...qd->...kd", weights_t, grad).astype(value.dtype))


_unmasked_attention = jax.custom_vjp(lambda query, key, value: _unmasked_forward(query, key, value)[0])
_unmasked_attention.defvjp(_unmasked_forward, _unmasked_backward)


def _attend_cpu(query, key, value, mask):
    """XLA:CPU: one (batch, head) and one block of queries at a time when the scores are large."""
    batch, q_len, heads, _ = query.shape
    kv_len = key.shape[1]
    heads_first = lambda t: jnp.swapaxes(t, 1, 2)  # noqa: E731  (B, L, H, D) <-> (B, H, L, D)
    if mask is not None:
        mask = jnp.broadcast_to(mask, (batch, heads, q_len, kv_len))
    if batch * heads * q_len * kv_len <= CPU_SCORE_BLOCK:
        return heads_first(_softmax_attention(heads_first(query), heads_first(key), heads_first(value), mask))

    block = _largest_divisor_at_most(q_len, max(1, CPU_SCORE_BLOCK // kv_len))
    q = heads_first(query).reshape(batch * heads, q_len // block, block, query.shape[-1])
    k, v = (heads_first(t).reshape(batch * heads, kv_len, t.shape[-1]) for t in (key, value))
    if mask is not None:
        mask = mask.reshape(batch * heads, q_len // block, block, kv_len)

    def one_head(inputs):
        q_head, k_head, v_head, mask_head = inputs
        return jax.lax.map(lambda blocks: _softmax_attention(blocks[0], k_head, v_head, blocks[1]),
                           (q_head, mask_head))

    out = jax.lax.map(one_head, (q, k, v, mask))
    return heads_first(out.reshape(batch, heads, q_len, value.shape[-1]))


def _largest_divisor_at_most(n: int, limit: int) -> int:
    return next(d for d in range(min(n, limit), 0, -1) if n % d == 0)
