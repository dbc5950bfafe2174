"""Benchmark: LDM training images/s from a latent cache against encoding the images in the step.

One model, one set of random weights, the same records both ways: the LDM of --config (default
LDM-KL-8 of LSUN-Churches: the KL-f8 first stage at its released width, 256^2 images -> 32x32x4
latents), its UNet narrowed to --unet-channels (192 is the released width; 64 fits a CPU), on the
built-in dataset at --image-size. The records are encoded once into a latent cache
(`write_latent_cache`, timed: the one-off cost). Then each way runs what `ldm-jax train` runs:
`pipeline_from_config` (data.name "builtin": the step runs the frozen encoder; "latent_cache": the
step draws z = mean + std * eps from the cached posterior) feeding the jitted, state-donating
`guarded_step(stage.train_step)`. Before timing, parity: the first step's loss both ways (same
records, same rng, so the same posterior sample up to the encoder's rounding). Reported per way:
images/s (the median over --rounds, the ways interleaved), compile seconds and XLA's FLOPs per step.

    python experiments/bench_latent_cache.py                              # CPU: UNet 64 channels, batch 2
    python experiments/bench_latent_cache.py --unet-channels 192 --batch 8 --steps 20   # the released UNet
    python experiments/bench_latent_cache.py --config configs/builtin_shapes.py:ldm_tiny --image-size 16
"""
import argparse
import json
import os
import pathlib
import statistics
import sys
import tempfile
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

WAYS = ("images", "latent_cache")


def experiment_config(config_path: str, *, unet_channels: int | None, image_size: int | None, batch: int,
                      records: int):
    """The config both ways train: pretrained weights off (random ones are set here), the built-in data."""
    from ldm_jax.config_files import load_config
    from ldm_jax.training.experiment import with_training_defaults

    config = with_training_defaults(load_config(config_path))
    if unet_channels:
        config.model.unet.params.model_channels = unet_channels
    config.pretrained.update(model="", first_stage="", cond_stage="")
    config.train.global_batch_size = batch
    config.data.update(name="builtin", num_records=records, image_size=image_size or config.data.image_size,
                       random_crop=False, flip=False, task="image", split="train")
    return config


def random_variables(config, seed: int = 0) -> dict:
    """Random weights for every section, drawn on the host (compiling `init` of a full first stage is slow
    on a CPU): kernels with unit-variance outputs, biases 0, norm scales 1."""
    import jax
    import jax.numpy as jnp

    from ldm_jax.models import components

    rng = np.random.default_rng(seed)

    def draw(path, spec):
        leaf = path[-1].key
        if leaf in ("bias", "scale"):
            return jnp.full(spec.shape, float(leaf == "scale"), spec.dtype)
        return jnp.asarray(rng.standard_normal(spec.shape) / np.sqrt(np.prod(spec.shape[:-1]) or 1), spec.dtype)

    return {section: {"params": jax.tree_util.tree_map_with_path(
                draw, components.abstract_params(config.model[section].to_dict()))}
            for section in ("first_stage", "unet", "cond_stage") if section in config.model}


def write_cache(stage, state, data, out: pathlib.Path) -> dict:
    """Encodes every record of `data` once into a latent cache at `out`; the time and rate."""
    from ldm_jax.data.config import source_from_config, transform_from_config
    from ldm_jax.data.latent_cache import FirstStageEncoder, write_latent_cache
    from ldm_jax.data.pipeline import make_pipeline

    encoder = FirstStageEncoder(stage.ldm.first_stage.module, state.frozen["first_stage"])
    pipeline = make_pipeline(source_from_config(data), transform_from_config(data), batch_size=data.batch_size,
                             seed=0, shuffle=False, num_epochs=1, drop_remainder=False, process_index=0,
                             process_count=1)
    start = time.perf_counter()
    with pipeline:
        description = write_latent_cache(pipeline, encoder, out)
    seconds = time.perf_counter() - start  # the encoder's compile included: a one-off cost either way
    return {"records": description["num_records"], "seconds": seconds, "shapes": description["shapes"]}


def _device_fields(batch: dict) -> dict:
    return {name: value for name, value in batch.items() if isinstance(value, np.ndarray) and value.dtype != object}


class Way:
    """One way of feeding the step: its data config, compiled step and measurements."""

    def __init__(self, name: str, data, step_fn, initial_state, rng, compile_step: bool = True):
        from ldm_jax.data.config import pipeline_from_config

        self.name, self.data, self.initial_state, self.rng = name, data, initial_state, rng
        with pipeline_from_config(data, process_index=0, process_count=1) as pipeline:
            batch = _device_fields(next(pipeline))
        start = time.perf_counter()
        lowered = step_fn.lower(initial_state, batch, rng)
        self.step = lowered.compile() if compile_step else None
        self.compile_s = time.perf_counter() - start
        cost = (self.step or lowered).cost_analysis()
        cost = cost[0] if isinstance(cost, (list, tuple)) else cost
        self.gflops = float((cost or {}).get("flops", 0.0)) / 1e9
        self.first_loss, self.rates = None, []

    def measure(self, steps: int, warmup: int) -> float:
        """images/s over `steps` steps after `warmup`, from the initial state at the pipeline's start."""
        import jax

        from ldm_jax.data.config import pipeline_from_config

        state = jax.device_put(self.initial_state)  # a copy: the step donates it
        with pipeline_from_config(self.data, process_index=0, process_count=1) as pipeline:
            for index in range(warmup + steps):
                if index == warmup:
                    jax.block_until_ready(state)
                    start = time.perf_counter()
                state, metrics = self.step(state, _device_fields(next(pipeline)), self.rng)
                if self.first_loss is None:
                    self.first_loss = float(metrics["loss"])
            jax.block_until_ready(state)
        rate = steps * self.data.batch_size / (time.perf_counter() - start)
        self.rates.append(rate)
        return rate


