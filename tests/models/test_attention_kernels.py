"""attend's accelerator kernels: which formulation each backend, dtype and shape gets; the TPU splash
kernel (run by Pallas' interpreter on the CPU) against softmax attention, forward and gradient; and
the kernel being what a program lowered for a TPU holds.

cuDNN's kernel cannot run here, and jax traces it only where cuDNN is installed: for the GPU the
selection is tested, and what a program lowered for CUDA holds (cuDNN's kernel where jax's CUDA plugin
and cuDNN are installed, as for experiments/bench_scale.py --topology h100:8; XLA's attention otherwise).
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from ldm_jax.models import attention, attention_tpu
from ldm_jax.parallel.local import LocalDevices, in_context, shard_batch

F32, BF16, F16 = jnp.float32, jnp.bfloat16, jnp.float16
LONG, SHORT, TEXT = 4096, 256, 77  # UNet self-attention at 64x64 and 16x16 latents; CLIP's tokens


@pytest.mark.parametrize("dtype", [F32, BF16, F16])
@pytest.mark.parametrize("q_len, kv_len", [(LONG, LONG), (SHORT, SHORT), (LONG, TEXT), (TEXT, TEXT)])
def test_the_cpu_always_takes_the_einsums(dtype, q_len, kv_len):
    assert attention.implementation("cpu", dtype, q_len, kv_len, 64, plain=True) == "einsum"
    assert attention.implementation("cpu", dtype, q_len, kv_len, 64, plain=False) == "einsum"


@pytest.mark.parametrize("q_len, kv_len", [(LONG, LONG), (SHORT, SHORT), (SHORT, 2 * SHORT)])
@pytest.mark.parametrize("dtype, head_dim, expected", [
    (BF16, 64, "cudnn"), (F16, 40, "cudnn"), (F16, 128, "cudnn"),
    (BF16, 160, "xla"), (F16, 36, "xla"),  # beyond cuDNN's head sizes
    (F32, 64, "xla"),  # cuDNN's flash attention has no float32
])
def test_cuda_takes_cudnn_for_half_precision_at_even_lengths(q_len, kv_len, dtype, head_dim, expected):
    for plain in (True, False):  # cuDNN takes masks and causality itself
        assert attention.implementation("cuda", dtype, q_len, kv_len, head_dim, plain=plain) == expected
    assert attention.implementation("rocm", dtype, q_len, kv_len, head_dim, plain=True) == "xla"


@pytest.mark.parametrize("q_len, kv_len", [(LONG, TEXT), (TEXT, TEXT), (LONG - 1, LONG)])
def test_cuda_keeps_xla_at_odd_lengths_whose_cudnn_gradient_jax_refuses(q_len, kv_len):
    assert attention.implementation("cuda", BF16, q_len, kv_len, 64, plain=True) == "xla"


@pytest.mark.parametrize("dtype", [F32, BF16, F16])
@pytest.mark.parametrize("q_len, kv_len, head_dim, plain, expected", [
    (LONG, LONG, 64, True, "splash"), (1024, 1024, 40, True, "splash"), (1024, 2048, 160, True, "splash"),
    (LONG, LONG, 64, False, "xla"),  # masked or causal
    (SHORT, SHORT, 64, True, "xla"),  # short: XLA's fused attention
    (LONG, TEXT, 64, True, "xla"),  # cross-attention to text: 77 is no multiple of 128
    (1088, 1088, 64, True, "xla"),  # long, but not in whole tiles
    (LONG, LONG, 512, True, "xla"),  # heads wider than the kernel's tried tiles
])
def test_the_tpu_takes_splash_for_long_plain_self_attention(dtype, q_len, kv_len, head_dim, plain, expected):
    assert attention.implementation("tpu", dtype, q_len, kv_len, head_dim, plain=plain) == expected


def _qkv(dtype, q_len=256, kv_len=256, heads=2, head_dim=64, seed=0, batch=1):
    rng = np.random.default_rng(seed)
    return tuple(jnp.asarray(2 * rng.standard_normal((batch, length, heads, head_dim)), dtype)
                 for length in (q_len, kv_len, kv_len))


def _softmax_attention(q, k, v):
    """The reference: einsum scores and softmax in float32, (B, L, H, D) layout."""
    q, k, v = (t.astype(jnp.float32) for t in (q, k, v))
    scores = jnp.einsum("blhd,bmhd->bhlm", q, k, precision="highest") / np.sqrt(q.shape[-1])
    return jnp.einsum("bhlm,bmhd->blhd", jax.nn.softmax(scores, axis=-1), v, precision="highest")


def _values_and_gradients(fn, q, k, v):
    cotangent = jnp.asarray(np.random.default_rng(1).standard_normal(q.shape[:3] + v.shape[-1:]), jnp.float32)
    loss = lambda q, k, v: jnp.sum(fn(q, k, v).astype(jnp.float32) * cotangent)  # noqa: E731
    return jax.jit(lambda q, k, v: (fn(q, k, v), *jax.grad(loss, argnums=(0, 1, 2))(q, k, v)))(q, k, v)


@pytest.mark.parametrize("dtype, q_len, kv_len, head_dim, tolerance", [
    (F32, 256, 256, 64, 1e-5),  # head_dim padded to the 128 lanes
    (F32, 128, 384, 128, 1e-5),  # keys longer than queries, unpadded heads
    (BF16, 256, 256, 64, 2e-2),
])
def test_splash_kernel_equals_softmax_attention(dtype, q_len, kv_len, head_dim, tolerance):
    """Pallas' interpreter runs the TPU kernel's own forward and gradient kernels on the CPU."""
    q, k, v = _qkv(dtype, q_len, kv_len, head_dim=head_dim)
    kernel = _values_and_gradients(lambda *t: attention_tpu.attend_splash(*t, interpret=True), q, k, v)
    reference = _values_and_gradients(_softmax_attention, q, k, v)
    assert kernel[0].dtype == dtype and kernel[0].shape == q.shape
    for name, a, b in zip(["out", "dq", "dk", "dv"], kernel, reference):
        a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
        # relative to the tensor's scale: bfloat16 rounds every input and output element
        np.testing.assert_allclose(a, b, atol=tolerance * np.abs(b).max(), rtol=tolerance, err_msg=name)


def _lowered_for_tpu(fn, *args):
    return jax.jit(fn).trace(*args).lower(lowering_platforms=("tpu",)).as_text()


def _in_shard_map(fn, devices, check_vma=False):
    """fn over a mesh of `devices`, batch-split: the kernel runs per device in a shard_map."""
    mesh = jax.make_mesh((len(devices),), ("data",), devices=devices, axis_types=(jax.sharding.AxisType.Auto,))
    return jax.shard_map(fn, mesh=mesh, in_specs=P("data"), out_specs=P("data"), check_vma=check_vma)


def _grad_of_attend(q, k, v):
    return jax.grad(lambda q, k, v: jnp.sum(attention.attend(q, k, v).astype(jnp.float32)),
                    argnums=(0, 1, 2))(q, k, v)


@pytest.mark.parametrize("devices", [1, 8])
def test_a_program_lowered_for_the_tpu_holds_the_kernel_inside_shard_map(devices):
    long = jax.ShapeDtypeStruct((devices, 1024, 2, 64), BF16)
    for fn in (attention.attend, lambda q, k, v: _grad_of_attend(q, k, v)[0]):
        text = _lowered_for_tpu(_in_shard_map(fn, jax.devices()[:devices]), long, long, long)
        assert "tpu_custom_call" in text


def test_the_tpu_keeps_xla_where_the_kernel_does_not_apply():
    long, text_tokens = (jax.ShapeDtypeStruct((1, n, 2, 64), BF16) for n in (1024, 77))
    one_device = lambda fn: _in_shard_map(fn, jax.devices()[:1])  # noqa: E731
    cross = _lowered_for_tpu(one_device(lambda q, k, v: attention.attend(q, k, v)), long, text_tokens, text_tokens)
    short = jax.ShapeDtypeStruct((1, 256, 2, 64), BF16)
    causal = _lowered_for_tpu(one_device(lambda q, k, v: attention.attend(q, k, v, is_causal=True)), long, long, long)
    for text in (cross, causal, _lowered_for_tpu(one_device(attention.attend), short, short, short)):
        assert "tpu_custom_call" not in text


def test_a_jit_over_several_devices_and_a_checked_shard_map_keep_xla_on_the_tpu():
    """XLA cannot partition a Pallas kernel: outside shard_map, with 8 devices, attend must lower to
    XLA; so must it under shard_map's replication check, which the splash kernel's outputs fail."""
    assert jax.device_count() > 1  # conftest's simulated CPU devices
    long = jax.ShapeDtypeStruct((8, 1024, 2, 64), BF16)
    checked = _in_shard_map(attention.attend, jax.devices(), check_vma=True)
    for fn in (attention.attend, checked):
        assert "tpu_custom_call" not in _lowered_for_tpu(fn, long, long, long)


def test_the_cpu_program_never_holds_the_kernel():
    long = jax.ShapeDtypeStruct((1, 1024, 2, 64), BF16)
    text = jax.jit(_in_shard_map(attention.attend, jax.devices()[:1])).trace(long, long, long).lower().as_text()
    assert "tpu_custom_call" not in text


def _lowered_for_cuda(fn, *args):
    return jax.jit(fn).trace(*args).lower(lowering_platforms=("cuda",)).as_text()


def test_a_program_lowered_for_cuda_holds_cudnn_only_where_cudnn_is_installed():
    long = jax.ShapeDtypeStruct((1, 1024, 2, 64), BF16)
    for fn in (attention.attend, lambda q, k, v: _grad_of_attend(q, k, v)[0]):
        assert ("__cudnn$fmha" in _lowered_for_cuda(fn, long, long, long)) == attention.cudnn_present()
    # the gradient of cross-attention to 77 text tokens lowers (with XLA's attention)
    text = jax.ShapeDtypeStruct((1, TEXT, 2, 64), BF16)
    assert "__cudnn$fmha" not in _lowered_for_cuda(lambda q, k, v: _grad_of_attend(q, k, v)[1], long, text, text)
    # float32 stays with XLA's attention wherever cuDNN is
    wide = jax.ShapeDtypeStruct((1, 1024, 2, 64), F32)
    assert "__cudnn$fmha" not in _lowered_for_cuda(attention.attend, wide, wide, wide)


def _training_mesh():
    """The mesh a training step runs under (`jit_train_step` puts it in context): data 4 x tensor 2."""
    return jax.make_mesh((4, 2), ("data", "tensor"), axis_types=(jax.sharding.AxisType.Auto,) * 2)


def test_a_training_step_mesh_gets_the_kernel_per_device_on_the_tpu():
    mesh = _training_mesh()
    long = jax.ShapeDtypeStruct((8, 1024, 2, 64), BF16)
    odd_heads = jax.ShapeDtypeStruct((8, 1024, 3, 64), BF16)  # 3 heads do not split over tensor = 2
    with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
        assert attention_tpu.mesh_split(long) == P(("data",), None, "tensor", None)
        for fn in (attention.attend, lambda q, k, v: _grad_of_attend(q, k, v)[0]):
            assert "tpu_custom_call" in _lowered_for_tpu(fn, long, long, long)
        assert attention_tpu.mesh_split(odd_heads) is None
        assert "tpu_custom_call" not in _lowered_for_tpu(attention.attend, odd_heads, odd_heads, odd_heads)


def test_a_program_over_the_local_devices_gets_the_kernel_per_device_on_the_tpu():
    """The pipeline's sampler and `LocalDevices.run` trace with their data mesh in context: lowered for
    a TPU their attention holds the kernel; run here, the result is that of one device."""
    devices = LocalDevices({"scale": jnp.full((), 0.5, BF16)})
    long = jnp.asarray(np.random.default_rng(0).normal(size=(8, 1024, 2, 64)), BF16)
    mesh = devices.mesh(len(long))
    assert mesh.size == jax.device_count() > 1
    fn = jax.jit(lambda variables, q: attention.attend(q, q, q) * variables["scale"])
    with in_context(mesh):
        text = fn.trace(devices.variables_on(mesh), shard_batch(long, mesh)).lower(lowering_platforms=("tpu",))
    assert "tpu_custom_call" in text.as_text()
    np.testing.assert_array_equal(np.asarray(devices.run(fn, long), np.float32),
                                  np.asarray(fn(devices.variables, long), np.float32))


def test_the_kernel_split_over_a_training_mesh_equals_softmax_attention():
    """Examples over data, heads over tensor, one kernel per device (Pallas' interpreter)."""
    mesh = _training_mesh()
    q, k, v = _qkv(F32, 128, 128, batch=8, heads=2, head_dim=128)
    def in_step(q, k, v):  # as jit_train_step traces: the mesh in context, concrete shardings outside
        with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
            return attention_tpu.attend_splash_per_device(q, k, v, interpret=True)

    whole = jax.sharding.NamedSharding(mesh, P())
    kernel = jax.jit(in_step, in_shardings=(whole,) * 3, out_shardings=whole)(q, k, v)
    reference = np.asarray(_softmax_attention(q, k, v))
    np.testing.assert_allclose(np.asarray(kernel), reference, atol=1e-5 * np.abs(reference).max(), rtol=1e-5)
