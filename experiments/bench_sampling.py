"""Benchmark: our UNet and 25-step DDIM with classifier-free guidance against diffusers on PyTorch.

One run builds an SD-v1-shaped UNet with random weights, writes them once as a CompVis state dict,
and measures, on those same tensors, ours (JAX/Flax) and diffusers' `UNet2DConditionModel` (loaded
through diffusers' own LDM -> diffusers key conversion):

  * a parity check: eps of both on the same input, and the final DDIM latents, max |a - b|;
  * one UNet forward on the guidance batch (2), after warm-up, median of --forward-repeats;
  * the end-to-end DDIM loop (--steps, eta 0, guidance), median of --sample-repeats;
  * our compile times, and the peak memory of each side (RSS on CPU, device peak on GPU).

Each framework runs in its own child process pinned to the same --threads cores, so the two do
not share thread pools and each peak RSS is its own.

    python experiments/bench_sampling.py                       # reduced-width SD v1 on the CPU
    python experiments/bench_sampling.py --size tiny --check-only
    python experiments/bench_sampling.py --size sd_v1 --device gpu --latent-size 64
"""
import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

# UNet construction params per size (CompVis `unet_config.params`); all SD-v1-shaped.
SIZES = {
    "tiny": dict(model_channels=32, num_heads=4, context_dim=64),
    "small": dict(model_channels=64, num_heads=8, context_dim=768),
    "medium": dict(model_channels=128, num_heads=8, context_dim=768),
    "sd_v1": dict(model_channels=320, num_heads=8, context_dim=768),
}
CONTEXT_LENGTH = 77
# The SD v1 schedule ("linear" in LDM = diffusers' "scaled_linear").
LINEAR_START, LINEAR_END, NUM_TIMESTEPS = 0.00085, 0.012, 1000


def unet_params(size: str) -> dict:
    """The reference UNet params of an SD-v1-shaped model of the given width."""
    return dict(image_size=32, in_channels=4, out_channels=4, attention_resolutions=[4, 2, 1],
                num_res_blocks=2, channel_mult=[1, 2, 4, 4], use_spatial_transformer=True,
                transformer_depth=1, legacy=False, **SIZES[size])


# ------------------------------------------------------------------------------------------------
# Shared inputs: random CompVis-format weights and the benchmark inputs.

def random_reference_state_dict(params: dict, seed: int = 0) -> dict[str, np.ndarray]:
    """Random weights for our UNet, as the CompVis state dict (`model.diffusion_model.*`, torch layouts).

    Every tensor is random (the reference zero-initialises output layers, which would make the
    parity check vacuous); kernels are scaled by 1/sqrt(fan_in) so activations stay O(1).
    """
    import flax
    from ldm_jax.convert import compvis
    from ldm_jax.models import unet
    from ldm_jax.models.abstract import abstract_module_params

    module = unet.unet_from_reference(params)
    abstract = abstract_module_params(module, *unet.example_inputs(module))
    rng = np.random.default_rng(seed)
    flat = {}
    for path, leaf in flax.traverse_util.flatten_dict(abstract).items():
        shape = tuple(leaf.shape)
        if path[-1] == "kernel":
            value = rng.standard_normal(shape) / np.sqrt(np.prod(shape[:-1]))
        elif path[-1] == "scale":
            value = 1.0 + 0.1 * rng.standard_normal(shape)
        else:  # biases, embeddings
            value = 0.1 * rng.standard_normal(shape)
        flat[path] = value.astype(np.float32)
    return compvis.to_reference_state_dict("unet", {"params": flax.traverse_util.unflatten_dict(flat)})


def benchmark_inputs(params: dict, latent_size: int, seed: int = 1) -> dict[str, np.ndarray]:
    """x_T (1, H, W, 4) NHWC, the [uncond; cond] contexts (2, 77, D) and a timestep for the check."""
    rng = np.random.default_rng(seed)
    return dict(x_T=rng.standard_normal((1, latent_size, latent_size, params["in_channels"])).astype(np.float32),
                context=rng.standard_normal((2, CONTEXT_LENGTH, params["context_dim"])).astype(np.float32),
                check_timesteps=np.array([981, 981], np.int64))


