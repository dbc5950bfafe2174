"""Benchmark: one LDM training step of ours against the same UNet in diffusers on PyTorch.

A step is forward + backward + optimizer update: x_t = q_sample(z0, t, noise), eps = UNet(x_t, t,
context), loss = mean((eps - noise)^2), AdamW (lr 1e-4, weight decay 0.01, torch's defaults
otherwise). Ours is `LatentDiffusionStage.train_step` itself (what the training loop runs),
on a batch of cached latents and cached text embeddings, so neither side runs a first stage or a
text encoder; diffusers' side is `UNet2DConditionModel` + `torch.optim.AdamW`.

The weights are shared exactly as in `bench_sampling.py` (whose helpers this imports): an
SD-v1-shaped UNet with random weights written once as a CompVis state dict, loaded by ours with
`compvis.convert_module` and by diffusers with its own LDM conversion. Before timing, a parity
check on the same latents, noise, timesteps and context: the loss of both, and every gradient
tensor (ours converted back to CompVis, then to diffusers' names by diffusers' own converter),
max |ours - diffusers| against max |diffusers| per tensor.

Each framework runs in its own child process pinned to the same --threads cores; we report the
step time (median and min of --repeats after --warmup), our compile time and each peak RSS.

    python experiments/bench_train.py                          # size small, batch 2, 32x32 latents, CPU
    python experiments/bench_train.py --size tiny --check-only # the parity check only
    python experiments/bench_train.py --profile /tmp/prof      # also where our step's time goes
"""
import argparse
import json
import os
import pathlib
import re
import subprocess
import sys
import tempfile
import time

import numpy as np

EXPERIMENTS = pathlib.Path(__file__).resolve().parent
for path in (EXPERIMENTS, EXPERIMENTS.parent):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import bench_sampling as shared  # noqa: E402  (random CompVis weights, diffusers loading, timing helpers)

LEARNING_RATE, WEIGHT_DECAY = 1e-4, 0.01
TINY_TEXT_VOCAB = 16  # the (unused) text encoder: cached contexts stand in for it


# ------------------------------------------------------------------------------------------------
# Shared inputs.

def training_inputs(params: dict, latent_size: int, batch: int, seed: int = 1) -> dict[str, np.ndarray]:
    """Latents z0 and noise (N, H, W, 4) NHWC, timesteps (N,), contexts (N, 77, D), the schedule's
    sqrt(abar) / sqrt(1 - abar) (the SD v1 schedule) for the torch side's q_sample."""
    from ldm_jax.diffusion.schedule import DiffusionSchedule

    rng = np.random.default_rng(seed)
    shape = (batch, latent_size, latent_size, params["out_channels"])
    schedule = DiffusionSchedule.create("linear", shared.NUM_TIMESTEPS, shared.LINEAR_START, shared.LINEAR_END)
    return dict(z0=rng.standard_normal(shape).astype(np.float32), noise=rng.standard_normal(shape).astype(np.float32),
                timesteps=rng.integers(0, shared.NUM_TIMESTEPS, batch).astype(np.int64),
                context=rng.standard_normal((batch, shared.CONTEXT_LENGTH, params["context_dim"])).astype(np.float32),
                sqrt_alphas_cumprod=np.asarray(schedule.sqrt_alphas_cumprod),
                sqrt_one_minus_alphas_cumprod=np.asarray(schedule.sqrt_one_minus_alphas_cumprod))


