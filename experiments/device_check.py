"""One call on a GPU or TPU: attention kernel error, SD v1 sampling time, training throughput and MFU,
peak device memory beside XLA's estimate; one JSON out.

    pip install -e . 'jax[cuda12]==0.10.2'        # on a TPU VM: 'jax[tpu]==0.10.2'
    python experiments/device_check.py --out device_check.json    # SD v1 at 512x512, one device
    python experiments/device_check.py --dry-run                  # the same at tiny size, on any backend

Weights are random (nothing is downloaded): shapes, kernels, memory and timings are the released
model's. Each part runs on the first device:
- attention: `ldm_jax.models.attention.attend` in bfloat16 (and float16 on a GPU) against float32
  softmax attention at the UNet's shapes (self-attention at 64x64 and 32x32 latents, cross-attention
  to 77 text tokens), output and query gradient, with the implementation the selection picked;
- sampling: the pipeline's `LatentSampler`, 50-step DDIM with classifier-free guidance (one UNet call
  on the [uncond; cond] batch per step) at batch 1 and 8 in `--dtype`, then the VAE decode: compile
  time, then the median of `--repeats` runs;
- training: the loop's jitted step (`jit_train_step(guarded_step(...))`: bfloat16 compute, float32
  master weights, AdamW and EMA, latents encoded on the fly) at batch 8: images/s, and the MFU from
  XLA's FLOP count of the step and the device's peak (`training.metrics.peak_flops_per_device`);
- memory: the device's peak bytes in use after each part (it only grows), beside XLA's
  `memory_analysis()` of that part's program (arguments + outputs - aliased + temporaries): the
  estimate experiments/bench_scale.py tabulates for meshes.
"""
import argparse
import json
import pathlib
import platform
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
for path in (REPO, REPO / "experiments"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from programs import abstract_batch, caption_length, peak_bytes  # noqa: E402

from ldm_jax.config_files import load_config  # noqa: E402
from ldm_jax.data.pipeline import to_global_batch  # noqa: E402
from ldm_jax.diffusion.sampling import LatentSampler  # noqa: E402
from ldm_jax.ldm import LatentDiffusion  # noqa: E402
from ldm_jax.models import attention  # noqa: E402
from ldm_jax.parallel import mesh as mesh_lib  # noqa: E402
from ldm_jax.training import metrics  # noqa: E402
from ldm_jax.training.experiment import stage_from_config, with_training_defaults  # noqa: E402
from ldm_jax.training.loop import guarded_step  # noqa: E402

# What each run measures: the released SD v1 (512x512, 64x64 latents) or a tiny text model.
FULL = dict(config="configs/sd_v1.py", sample_batches=(1, 8), steps=50, train_batch=8,
            attention_shapes=((2, 4096, 4096, 8, 40), (2, 1024, 1024, 8, 80), (2, 4096, 77, 8, 40)))
DRY_RUN = dict(config="configs/txt2img_f8_bert.py:tiny", sample_batches=(1, 2), steps=4, train_batch=2,
               attention_shapes=((1, 64, 64, 2, 16), (1, 64, 16, 2, 16)))
GUIDANCE = 7.5
GB = 1e9


def _median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _estimate_gb(compiled) -> float:
    memory = compiled.memory_analysis()
    if memory is None:
        return float("nan")
    return peak_bytes(memory) / GB


def device_peak_gb(device) -> float | None:
    stats = device.memory_stats()
    return stats["peak_bytes_in_use"] / GB if stats and "peak_bytes_in_use" in stats else None


def _reference_attention(q, k, v):
    scores = jnp.einsum("bqhd,bkhd->bhqk", q, k, precision="highest") / np.sqrt(q.shape[-1])
    return jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(scores, axis=-1), v, precision="highest")


def check_attention(shapes, dtypes) -> list[dict]:
    """Relative error of `attend` in each dtype against float32 softmax attention: output and dL/dq."""
    rows = []
    for batch, q_len, kv_len, heads, head_dim in shapes:
        keys = jax.random.split(jax.random.key(0), 4)
        q = jax.random.normal(keys[0], (batch, q_len, heads, head_dim))
        k, v = (jax.random.normal(key, (batch, kv_len, heads, head_dim)) for key in keys[1:3])
        cotangent = jax.random.normal(keys[3], q.shape[:3] + (head_dim,))
        want = _reference_attention(q, k, v)
        want_grad = jax.grad(lambda q: jnp.vdot(_reference_attention(q, k, v), cotangent))(q)
        for dtype in dtypes:
            cast = [x.astype(dtype) for x in (q, k, v)]
            out = jax.jit(attention.attend)(*cast).astype(jnp.float32)
            grad = jax.jit(jax.grad(lambda q, k, v: jnp.vdot(attention.attend(q, k, v).astype(jnp.float32),
                                                             cotangent)))(*cast).astype(jnp.float32)
            chosen = attention.implementation(_platform(), dtype, q_len, kv_len, head_dim, plain=True)
            rows.append({"shape": [batch, q_len, kv_len, heads, head_dim], "dtype": jnp.dtype(dtype).name,
                         "implementation": chosen,
                         "output_rel_error": float(jnp.abs(out - want).max() / jnp.abs(want).max()),
                         "grad_rel_error": float(jnp.abs(grad - want_grad).max() / jnp.abs(want_grad).max())})
    return rows


def _platform() -> str:
    device = jax.devices()[0]
    return "cuda" if device.platform == "gpu" and "cuda" in device.client.platform_version.lower() else device.platform