def ddim_timesteps(steps: int) -> np.ndarray:
    """The reference's uniform DDIM timesteps (ascending), as diffusers' "leading" + steps_offset=1."""
    return np.arange(0, NUM_TIMESTEPS, NUM_TIMESTEPS // steps) + 1


# ------------------------------------------------------------------------------------------------
# Measurement helpers (used in the workers).

def median_time(fn, repeats: int) -> tuple[float, list[float]]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), times


def peak_rss_mb() -> float:
    """This process's peak RSS: the kernel's high-water mark of its own address space (VmHWM).

    Not `getrusage().ru_maxrss`: Linux keeps across exec the peak of the forked copy of the parent,
    so a worker started by this script would report at least the parent's RSS at the fork (the parent
    holds the random weights: 6.8 GB at SD v1 width).
    """
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0  # kB
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def pin_threads(threads: int) -> None:
    """Pin this process to `threads` cores, before any framework starts its thread pools."""
    available = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, available[:threads])


# ------------------------------------------------------------------------------------------------
# Our side.

def run_ours(args, workdir: pathlib.Path) -> dict:
    import jax
    import jax.numpy as jnp
    from ldm_jax import compile_options
    from ldm_jax.convert import checkpoint_files, compvis
    from ldm_jax.models import unet

    dtype = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}[args.dtype]
    params = json.loads((workdir / "params.json").read_text())
    inputs = dict(np.load(workdir / "inputs.npz"))
    _, variables = compvis.convert_module("unet", checkpoint_files.read_state_dict(workdir / "unet.safetensors"), params,
                                          dtype=dtype, param_dtype=dtype)
    # The same architecture, with the JAX-only options convert_module does not take.
    module = unet.unet_from_reference(params, dtype=dtype, param_dtype=dtype,
                                      query_chunk_size=args.query_chunk_size)
    rss_loaded = peak_rss_mb()
    x_T = jnp.asarray(inputs["x_T"])
    context = jnp.asarray(inputs["context"], dtype)
    batch_x = jnp.concatenate([x_T, x_T], axis=0)

    # Compiled as the pipeline compiles its programs.
    forward = jax.jit(lambda v, x, t, c: module.apply(v, x, t, c), compiler_options=compile_options.forward_only())
    start = time.perf_counter()
    compiled_forward = forward.lower(variables, batch_x, jnp.asarray(inputs["check_timesteps"], jnp.int32),
                                     context).compile()
    forward_compile_s = time.perf_counter() - start
    eps = compiled_forward(variables, batch_x, jnp.asarray(inputs["check_timesteps"], jnp.int32), context)
    eps = np.asarray(jax.block_until_ready(eps), np.float32)

    t = jnp.full((2,), 501, jnp.int32)
    for _ in range(args.warmup):
        jax.block_until_ready(compiled_forward(variables, batch_x, t, context))
    forward_s, forward_all = median_time(
        lambda: jax.block_until_ready(compiled_forward(variables, batch_x, t, context)), args.forward_repeats)

    sampler, sampler_name = _our_sampler(module, args.steps)
    guidance = jnp.float32(args.guidance_scale)
    start = time.perf_counter()
    latents = jax.block_until_ready(sampler(variables, x_T, context[1:], context[:1], guidance))
    first_call_s = time.perf_counter() - start
    sample_s, sample_all = median_time(
        lambda: jax.block_until_ready(sampler(variables, x_T, context[1:], context[:1], guidance)),
        args.sample_repeats)
    np.savez(workdir / "ours.npz", eps=eps, latents=np.asarray(latents, np.float32))
    return dict(framework="ours (jax %s)" % jax.__version__, backend=jax.default_backend(),
                sampler=sampler_name, forward_compile_s=forward_compile_s,
                sample_compile_s=max(first_call_s - sample_s, 0.0), forward_s=forward_s,
                forward_all=forward_all, sample_s=sample_s, sample_all=sample_all,
                memory=_jax_memory(rss_loaded))