def experiment_config(params: dict, *, ema: bool = False, remat: bool = False):
    """Our experiment config: the benchmark UNet, SD v1 diffusion settings, a frozen text stage.

    The first stage and the text encoder are tiny stand-ins: the batch carries cached latents
    ("mean", "std") and contexts, so the step never runs them (as training from a latent cache).
    """
    from ldm_jax import zoo
    from ldm_jax.training.ldm_stage import default_ldm_train_config

    first_stage = {"kind": "autoencoder_kl", "params": {"embed_dim": 4, "ddconfig": {
        "double_z": True, "z_channels": 4, "resolution": 64, "in_channels": 3, "out_ch": 3, "ch": 32,
        "ch_mult": [1, 1, 1, 1], "num_res_blocks": 1, "attn_resolutions": [], "dropout": 0.0}}}
    text = {"kind": "clip_text", "params": {
        "model_type": "clip_text_model", "hidden_size": params["context_dim"], "intermediate_size": 64,
        "num_hidden_layers": 1, "num_attention_heads": 1, "max_position_embeddings": shared.CONTEXT_LENGTH,
        "vocab_size": TINY_TEXT_VOCAB, "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5}}
    model = zoo.latent_diffusion(first_stage, zoo.unet(**params), {}, cond_stage=text, conditioning_key="crossattn",
                                 linear_start=shared.LINEAR_START, linear_end=shared.LINEAR_END,
                                 timesteps=shared.NUM_TIMESTEPS, image_size=params["image_size"], channels=4)
    config = default_ldm_train_config()
    config.model = model.model
    config.optimizer.learning_rate = LEARNING_RATE
    config.optimizer.weight_decay = WEIGHT_DECAY
    config.ema.use_ema = ema
    config.precision.remat = remat
    return config


def our_stage_and_state(params: dict, unet_state_dict, *, ema: bool = False, remat: bool = False):
    """(stage, state) with the shared UNet weights; zeros for the unused first stage and text encoder."""
    import jax
    import jax.numpy as jnp

    from ldm_jax.convert import compvis
    from ldm_jax.models import components
    from ldm_jax.training.ldm_stage import LatentDiffusionStage

    config = experiment_config(params, ema=ema, remat=remat)
    stage = LatentDiffusionStage.from_config(config)
    _, unet_variables = compvis.convert_module("unet", unet_state_dict, params)
    zeros = lambda section: {"params": jax.tree.map(  # noqa: E731
        lambda s: jnp.zeros(s.shape, s.dtype), components.abstract_params(config.model[section]))}
    state = stage.state_from_variables({"unet": unet_variables, "first_stage": zeros("first_stage"),
                                        "cond_stage": zeros("cond_stage")})
    return stage, state


def cached_batch(inputs: dict) -> dict:
    """The latents as a KL latent cache with zero std (so z0 is exactly the given latents)."""
    return {"mean": inputs["z0"], "std": np.zeros_like(inputs["z0"]), "context": inputs["context"]}


def our_loss_and_grads(stage, state, inputs: dict):
    """(loss, UNet gradient tree) of ours at the given z0 / noise / timesteps / context."""
    import jax
    import jax.numpy as jnp

    batch = cached_batch(inputs)
    z0, noise = jnp.asarray(inputs["z0"]), jnp.asarray(inputs["noise"])
    t = jnp.asarray(inputs["timesteps"], jnp.int32)

    def loss(params):
        return stage.loss(params, state.frozen, batch, z0, t, noise, 1.0, None, jax.random.key(0))[0]

    value, grads = jax.jit(jax.value_and_grad(loss))(state.params)
    return float(value), grads["unet"]


def torch_loss_and_grads(model, inputs: dict, device="cpu") -> tuple[float, dict]:
    """(loss, {diffusers name: grad}) of one forward/backward of diffusers' UNet on the same inputs."""
    import torch.nn.functional as F

    tensors = _torch_inputs(inputs, device)
    model.zero_grad(set_to_none=True)
    loss = F.mse_loss(model(_q_sample(tensors), tensors["t"], tensors["context"]).sample, tensors["noise"])
    loss.backward()
    return float(loss.detach()), {name: p.grad.detach().cpu().numpy() for name, p in model.named_parameters()}


def _torch_inputs(inputs: dict, device) -> dict:
    import torch

    tensor = lambda a: torch.from_numpy(np.array(a)).to(device)  # noqa: E731  (a copy: torch wants writable)
    nchw = lambda a: tensor(np.moveaxis(a, -1, 1))  # noqa: E731
    t = tensor(inputs["timesteps"])
    per_sample = lambda buffer: tensor(buffer)[t][:, None, None, None]  # noqa: E731
    return dict(z0=nchw(inputs["z0"]), noise=nchw(inputs["noise"]), t=t, context=tensor(inputs["context"]),
                a=per_sample(inputs["sqrt_alphas_cumprod"]), b=per_sample(inputs["sqrt_one_minus_alphas_cumprod"]))


def _q_sample(tensors: dict):
    return tensors["a"] * tensors["z0"] + tensors["b"] * tensors["noise"]


def diffusers_names(params: dict, reference: dict[str, np.ndarray], latent_size: int) -> dict[str, np.ndarray]:
    """CompVis-keyed UNet tensors (our gradients) under diffusers' names and layouts, by diffusers' own
    LDM converter: the same mapping that loaded the weights."""
    import warnings

    import torch
    from diffusers.loaders import single_file_utils as sfu

    original_config = {"model": {"params": {"unet_config": {"params": params},
                                            "first_stage_config": {"params": {"ddconfig": {"ch_mult": [1, 2, 4, 4]}}}}}}
    with warnings.catch_warnings():  # image_size is deprecated there, and only sets sample_size
        warnings.simplefilter("ignore", FutureWarning)
        config = sfu.create_unet_diffusers_config_from_ldm(original_config, reference, image_size=latent_size * 8)
    checkpoint = {k: torch.from_numpy(np.array(v)) for k, v in reference.items()}
    return {k: v.numpy() for k, v in sfu.convert_ldm_unet_checkpoint(checkpoint, config).items()}


def reference_grads(grads) -> dict[str, np.ndarray]:
    """Our UNet gradient tree as a CompVis state dict (`model.diffusion_model.*`, torch layouts)."""
    import jax

    from ldm_jax.convert import compvis

    return compvis.to_reference_state_dict("unet", {"params": jax.device_get(grads)})


NEGLIGIBLE = 1e-5  # a tensor whose gradient is below this fraction of the largest one is "zero"


def compare_grads(ours: dict[str, np.ndarray], theirs: dict[str, np.ndarray]) -> dict:
    """Per tensor max|a - b| / max|b|: the worst tensor, and how many were compared.

    Gradients that are mathematically zero (e.g. a bias right before a GroupNorm with one channel
    per group) are float noise on both sides: a tensor below NEGLIGIBLE x the largest gradient is
    only checked to be negligible on our side too.
    """
    different = sorted(set(theirs) ^ set(ours))
    if different:
        raise ValueError(f"gradient names differ between the two sides: {different[:5]}")
    floor = NEGLIGIBLE * max(float(np.abs(b).max()) for b in theirs.values())
    worst_name, worst, negligible = None, 0.0, 0
    for name, b in theirs.items():
        a = ours[name].reshape(b.shape).astype(np.float64)
        scale = float(np.abs(b).max())
        if scale <= floor:
            negligible += 1
            ratio = 0.0 if float(np.abs(a).max()) <= floor else float("inf")
        else:
            ratio = float(np.abs(a - b).max()) / scale
        if ratio >= worst:
            worst_name, worst = name, ratio
    return dict(tensors=len(theirs), zero_gradient_tensors=negligible, worst_tensor=worst_name,
                worst_relative_diff=worst)


def grad_parity_in_process(params: dict, latent_size: int, batch: int = 2, seed: int = 0) -> dict:
    """Loss of both sides and the gradient comparison, both in this process (for tests)."""
    state_dict = shared.random_reference_state_dict(params, seed)
    inputs = training_inputs(params, latent_size, batch, seed + 1)
    stage, state = our_stage_and_state(params, state_dict)
    loss, grads = our_loss_and_grads(stage, state, inputs)
    model = shared.diffusers_unet(params, state_dict, latent_size).train()
    torch_loss, torch_grads = torch_loss_and_grads(model, inputs)
    return dict(loss=loss, torch_loss=torch_loss,
                **compare_grads(diffusers_names(params, reference_grads(grads), latent_size), torch_grads))


# ------------------------------------------------------------------------------------------------
# Workers.

def run_ours(args, workdir: pathlib.Path) -> dict:
    import jax
    from safetensors.numpy import save_file

    from ldm_jax.convert import checkpoint_files

    params = json.loads((workdir / "params.json").read_text())
    inputs = dict(np.load(workdir / "inputs.npz"))
    stage, state = our_stage_and_state(params, checkpoint_files.read_state_dict(workdir / "unet.safetensors"),
                                       ema=args.ema, remat=args.remat)
    rss_loaded = shared.peak_rss_mb()
    loss, grads = our_loss_and_grads(stage, state, inputs)
    save_file(reference_grads(grads), workdir / "ours_grads.safetensors")
    del grads

    if args.check_only:
        memory = shared._jax_memory(rss_loaded)
        return dict(framework=f"ours (jax {jax.__version__})", backend=jax.default_backend(), loss=loss, memory=memory)
    batch = cached_batch(inputs)
    rng = jax.random.key(0)
    step = jax.jit(stage.train_step, donate_argnums=0)
    start = time.perf_counter()
    compiled = step.lower(state, batch, rng).compile()
    compile_s = time.perf_counter() - start
    rss_compiled = shared.peak_rss_mb()
    holder = {"state": state, "i": 0}

    def one_step():
        holder["i"] += 1
        holder["state"], metrics = compiled(holder["state"], batch, jax.random.fold_in(rng, holder["i"]))
        jax.block_until_ready((holder["state"], metrics))

    for _ in range(args.warmup):
        one_step()
    step_s, step_all = shared.median_time(one_step, args.repeats)
    memory = dict(shared._jax_memory(rss_loaded), peak_rss_after_compile_mb=rss_compiled,
                  **_xla_buffers_mb(compiled))
    profile = profile_ours(one_step, args.profile, args.profile_steps, compiled.as_text()) if args.profile else None
    return dict(framework=f"ours (jax {jax.__version__})", backend=jax.default_backend(), loss=loss,
                compile_s=compile_s, step_s=step_s, step_all=step_all, ema=args.ema, remat=args.remat,
                profile=profile, memory=memory)


def _xla_buffers_mb(compiled) -> dict:
    """What XLA allocates for one step: the state and batch (arguments) and the temporaries
    (activations kept for the backward pass, gradients, workspaces)."""
    analysis = compiled.memory_analysis()
    if analysis is None:
        return {}
    return dict(xla_arguments_mb=analysis.argument_size_in_bytes / 2**20,
                xla_temporaries_mb=analysis.temp_size_in_bytes / 2**20)


def profile_ours(one_step, folder: str, steps: int, hlo_text: str, top: int = 20) -> dict:
    """Traces `steps` steps with jax.profiler; sums the XLA:CPU op times (over threads, so CPU time)
    per op and per (forward / backward, layer kind), read from each op's HLO metadata."""
    import collections

    import jax

    folder = pathlib.Path(folder)
    with jax.profiler.trace(str(folder)):
        for _ in range(steps):
            one_step()
    traces = sorted(folder.rglob("*.xplane.pb"), key=lambda p: p.stat().st_mtime)
    if not traces:
        return {"error": f"no .xplane.pb written under {folder}"}
    data = jax.profiler.ProfileData.from_file(str(traces[-1]))
    by_op = collections.Counter()
    for plane in data.planes:
        for line in plane.lines:
            if not line.name.startswith("tf_XLA"):  # the XLA:CPU worker and client threads
                continue
            for event in line.events:
                if not _CONTAINER.match(event.name):  # wrappers whose time is their inner ops'
                    by_op[event.name] += event.duration_ns / steps / 1e6
    sources = _hlo_sources(hlo_text)
    by_part = collections.Counter()
    for name, ms in by_op.items():
        by_part[_part(name, sources.get(name))] += ms
    return dict(trace=str(traces[-1]), total_ms_per_step=sum(by_op.values()),
                by_part_ms=dict(by_part.most_common()),
                top_ops_ms={f"{name} [{sources.get(name, '?')[-90:]}]": ms for name, ms in by_op.most_common(top)})


_CONTAINER = re.compile(r"^(ThunkExecutor|while|call|conditional)\b")


def _hlo_sources(hlo_text: str) -> dict[str, str]:
    """HLO instruction name -> the JAX op path in its metadata (module path, jvp / transpose)."""
    sources = {}
    for match in re.finditer(r"^\s*(?:ROOT )?%?([\w.\-]+) = [^\n]*?metadata=\{op_name=\"([^\"]*)\"", hlo_text,
                             re.MULTILINE):
        sources[match.group(1)] = match.group(2)
    return sources


# (pattern in the op path, layer kind), first match wins.
_KINDS = (("attn1/while", "self-attention (scores, softmax, weighted sum)"), ("attn1", "self-attention projections"),
          ("attn2", "cross-attention"), ("/ff/", "transformer feed-forward"),
          ("conv_general_dilated", "convolutions"),
          (r"/(norm\d?|in_layers:0|out_layers:0|out:0)/", "GroupNorm / LayerNorm"))


def _part(name: str, source: str | None) -> str:
    if source is None:
        return "unattributed: " + re.sub(r"[.\d]+$", "", name)
    phase = "backward" if "transpose(" in source else "forward" if "UNetModel" in source else "optimizer, EMA, loss"
    if phase == "optimizer, EMA, loss":
        return phase
    kind = next((label for pattern, label in _KINDS if re.search(pattern, source)), "other UNet ops")
    return f"{phase}: {kind}"


def run_diffusers(args, workdir: pathlib.Path) -> dict:
    import diffusers
    import torch
    import torch.nn.functional as F
    from safetensors.numpy import load_file, save_file

    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "gpu" else "cpu")
    params = json.loads((workdir / "params.json").read_text())
    inputs = dict(np.load(workdir / "inputs.npz"))
    model = shared.diffusers_unet(params, load_file(workdir / "unet.safetensors"), args.latent_size).to(device)
    model.train()
    rss_loaded = shared.peak_rss_mb()
    loss, grads = torch_loss_and_grads(model, inputs, device)
    save_file(grads, workdir / "diffusers_grads.safetensors")
    del grads
    if args.check_only:
        return dict(framework=f"diffusers {diffusers.__version__} (torch {torch.__version__})", backend=device.type,
                    torch_threads=torch.get_num_threads(), loss=loss)

    optimizer = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE, weight_decay=WEIGHT_DECAY)
    tensors = _torch_inputs(inputs, device)

    def one_step():
        optimizer.zero_grad(set_to_none=True)
        out = model(_q_sample(tensors), tensors["t"], tensors["context"]).sample
        F.mse_loss(out, tensors["noise"]).backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()

    for _ in range(args.warmup):
        one_step()
    step_s, step_all = shared.median_time(one_step, args.repeats)
    memory = dict(peak_rss_mb=shared.peak_rss_mb(), rss_after_load_mb=rss_loaded)
    if device.type == "cuda":
        memory["device_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return dict(framework=f"diffusers {diffusers.__version__} (torch {torch.__version__})", backend=device.type,
                torch_threads=torch.get_num_threads(), loss=loss, step_s=step_s, step_all=step_all, memory=memory)