def run(args) -> dict:
    import jax

    from ldm_jax.training.experiment import stage_from_config
    from ldm_jax.training.loop import guarded_step

    config = experiment_config(args.config, unet_channels=args.unet_channels, image_size=args.image_size,
                               batch=args.batch, records=args.records or 4 * args.batch)
    stage = stage_from_config(config)
    state = stage.state_from_variables(random_variables(config, args.seed))
    traits = stage.ldm.traits
    side = config.data.image_size // traits.factor
    print(f"{args.config}: {config.data.image_size}^2 images -> {side}x{side}x{traits.latent_channels} latents "
          f"(f={traits.factor}); UNet {config.model.unet.params.model_channels} channels; batch {args.batch}; "
          f"{jax.device_count()} {jax.devices()[0].platform} device(s); load {os.getloadavg()[0]:.2f}", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        cache = write_cache(stage, state, config.data, pathlib.Path(tmp) / "cache")
        print(f"cache: {cache['records']} records encoded in {cache['seconds']:.1f} s (compile included)", flush=True)
        cached_data = config.data.copy_and_resolve_references()
        cached_data.update(name="latent_cache", data_dir=str(pathlib.Path(tmp) / "cache"))
        step_fn = jax.jit(guarded_step(stage.train_step), donate_argnums=0)
        initial = jax.device_get(state)
        rng = jax.random.key(args.seed)
        ways = [Way(name, data, step_fn, initial, rng, compile_step=not args.flops_only)
                for name, data in zip(WAYS, (config.data.copy_and_resolve_references(), cached_data))]
        for way in ways:
            print(f"{way.name}: {way.gflops:.1f} GFLOP per step ({way.compile_s:.1f} s to lower"
                  f"{'' if args.flops_only else ' and compile'})", flush=True)
        if args.flops_only:
            return {way.name: {"gflops_per_step": way.gflops} for way in ways}
        for round_index in range(args.rounds):
            for way in ways:
                rate = way.measure(args.steps, args.warmup)
                print(f"  round {round_index}: {way.name:13s} {rate:8.3f} images/s", flush=True)

    result = {"config": args.config, "image_size": config.data.image_size,
              "latent": [side, side, traits.latent_channels], "unet_channels": config.model.unet.params.model_channels,
              "batch": args.batch, "cache_records": cache["records"], "cache_write_s": cache["seconds"],
              "load_after": os.getloadavg()[0]}
    for way in ways:
        result[way.name] = {"images_per_s": statistics.median(way.rates), "best_images_per_s": max(way.rates),
                            "compile_s": way.compile_s, "gflops_per_step": way.gflops, "first_loss": way.first_loss}
    images, cached = result["images"], result["latent_cache"]
    result["speedup"] = cached["images_per_s"] / images["images_per_s"]
    result["first_loss_relative_diff"] = abs(cached["first_loss"] - images["first_loss"]) / abs(images["first_loss"])
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(REPO / "configs" / "lsun_churches_ldm_kl8.py"),
                        help="an LDM config file (path.py or path.py:variant)")
    parser.add_argument("--unet-channels", type=int, default=64, help="the UNet's model_channels (0: the config's)")
    parser.add_argument("--image-size", type=int, default=None, help="default: the config's data.image_size")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--records", type=int, default=0, help="records encoded and read (default: 4 batches)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per round and way")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps before them")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--flops-only", action="store_true",
                        help="only XLA's FLOPs per step of both ways (lowered, not compiled or timed)")
    parser.add_argument("--json", help="also write the result here")
    args = parser.parse_args(argv)
    result = run(args)
    if args.flops_only:
        return 0
    images, cached = result["images"], result["latent_cache"]
    print(f"\n{'':14s} {'images/s':>9s} {'best':>9s} {'GFLOP/step':>11s} {'compile s':>10s} {'first loss':>11s}")
    for name in WAYS:
        way = result[name]
        print(f"{name:14s} {way['images_per_s']:9.3f} {way['best_images_per_s']:9.3f} {way['gflops_per_step']:11.1f} "
              f"{way['compile_s']:10.1f} {way['first_loss']:11.6f}")
    flops_ratio = images["gflops_per_step"] / cached["gflops_per_step"]
    print(f"from the cache: {result['speedup']:.2f}x the images/s of encoding on the fly; first losses differ by "
          f"{result['first_loss_relative_diff']:.2e} (relative); {flops_ratio:.2f}x the FLOPs per step on the fly")
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
