"""Full-size programs compiled ahead of time on simulated meshes: per-device memory, FLOPs, compile time.

Nothing is allocated: every train step is `jit_train_step(...).trace(<ShapeDtypeStructs with
shardings>).lower().compile()` over 8 simulated CPU devices, the state's shardings derived as the
training loop derives them (`parallel.mesh.abstract_sharded_state`); the sampler is the
pipeline's `LatentSampler` program, its batch split over the devices that divide it and the
UNet's weights replicated, as `LocalDevices` places them. Per device it reports XLA's
`memory_analysis()` (arguments, outputs, temporaries, the donated bytes aliased) and
`cost_analysis()` FLOPs, the trace + lower and compile seconds, and beside them the floors:

- state floor: the whole train state's bytes / fsdp size (nothing replicated that could be sharded);
  `state` is what this device really holds of it under the derived shardings;
- activations: the bytes the backward pass keeps from the forward (`saved_residuals` of the loss,
  whole batch / batch-parallel devices), with and without remat.

    python experiments/bench_scale.py                      # every row: 96 train steps + 4 samplers (~10 h on 2 cores)
    python experiments/bench_scale.py --models sd_v1 --meshes fsdp=8 --batches 8 --precisions bf16+remat
    python experiments/bench_scale.py --programs sample --sample-models sd_v1,sd_v2_v --batches 1,8
    python experiments/bench_scale.py --programs sample --sample-models sd_v1 --batches 1 --cache-dir /tmp/jc  # twice
    python experiments/bench_scale.py --models configs/txt2img_f8_bert.py:tiny --meshes data=2xfsdp=4 --batches 1
    python experiments/bench_scale.py --topology v5e:2x4 --models sd_v1 --meshes fsdp=8 --batches 8   # TPU programs
    python experiments/bench_scale.py --topology h100:8 --models sd_v1 --meshes fsdp=8 --batches 32  # GPU programs
    python experiments/bench_scale.py --models sd_v1 --meshes fsdp=8 --batches 8 --latent-cache   # from cached latents

`--models` takes the names below or any `configs/<name>.py[:variant]`; a row per (program, model,
mesh, per-device batch, precision); `--json` writes the rows too. With `--topology` the same programs are
compiled on this host for a TPU slice by libtpu, or for GPUs (a target in `gpu_targets/`) by jax's CUDA
plugin, no accelerator needed: XLA:TPU's and XLA:GPU's own memory figures.
"""
import argparse
import json
import os
import pathlib
import sys
import time

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from ldm_jax import compile_options, config_files  # noqa: E402
from programs import abstract_batch, peak_bytes  # noqa: E402
from ldm_jax.diffusion.sampling import LatentSampler  # noqa: E402
from ldm_jax.ldm import LatentDiffusion  # noqa: E402
from ldm_jax.models import components  # noqa: E402
from ldm_jax.parallel import mesh as mesh_lib  # noqa: E402
from ldm_jax.parallel.local import LocalDevices  # noqa: E402
from ldm_jax.training.experiment import stage_from_config, with_training_defaults  # noqa: E402
from ldm_jax.training.loop import guarded_step  # noqa: E402

MODELS = {"sd_v1": "configs/sd_v1.py", "sd_v2_v": "configs/sd_v2_v.py", "cin256": "configs/cin256_ldm_vq4.py",
          "kl_f8": "configs/kl_f8.py"}
MESHES = {"data=8": {"data": 8}, "fsdp=8": {"data": 1, "fsdp": 8},
          "data=2xfsdp=4": {"data": 2, "fsdp": 4}}
PRECISIONS = {"f32": ("float32", False), "f32+remat": ("float32", True), "bf16": ("bfloat16", False),
              "bf16+remat": ("bfloat16", True)}
GB = 1e9
# Compiling for GPUs without one, XLA cannot autotune its Triton matmul tiles, and its fallback found none
# for a fused CLIP projection of the SD v1 step ("Couldn't find output tile sizes"): cuBLAS's matmuls instead.
DEVICELESS_GPU_OPTIONS = {"xla_gpu_enable_triton_gemm": False}


def load(model: str):
    return config_files.load_config(str(REPO / MODELS[model]) if model in MODELS else model)


def _nbytes(tree) -> int:
    return sum(int(np.prod(x.shape)) * jnp.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree))


def _millions(tree) -> float:
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree)) / 1e6


def _shard_bytes(tree) -> int:
    """Bytes of one device's shards of a tree of sharded ShapeDtypeStructs (device 0's; shards are equal)."""
    return sum(int(np.prod(x.sharding.shard_shape(x.shape))) * jnp.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree))


def _with_sharding(tree, sharding):
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), tree)


def _memory(compiled) -> dict:
    memory = compiled.memory_analysis()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return {"argument_gb": memory.argument_size_in_bytes / GB, "output_gb": memory.output_size_in_bytes / GB,
            "temp_gb": memory.temp_size_in_bytes / GB, "alias_gb": memory.alias_size_in_bytes / GB,
            "peak_gb": peak_bytes(memory) / GB,
            "tflops": float((cost or {}).get("flops", 0.0)) / 1e12}