def _our_sampler(module, steps: int):
    """(fn(variables, x_T, cond, uncond, guidance) -> latents, description): the project's DDIM.

    `LatentSampler` with the UNet wired as `LatentDiffusion.apply_unet` wires it is exactly what
    `LatentDiffusionPipeline.sample_latents` runs (minus the device sharding of the batch): one
    jitted `lax.scan`, one UNet call per step on the [uncond; cond] batch. The progress bar is off.
    """
    from ldm_jax import compile_options
    from ldm_jax.diffusion.sampling import LatentSampler
    from ldm_jax.diffusion.schedule import DiffusionSchedule

    schedule = DiffusionSchedule.create("linear", NUM_TIMESTEPS, LINEAR_START, LINEAR_END)
    model_fn = lambda variables, x, t, cond: module.apply(variables, x, t, context=cond["context"])  # noqa: E731
    sampler = LatentSampler(model_fn, schedule, parameterization="eps",
                            jit_kwargs={"compiler_options": compile_options.forward_only()})  # as the pipeline's

    def sample(variables, x_T, cond, uncond, guidance):
        return sampler(variables, x_T, {"context": cond}, {"context": uncond}, sampler="ddim", steps=steps,
                       guidance_scale=guidance, eta=0.0, progress=False)

    return sample, "ldm_jax.diffusion.sampling.LatentSampler (ddim, eta 0), as pipeline.sample_latents"


def _jax_memory(rss_loaded: float) -> dict:
    import jax
    memory = dict(peak_rss_mb=peak_rss_mb(), rss_after_load_mb=rss_loaded)
    stats = jax.devices()[0].memory_stats() if jax.default_backend() != "cpu" else None
    if stats:
        memory["device_peak_mb"] = stats.get("peak_bytes_in_use", 0) / 2**20
    return memory


# ------------------------------------------------------------------------------------------------
# Diffusers' side.

def diffusers_unet(params: dict, reference_state_dict: dict, latent_size: int):
    """diffusers' UNet2DConditionModel from the CompVis tensors, via diffusers' own LDM conversion."""
    import warnings

    import torch
    from diffusers import UNet2DConditionModel
    from diffusers.loaders import single_file_utils as sfu

    original_config = {"model": {"params": {
        "unet_config": {"params": params},
        "first_stage_config": {"params": {"ddconfig": {"ch_mult": [1, 2, 4, 4]}}}}}}
    with warnings.catch_warnings():  # image_size is deprecated there, and only sets sample_size
        warnings.simplefilter("ignore", FutureWarning)
        config = sfu.create_unet_diffusers_config_from_ldm(original_config, reference_state_dict,
                                                           image_size=latent_size * 8)
    checkpoint = {key: torch.from_numpy(np.ascontiguousarray(value)) for key, value in reference_state_dict.items()}
    converted = sfu.convert_ldm_unet_checkpoint(checkpoint, config)
    model = UNet2DConditionModel(**config)
    model.load_state_dict(converted, strict=True)
    return model.eval()


def eps_parity_in_process(params: dict, latent_size: int, seed: int = 0) -> tuple[float, float]:
    """(max |ours - diffusers|, max |diffusers|) of one UNet call, both in this process (for tests)."""
    import jax
    import jax.numpy as jnp
    import torch

    from ldm_jax.convert import compvis

    state_dict = random_reference_state_dict(params, seed)
    inputs = benchmark_inputs(params, latent_size, seed + 1)
    module, variables = compvis.convert_module("unet", state_dict, params)
    x = np.concatenate([inputs["x_T"]] * 2)
    ours = jax.jit(module.apply)(variables, jnp.asarray(x), jnp.asarray(inputs["check_timesteps"], jnp.int32),
                        jnp.asarray(inputs["context"]))
    model = diffusers_unet(params, state_dict, latent_size)
    with torch.inference_mode():
        theirs = model(torch.from_numpy(np.moveaxis(x, -1, 1).copy()), torch.from_numpy(inputs["check_timesteps"]),
                       torch.from_numpy(inputs["context"])).sample.numpy()
    theirs = np.moveaxis(theirs, 1, -1).astype(np.float64)
    return float(np.abs(np.asarray(jax.device_get(ours), np.float64) - theirs).max()), float(np.abs(theirs).max())