# ------------------------------------------------------------------------------------------------
# Driver.

def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", choices=sorted(shared.SIZES), default="small")
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument("--latent-size", type=int, default=32)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--ema", action="store_true", help="ours also updates an EMA each step (diffusers: none)")
    parser.add_argument("--remat", action="store_true", help="ours rematerialises ResBlocks / attention")
    parser.add_argument("--profile", help="a folder: also trace --profile-steps of our steps and report per-op times")
    parser.add_argument("--profile-steps", type=int, default=3)
    parser.add_argument("--check-only", action="store_true", help="weights + parity check, no timing")
    parser.add_argument("--json", type=pathlib.Path, help="also write the results here")
    parser.add_argument("--worker", choices=("ours", "diffusers"), help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=pathlib.Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.check_only:
        args.warmup, args.repeats, args.profile = 0, 1, None
    return args


def worker_main(args) -> None:
    if args.device == "cpu":
        shared.pin_threads(args.threads)
        os.environ["JAX_PLATFORMS"] = "cpu"
    run = run_ours if args.worker == "ours" else run_diffusers
    result = run(args, args.workdir)
    (args.workdir / f"{args.worker}.json").write_text(json.dumps(result))


def _forwarded(args) -> list[str]:
    out = []
    for name in ("size", "device", "latent_size", "batch", "threads", "warmup", "repeats", "profile",
                 "profile_steps"):
        value = getattr(args, name)
        if value is not None:
            out += ["--" + name.replace("_", "-"), str(value)]
    flags = {"ema": args.ema, "remat": args.remat, "check_only": args.check_only}
    return out + ["--" + name.replace("_", "-") for name, on in flags.items() if on]


def run_benchmark(args) -> dict:
    """Writes the shared weights and inputs, runs both workers, compares their losses and gradients."""
    from safetensors.numpy import load_file, save_file

    params = shared.unet_params(args.size)
    with tempfile.TemporaryDirectory(prefix="bench_train_") as tmp:
        workdir = pathlib.Path(tmp)
        save_file(shared.random_reference_state_dict(params), workdir / "unet.safetensors")
        np.savez(workdir / "inputs.npz", **training_inputs(params, args.latent_size, args.batch))
        (workdir / "params.json").write_text(json.dumps(params))
        results = {"params": params, "args": {k: str(v) for k, v in vars(args).items()}}
        for worker in ("ours", "diffusers"):
            command = [sys.executable, __file__, "--worker", worker, "--workdir", str(workdir), *_forwarded(args)]
            subprocess.run(command, check=True)
            results[worker] = json.loads((workdir / f"{worker}.json").read_text())
        ours = diffusers_names(params, load_file(workdir / "ours_grads.safetensors"), args.latent_size)
        results["parity"] = dict(loss_ours=results["ours"]["loss"], loss_diffusers=results["diffusers"]["loss"],
                                 **compare_grads(ours, load_file(workdir / "diffusers_grads.safetensors")))
    return results


LOSS_TOLERANCE, GRAD_TOLERANCE = 1e-5, 1e-3


def parity_passed(parity: dict) -> bool:
    """Same loss (relative 1e-5) and every gradient tensor within 1e-3 of its max |value|."""
    loss_ok = abs(parity["loss_ours"] - parity["loss_diffusers"]) <= LOSS_TOLERANCE * abs(parity["loss_diffusers"])
    return loss_ok and parity["worst_relative_diff"] <= GRAD_TOLERANCE


def print_report(results: dict, args) -> bool:
    """Prints the table; returns whether the parity check passed."""
    ours, theirs, check = results["ours"], results["diffusers"], results["parity"]
    params = results["params"]
    passed = parity_passed(check)
    print(f"\nSD-v1-shaped UNet, size {args.size}: model_channels {params['model_channels']}, context "
          f"{shared.CONTEXT_LENGTH}x{params['context_dim']}, batch {args.batch}, latents {args.latent_size}x"
          f"{args.latent_size}, float32, {args.device}, {args.threads} thread(s) each; AdamW lr {LEARNING_RATE}, "
          f"weight decay {WEIGHT_DECAY}" + (", ours with EMA" if args.ema else "")
          + (", ours with remat" if args.remat else ""))
    print(f"ours: {ours['framework']} [{ours['backend']}], LatentDiffusionStage.train_step")
    print(f"theirs: {theirs['framework']} [{theirs['backend']}], UNet2DConditionModel + torch.optim.AdamW, "
          f"torch threads {theirs['torch_threads']}")
    print(f"parity loss: ours {check['loss_ours']:.7g}, diffusers {check['loss_diffusers']:.7g}")
    print(f"parity gradients: {check['tensors']} tensors, worst max|ours - diffusers| / max|diffusers| = "
          f"{check['worst_relative_diff']:.3g} ({check['worst_tensor']}); {check['zero_gradient_tensors']} with a zero "
          f"gradient (below {NEGLIGIBLE:g} x the largest, float noise on both sides)")
    print(f"parity check: {'PASSED' if passed else 'FAILED'} (loss within {LOSS_TOLERANCE:g}, gradients within "
          f"{GRAD_TOLERANCE:g} relative)")
    if args.check_only:
        return passed
    a, b = ours["step_s"], theirs["step_s"]
    a_min, b_min = min(ours["step_all"]), min(theirs["step_all"])
    print(f"\n{'':30s}{'ours (s)':>10s}{'diffusers (s)':>15s}{'diffusers / ours':>18s}")
    print(f"{'train step, median of ' + str(args.repeats):30s}{a:10.4f}{b:15.4f}{b / a:17.2f}x")
    print(f"{'train step, min':30s}{a_min:10.4f}{b_min:15.4f}{b_min / a_min:17.2f}x")
    print(f"our compile time: {ours['compile_s']:.1f}s")
    for side, result in (("ours", ours), ("diffusers", theirs)):
        memory = result["memory"]
        text = f"peak RSS {memory['peak_rss_mb']:.0f} MiB (after loading weights {memory['rss_after_load_mb']:.0f} MiB"
        if "peak_rss_after_compile_mb" in memory:
            text += f", after compiling {memory['peak_rss_after_compile_mb']:.0f} MiB"
        text += ")"
        if "xla_temporaries_mb" in memory:
            text += (f"; XLA buffers: state + batch {memory['xla_arguments_mb']:.0f} MiB, temporaries "
                     f"{memory['xla_temporaries_mb']:.0f} MiB")
        if "device_peak_mb" in memory:
            text += f", device peak {memory['device_peak_mb']:.0f} MiB"
        print(f"memory {side:10s} {text}")
    profile = ours.get("profile")
    if profile and "error" not in profile:
        total = profile["total_ms_per_step"]
        print(f"\nwhere our step's time goes (jax.profiler, {args.profile_steps} steps; XLA:CPU op time summed over "
              f"threads, {total:.0f} ms per step; {profile['trace']}):")
        for part, ms in profile["by_part_ms"].items():
            if ms >= 0.005 * total:
                print(f"  {part:62s}{ms:8.1f} ms {100 * ms / total:5.1f}%")
        print("top ops:")
        for name, ms in list(profile["top_ops_ms"].items())[:12]:
            print(f"  {ms:8.1f} ms  {name}")
    return passed


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        worker_main(args)
        return 0
    load_before = os.getloadavg()[0]
    results = run_benchmark(args)
    results["load_average"] = (load_before, os.getloadavg()[0])
    print(f"1-minute load average before / after: {load_before:.2f} / {os.getloadavg()[0]:.2f} on {os.cpu_count()} "
          "cores (other processes inflate the timings)")
    passed = print_report(results, args)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