def _compile(jitted, *args, platform: str | None = None, **kwargs) -> tuple[dict, float, float]:
    start = time.perf_counter()
    lowered = jitted.trace(*args, **kwargs).lower(lowering_platforms=(platform,) if platform else None)
    traced = time.perf_counter() - start
    start = time.perf_counter()
    compiled = lowered.compile(DEVICELESS_GPU_OPTIONS if platform == "cuda" else None)
    return _memory(compiled), traced, time.perf_counter() - start


def train_setup(model: str, mesh_name: str, per_device_batch: int, precision: str, devices=None,
                latent_cache: bool = False):
    """(stage, mesh, rules, sharded abstract state, sharded abstract batch) of one training row; with
    `latent_cache` the batch is cached latents (and text contexts), as `data.name = "latent_cache"` reads."""
    config = with_training_defaults(load(model))
    config.precision.compute_dtype, config.precision.remat = PRECISIONS[precision]
    config.mesh.shape = MESHES[mesh_name]
    if "unet" not in config.model:
        config.train.random_lpips = True   # compiling needs the LPIPS network's shapes, not its trained weights
    mesh = mesh_lib.make_mesh(config.mesh, devices)
    rules = mesh_lib.logical_axis_rules(config.mesh)
    stage = stage_from_config(config)
    batch = abstract_batch(config, stage, per_device_batch * mesh.devices.size, latent_cache)
    state = mesh_lib.abstract_sharded_state(stage.init_state, mesh, rules, jax.random.key(0), batch)
    return stage, mesh, rules, state, _with_sharding(batch, mesh_lib.batch_sharding(mesh))


def train_row(model: str, mesh_name: str, per_device_batch: int, precision: str, devices=None,
              platform: str | None = None, latent_cache: bool = False) -> dict:
    stage, mesh, rules, state, batch = train_setup(model, mesh_name, per_device_batch, precision, devices,
                                                   latent_cache)
    shardings = jax.tree.map(lambda x: x.sharding, state)
    step = mesh_lib.jit_train_step(guarded_step(stage.train_step), shardings, mesh_lib.batch_sharding(mesh),
                                   mesh, rules)
    rng = jax.ShapeDtypeStruct((), jax.random.key(0).dtype, sharding=mesh_lib.replicated(mesh))
    measured, traced, compiled = _compile(step, state, batch, rng, platform=platform)
    fsdp, batch_ways = mesh.shape["fsdp"], mesh.shape["data"] * mesh.shape["fsdp"]
    row = {"program": "train from latents" if latent_cache else "train", "model": model, "mesh": mesh_name,
           "batch": per_device_batch, "precision": precision,
           **measured, "trace_s": traced, "compile_s": compiled,
           "state_gb": _shard_bytes(state) / GB, "state_floor_gb": _nbytes(state) / GB / fsdp,
           "params_m": _millions(state.params)}
    if hasattr(stage, "ldm"):
        row["activations_gb"] = residual_bytes(stage, state, batch) / GB / batch_ways
    return row


def residual_bytes(stage, state, batch) -> int:
    """Bytes the backward pass of the LDM loss keeps from its forward (the activation floor, whole batch)."""
    from jax._src.ad_checkpoint import saved_residuals  # the list `jax.ad_checkpoint.print_saved_residuals` prints

    found = []

    def count(frozen, batch):   # under eval_shape: the frozen weights and the batch stay abstract
        residuals = saved_residuals(_ldm_loss(stage, frozen, batch), state.params)
        found.append(sum(int(np.prod(aval.shape)) * jnp.dtype(aval.dtype).itemsize for aval, _ in residuals))
        return 0

    jax.eval_shape(count, state.frozen, batch)
    return found[0]


def _ldm_loss(stage, frozen, batch):
    """The LDM's loss as a function of the trainable params (the part the gradient flows through)."""
    traits = stage.ldm.traits
    n = jax.tree.leaves(batch)[0].shape[0]
    shape = (n, traits.latent_size, traits.latent_size, traits.latent_channels)
    z0 = jnp.zeros(shape, jnp.float32)
    t = jnp.zeros((n,), jnp.int32)

    def loss(params):
        return stage.loss(params, frozen, batch, z0, t, z0, 1.0, None, jax.random.key(0))[0]

    return loss