def run_diffusers(args, workdir: pathlib.Path) -> dict:
    import diffusers
    import torch
    from diffusers import DDIMScheduler
    from safetensors.numpy import load_file

    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "gpu" else "cpu")
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[args.dtype]
    params = json.loads((workdir / "params.json").read_text())
    inputs = dict(np.load(workdir / "inputs.npz"))
    model = diffusers_unet(params, load_file(workdir / "unet.safetensors"), args.latent_size).to(device)
    if dtype != torch.float32:
        model = model.to(dtype)
    rss_loaded = peak_rss_mb()
    x_T = torch.from_numpy(np.moveaxis(inputs["x_T"], -1, 1).copy()).to(device)
    context = torch.from_numpy(inputs["context"]).to(device, dtype)
    batch_x = torch.cat([x_T, x_T]).to(dtype)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    with torch.inference_mode():
        eps = model(batch_x, torch.from_numpy(inputs["check_timesteps"]).to(device), context).sample
        eps = np.moveaxis(eps.float().cpu().numpy(), 1, -1)
        t = torch.full((2,), 501, device=device)

        def forward():
            model(batch_x, t, context)
            sync()

        for _ in range(args.warmup):
            forward()
        forward_s, forward_all = median_time(forward, args.forward_repeats)

        scheduler = DDIMScheduler(num_train_timesteps=NUM_TIMESTEPS, beta_start=LINEAR_START, beta_end=LINEAR_END,
                                  beta_schedule="scaled_linear", steps_offset=1, set_alpha_to_one=False,
                                  clip_sample=False)

        def sample():
            scheduler.set_timesteps(args.steps)
            assert np.array_equal(scheduler.timesteps.numpy(), ddim_timesteps(args.steps)[::-1])
            latents = x_T * scheduler.init_noise_sigma
            for step_t in scheduler.timesteps:
                out = model(torch.cat([latents, latents]).to(dtype), step_t, context).sample.float()
                e_uncond, e_cond = out.chunk(2)
                e = e_uncond + args.guidance_scale * (e_cond - e_uncond)
                latents = scheduler.step(e, step_t, latents, eta=0.0).prev_sample
            sync()
            return latents

        latents = sample()  # warm-up
        sample_s, sample_all = median_time(sample, args.sample_repeats)
    np.savez(workdir / "diffusers.npz", eps=eps, latents=np.moveaxis(latents.float().cpu().numpy(), 1, -1))
    memory = dict(peak_rss_mb=peak_rss_mb(), rss_after_load_mb=rss_loaded)
    if device.type == "cuda":
        memory["device_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return dict(framework=f"diffusers {diffusers.__version__} (torch {torch.__version__})", backend=device.type,
                sampler="DDIMScheduler loop", torch_threads=torch.get_num_threads(), forward_s=forward_s,
                forward_all=forward_all, sample_s=sample_s, sample_all=sample_all, memory=memory)


# ------------------------------------------------------------------------------------------------
# Driver.