def _text_context(ldm, variables, batch: int) -> jax.Array:
    tokens = jnp.zeros((batch, caption_length(ldm.traits)), jnp.int32)
    return jax.jit(ldm.apply_cond_stage)(variables["cond_stage"], tokens)


def check_sampling(config_path: str, batches, steps: int, dtype, repeats: int) -> list[dict]:
    """The guided DDIM loop and the decode of the released model, per batch size."""
    config = load_config(str(REPO / config_path))
    ldm = LatentDiffusion(config, dtype=dtype)
    variables = jax.jit(ldm.init_variables)(jax.random.key(0))
    sampler = LatentSampler(ldm.apply_unet, ldm.schedule, ldm.parameterization)
    decode = jax.jit(ldm.decode)
    traits, rows = ldm.traits, []
    for batch in batches:
        x_T = jax.random.normal(jax.random.key(1), (batch, traits.latent_size, traits.latent_size,
                                                    traits.latent_channels))
        cond = uncond = {"context": _text_context(ldm, variables, batch)}
        args = (variables["unet"], x_T, cond, uncond, jnp.float32(GUIDANCE), jnp.float32(0.0), jax.random.key(2),
                None, None, jnp.float32(1.0), None)
        static = dict(sampler="ddim", steps=steps, discretize=None, return_intermediates=False, progress=False)
        start = time.perf_counter()
        compiled = sampler._run.trace(*args, **static).lower().compile()
        compile_s = time.perf_counter() - start
        latents = compiled(*args)
        decode(variables["first_stage"], latents).block_until_ready()
        loop_s = _median_seconds(lambda: compiled(*args), repeats)
        decode_s = _median_seconds(lambda: decode(variables["first_stage"], latents), repeats)
        rows.append({"batch": batch, "steps": steps, "dtype": jnp.dtype(dtype).name, "compile_s": compile_s,
                     "sampling_s": loop_s, "decode_s": decode_s, "total_s": loop_s + decode_s,
                     "images_per_s": batch / (loop_s + decode_s), "estimate_gb": _estimate_gb(compiled),
                     "device_peak_gb": device_peak_gb(jax.devices()[0])})
    return rows


def check_training(config_path: str, batch: int, repeats: int) -> dict:
    """The training loop's step on one device, bfloat16 compute over float32 masters."""
    config = with_training_defaults(load_config(str(REPO / config_path)))
    config.precision.compute_dtype = "bfloat16"
    config.mesh.shape = {"data": 1, "fsdp": 1, "tensor": 1}
    mesh = mesh_lib.make_mesh(config.mesh, jax.devices()[:1])
    rules = mesh_lib.logical_axis_rules(config.mesh)
    stage = stage_from_config(config)
    host_batch = {name: np.zeros(x.shape, x.dtype) for name, x in abstract_batch(config, stage, batch).items()}
    batch_sharding = mesh_lib.batch_sharding(mesh)
    example = to_global_batch(host_batch, mesh, batch_sharding.spec)
    state = mesh_lib.init_sharded(stage.init_state, mesh, rules, jax.random.key(0), example)
    step = mesh_lib.jit_train_step(guarded_step(stage.train_step), jax.tree.map(lambda x: x.sharding, state),
                                   batch_sharding, mesh, rules)
    rng = jax.random.key(1)
    start = time.perf_counter()
    lowered = step.lower(state, example, rng)
    compiled = lowered.compile()
    compile_s = time.perf_counter() - start
    cost = lowered.cost_analysis() or {}
    flops = float(cost.get("flops", 0.0)) or None
    state, _ = compiled(state, example, rng)   # warm-up
    times = []
    for _ in range(repeats):
        begin = time.perf_counter()
        state, step_metrics = compiled(state, example, rng)
        jax.block_until_ready(step_metrics)
        times.append(time.perf_counter() - begin)
    seconds = statistics.median(times)
    peak = metrics.peak_flops_per_device(jax.devices()[0])
    return {"batch": batch, "compute_dtype": "bfloat16", "compile_s": compile_s, "step_s": seconds,
            "images_per_s": batch / seconds, "tflops_per_step": None if flops is None else flops / 1e12,
            "mfu": None if flops is None or peak is None else metrics.flop_utilisation(flops, seconds, peak, 1),
            "loss": float(step_metrics["loss"]), "estimate_gb": _estimate_gb(compiled),
            "device_peak_gb": device_peak_gb(jax.devices()[0])}


def run(dry_run: bool, dtype: str, repeats: int) -> dict:
    sizes = DRY_RUN if dry_run else FULL
    device = jax.devices()[0]
    half = (jnp.bfloat16, jnp.float16) if device.platform == "gpu" else (jnp.bfloat16,)
    start = time.perf_counter()
    report = {"device": device.device_kind, "platform": _platform(), "devices": jax.device_count(),
              "jax": jax.__version__, "python": platform.python_version(), "config": sizes["config"],
              "dry_run": dry_run}
    report["attention"] = check_attention(sizes["attention_shapes"], half)
    report["sampling"] = check_sampling(sizes["config"], sizes["sample_batches"], sizes["steps"],
                                        jnp.dtype(dtype), repeats)
    report["training"] = check_training(sizes["config"], sizes["train_batch"], repeats)
    report["seconds"] = time.perf_counter() - start
    return report


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="a tiny text model, a few steps: any backend")
    parser.add_argument("--dtype", default="bfloat16", choices=("float32", "bfloat16", "float16"),
                        help="the sampling compute dtype (weights stay float32)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=pathlib.Path, help="write the JSON here too")
    args = parser.parse_args(argv)
    report = run(args.dry_run, args.dtype, args.repeats)
    text = json.dumps(report, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