def sample_row(model: str, batch: int, steps: int = 50, devices=None, platform: str | None = None) -> dict:
    """The pipeline's guided DDIM program: batch split over the devices that divide it, weights replicated."""
    config = load(model)
    ldm = LatentDiffusion(config)
    traits = ldm.traits
    mesh = LocalDevices(None, devices).mesh(batch)          # as the pipeline places a batch
    split = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
    whole = mesh_lib.replicated(mesh)
    unet = _with_sharding({"params": components.abstract_params(config.model.unet)}, whole)
    latents = jax.ShapeDtypeStruct((batch, traits.latent_size, traits.latent_size, traits.latent_channels),
                                   jnp.float32, sharding=split)
    cond, uncond = {}, None
    if traits.is_text:
        width = int(config.model.unet.params.context_dim)
        context = jax.ShapeDtypeStruct((batch, 77, width), jnp.float32, sharding=split)
        cond, uncond = {"context": context}, {"context": context}
    scalar = jax.ShapeDtypeStruct((), jnp.float32, sharding=whole)
    rng = jax.ShapeDtypeStruct((2,), jnp.uint32, sharding=whole)
    sampler = LatentSampler(ldm.apply_unet, ldm.schedule, ldm.parameterization,  # as the pipeline's
                            jit_kwargs={"compiler_options": compile_options.forward_only(platform or "cpu")})
    measured, traced, compiled = _compile(sampler._run, unet, latents, cond, uncond, scalar, scalar, rng, None,
                                          None, scalar, None, sampler="ddim", steps=steps, discretize="uniform",
                                          return_intermediates=False, progress=False, platform=platform)
    return {"program": f"ddim{steps}+cfg" if uncond else f"ddim{steps}", "model": model,
            "mesh": f"data={mesh.size}", "batch": batch // mesh.size, "precision": "f32", **measured,
            "trace_s": traced, "compile_s": compiled, "state_gb": _shard_bytes(unet) / GB,
            "state_floor_gb": _nbytes(unet) / GB,
            "params_m": _millions(unet)}


GPU_TARGETS = pathlib.Path(__file__).resolve().parent / "gpu_targets"


def accelerator_devices(topology: str):
    """(devices, lowering platform) of a TPU slice ("v5e:2x4", needs libtpu) or of GPUs ("h100:8", needs
    jax's CUDA plugin, and cuDNN for its attention), for compiling on a host that has none of them."""
    from jax.experimental import topologies

    name, _, shape = topology.partition(":")
    target = GPU_TARGETS / f"{name}.txtpb"
    try:
        if target.exists():
            devices = topologies.get_topology_desc(platform="cuda", target_config=target.read_text(),
                                                   topology=f"1x1x{int(shape or 1)}").devices
            return devices, "cuda"
        return topologies.get_topology_desc(topology_name=topology, platform="tpu").devices, "tpu"
    except Exception as error:
        need = ("jax's CUDA plugin (pip install 'jax[cuda12]')" if target.exists()
                else "libtpu (pip install 'jax[tpu]')")
        raise SystemExit(f"--topology {topology}: no compiler for it ({error}); install {need} to compile "
                         f"for it from this host") from error


COLUMNS = ("backend", "program", "model", "mesh", "batch", "precision", "params_m", "state_gb", "state_floor_gb",
           "argument_gb", "output_gb", "alias_gb", "temp_gb", "activations_gb", "peak_gb", "tflops", "trace_s",
           "compile_s")


def markdown(rows: list[dict]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in rows:
        cells = [row.get(c, "") for c in COLUMNS]
        lines.append("| " + " | ".join(f"{c:.3g}" if isinstance(c, float) else str(c) for c in cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--programs", default="train,sample", help="train and / or sample")
    parser.add_argument("--models", default="sd_v1,sd_v2_v,cin256,kl_f8", help=f"of {sorted(MODELS)} or configs")
    parser.add_argument("--meshes", default=",".join(MESHES), help=f"of {list(MESHES)}")
    parser.add_argument("--batches", default="1,8", help="per-device batch sizes")
    parser.add_argument("--precisions", default=",".join(PRECISIONS), help=f"of {list(PRECISIONS)}")
    parser.add_argument("--sample-models", default="sd_v1,sd_v2_v", help="the models whose sampler is compiled")
    parser.add_argument("--steps", type=int, default=50, help="sampler steps")
    parser.add_argument("--json", help="also write the rows to this file")
    parser.add_argument("--topology", help="compile for a TPU slice (e.g. v5e:2x4; needs libtpu) or GPUs "
                                           f"(e.g. h100:8, of {sorted(p.stem for p in GPU_TARGETS.glob('*.txtpb'))}; "
                                           "needs jax's CUDA plugin) instead")
    parser.add_argument("--latent-cache", action="store_true",
                        help="train on cached latents and text contexts (no first stage, no text encoder)")
    parser.add_argument("--cache-dir", help="JAX's persistent compilation cache (run twice: the second is warm)")
    args = parser.parse_args(argv)
    if args.cache_dir:
        jax.config.update("jax_compilation_cache_dir", args.cache_dir)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    split = lambda text: [x for x in text.split(",") if x]  # noqa: E731
    devices, platform = accelerator_devices(args.topology) if args.topology else (None, None)
    programs = split(args.programs)
    rows = []

    def report(row):
        row["backend"] = f"{platform} {args.topology}" if args.topology else "cpu x8"
        rows.append(row)
        print(json.dumps(row), flush=True)

    if "train" in programs:
        for model in split(args.models):
            for mesh_name in split(args.meshes):
                for batch in map(int, split(args.batches)):
                    for precision in split(args.precisions):
                        report(train_row(model, mesh_name, batch, precision, devices, platform,
                                         args.latent_cache))
    if "sample" in programs:
        for model in split(args.sample_models):
            for batch in map(int, split(args.batches)):
                report(sample_row(model, batch, args.steps, devices, platform))
    print(markdown(rows))
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