def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="small")
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument("--latent-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--guidance-scale", type=float, default=7.5)
    parser.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32")
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--forward-repeats", type=int, default=10)
    parser.add_argument("--sample-repeats", type=int, default=3)
    parser.add_argument("--query-chunk-size", type=int, default=None)
    parser.add_argument("--check-only", action="store_true", help="weights + parity check, no timing")
    parser.add_argument("--json", type=pathlib.Path, help="also write the results here")
    parser.add_argument("--worker", choices=("ours", "diffusers"), help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=pathlib.Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.check_only:
        args.warmup, args.forward_repeats, args.sample_repeats = 0, 1, 1
    return args


def worker_main(args) -> None:
    if args.device == "cpu":  # on a GPU the host threads only dispatch: leave them alone
        pin_threads(args.threads)
        os.environ["JAX_PLATFORMS"] = "cpu"
    run = run_ours if args.worker == "ours" else run_diffusers
    result = run(args, args.workdir)
    (args.workdir / f"{args.worker}.json").write_text(json.dumps(result))


def parity(workdir: pathlib.Path) -> dict:
    """max |ours - diffusers| of the check eps and of the final DDIM latents, and the bounds."""
    ours, theirs = np.load(workdir / "ours.npz"), np.load(workdir / "diffusers.npz")
    report = {}
    for name in ("eps", "latents"):
        a, b = ours[name].astype(np.float64), theirs[name].astype(np.float64)
        report[name] = dict(max_abs_diff=float(np.abs(a - b).max()), max_abs_ref=float(np.abs(b).max()))
    return report


def run_benchmark(args) -> dict:
    """Writes the shared weights and inputs, runs both workers, returns their results and the check."""
    params = unet_params(args.size)
    with tempfile.TemporaryDirectory(prefix="bench_sampling_") as tmp:
        workdir = pathlib.Path(tmp)
        from safetensors.numpy import save_file
        start = time.perf_counter()
        save_file(random_reference_state_dict(params), workdir / "unet.safetensors")
        np.savez(workdir / "inputs.npz", **benchmark_inputs(params, args.latent_size))
        (workdir / "params.json").write_text(json.dumps(params))
        print(f"weights: random CompVis state dict written in "
              f"{time.perf_counter() - start:.1f}s", flush=True)
        results = {"params": params, "args": {k: str(v) for k, v in vars(args).items()}}
        for worker in ("ours", "diffusers"):
            command = [sys.executable, __file__, "--worker", worker, "--workdir", str(workdir),
                       *_forwarded(args)]
            subprocess.run(command, check=True)
            results[worker] = json.loads((workdir / f"{worker}.json").read_text())
        results["parity"] = parity(workdir)
    return results


def _forwarded(args) -> list[str]:
    out = []
    for name in ("size", "device", "latent_size", "steps", "guidance_scale", "dtype", "threads", "warmup",
                 "forward_repeats", "sample_repeats", "query_chunk_size"):
        value = getattr(args, name)
        if value is not None:
            out += ["--" + name.replace("_", "-"), str(value)]
    return out


def print_report(results: dict, args) -> bool:
    """Prints the table; returns whether the parity check passed."""
    ours, theirs, check = results["ours"], results["diffusers"], results["parity"]
    tolerance = 1e-3 if args.dtype == "float32" else 5e-2
    passed = all(c["max_abs_diff"] <= tolerance * max(1.0, c["max_abs_ref"]) for c in check.values())
    params = results["params"]
    print(f"\nSD-v1-shaped UNet, size {args.size}: model_channels {params['model_channels']}, "
          f"context {CONTEXT_LENGTH}x{params['context_dim']}, latents {args.latent_size}x{args.latent_size}, "
          f"batch 1 (2 with guidance), {args.dtype}, {args.device}, {args.threads} thread(s) each")
    print(f"ours: {ours['framework']} [{ours['backend']}], sampler: {ours['sampler']}"
          + (f", query_chunk_size {args.query_chunk_size}" if args.query_chunk_size else ""))
    print(f"theirs: {theirs['framework']} [{theirs['backend']}], torch threads {theirs['torch_threads']}")
    for name, c in check.items():
        print(f"parity {name:8s} max|ours - diffusers| = {c['max_abs_diff']:.3g} "
              f"(max|diffusers| {c['max_abs_ref']:.3g}, bound {tolerance:g}*max(1, ref))")
    print(f"parity check: {'PASSED' if passed else 'FAILED'}")
    if args.check_only:
        return passed
    rows = [("UNet forward (batch 2)", "forward"), (f"DDIM {args.steps} steps + CFG", "sample")]
    # The minimum is reported beside the median: it is the figure least disturbed by other load.
    print(f"\n{'':28s}{'ours (s)':>11s}{'diffusers (s)':>15s}{'speed-up':>10s}   (median; min)")
    for label, key in rows:
        a, b = ours[key + "_s"], theirs[key + "_s"]
        a_min, b_min = min(ours[key + "_all"]), min(theirs[key + "_all"])
        print(f"{label:28s}{a:11.4f}{b:15.4f}{b / a:9.2f}x   min {a_min:.4f} vs {b_min:.4f}: {b_min / a_min:.2f}x")
    print(f"our compile time: UNet forward {ours['forward_compile_s']:.1f}s, "
          f"DDIM loop {ours['sample_compile_s']:.1f}s")
    for side, result in (("ours", ours), ("diffusers", theirs)):
        memory = result["memory"]
        text = (f"peak RSS {memory['peak_rss_mb']:.0f} MiB (after loading weights "
                f"{memory['rss_after_load_mb']:.0f} MiB)")
        if "device_peak_mb" in memory:
            text += f", device peak {memory['device_peak_mb']:.0f} MiB"
        print(f"memory {side:10s} {text}")
    return passed


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        worker_main(args)
        return 0
    load_before = os.getloadavg()[0]
    results = run_benchmark(args)
    results["load_average"] = (load_before, os.getloadavg()[0])
    print(f"1-minute load average before / after: {load_before:.2f} / {os.getloadavg()[0]:.2f} "
          f"on {os.cpu_count()} cores (other processes inflate the timings)")
    passed = print_report(results, args)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
