"""Unmasked attention on a TPU through the Pallas splash-attention kernel (`models/attention.py` says when).

Splash attention (`jax.experimental.pallas.ops.tpu.splash_attention`) is the TPU flash-attention kernel
jax maintains: blockwise scores in VMEM with an online float32 softmax, Pallas kernels for the
gradient too, and key length free of the query length. It takes one example's (heads, length,
head_dim) arrays and no scale, so `splash_attention` moves the heads forward, scales the queries,
pads the head dimension to whole 128-lane vregs and maps the kernel over the batch.
"""
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental.pallas.ops.tpu import splash_attention
from jax.sharding import PartitionSpec as P

# The kernel's default tile: both sequence lengths must be multiples of it (`attention.implementation`).
BLOCK = 128
# The mesh axis that splits heads (tensor parallelism); every other axis splits examples.
TENSOR_AXIS = "tensor"
# Lanes of a TPU vreg: the head dimension is zero-padded to a multiple of it, as maxdiffusion does,
# so every tile is lane-dense (zero columns change neither q k^T nor the kept output columns).
LANES = 128


@functools.lru_cache(maxsize=None)
def _kernel(heads: int, q_len: int, kv_len: int, interpret: bool):
    """The kernel for one shape (its block tables are built on the host), with jax's default 128-tiles
    for the forward and both gradient kernels: nothing here was timed on a TPU to tune them."""
    mask = splash_attention.MultiHeadMask([splash_attention.FullMask((q_len, kv_len))] * heads)
    with jax.ensure_compile_time_eval():  # concrete tables, not tracers of the first caller's trace
        return splash_attention.make_splash_mha_single_device(
            mask, block_sizes=splash_attention.BlockSizes.get_default(), interpret=interpret)


def attend_splash(query, key, value, *, interpret: bool = False) -> jax.Array:
    """softmax(q k^T / sqrt(d)) v on (batch, length, heads, head_dim) arrays, in the inputs' dtype.

    `interpret=True` runs the kernel in Pallas' interpreter, so it can be checked on a CPU.
    """
    _, q_len, heads, head_dim = query.shape
    scale = np.float32(1.0 / np.sqrt(head_dim))  # of the true head dimension, not the padded one
    pad = -head_dim % LANES
    query = (query.astype(jnp.float32) * scale).astype(query.dtype)

    def heads_first(t):
        t = jnp.swapaxes(t, 1, 2)
        return jnp.pad(t, ((0, 0),) * 3 + ((0, pad),)) if pad else t

    kernel = _kernel(heads, q_len, key.shape[1], interpret)
    out = jax.vmap(kernel)(heads_first(query), heads_first(key), heads_first(value))
    return jnp.swapaxes(out[..., :head_dim], 1, 2)


def mesh_split(query) -> P | None:
    """How the mesh in context (`parallel.mesh.jit_train_step` sets it) splits attention for the kernel:
    examples over every axis but `tensor`, heads over `tensor`; None where the shapes do not divide."""
    mesh = jax.sharding.get_abstract_mesh()
    batch_axes = tuple(axis for axis in mesh.axis_names if axis != TENSOR_AXIS)
    heads_axis = TENSOR_AXIS if TENSOR_AXIS in mesh.axis_names else None
    if (query.shape[0] % math.prod(mesh.shape[axis] for axis in batch_axes)
            or query.shape[2] % (mesh.shape[heads_axis] if heads_axis else 1)):
        return None
    return P(batch_axes, None, heads_axis, None)


def attend_splash_per_device(query, key, value, *, interpret: bool = False) -> jax.Array:
    """`attend_splash` wherever `attention._kernel_lowers` allows it. XLA cannot partition a Pallas kernel:
    in a single-device program or inside a shard_map it runs as is; in a program over the mesh in context
    it runs per device in a `shard_map` of its own (without the replication check, which the kernel's
    outputs fail in jax 0.10.2)."""
    kernel = functools.partial(attend_splash, interpret=interpret)
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or mesh.are_all_axes_manual:
        return kernel(query, key, value)
    spec = mesh_split(query)
    return jax.shard_map(kernel, mesh=mesh, in_specs=(spec, spec, spec), out_specs=spec, check_vma=False)(
        query, key, value)
