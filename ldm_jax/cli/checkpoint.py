"""`ldm-jax convert` and `ldm-jax check`: a CompVis / Stable Diffusion checkpoint, converted or tried once."""
import time


def add(commands) -> None:
    convert = commands.add_parser(
        "convert", help="convert a CompVis / Stable Diffusion checkpoint to a .safetensors ldm-jax loads",
        description="Reads a CompVis-format .ckpt or .safetensors with its reference YAML, checks every "
                    "tensor against the model, and writes a CompVis-format .safetensors plus the YAML "
                    "beside it (no torch needed to read it again).",
        epilog="example: ldm-jax convert sd-v1-4.ckpt --config v1-inference.yaml --out sd-v1-4.safetensors")
    convert.add_argument("checkpoint", help="the .ckpt or .safetensors file")
    convert.add_argument("--config", help="the reference YAML (default: <checkpoint>.yaml beside it)")
    convert.add_argument("--ema", action="store_true", help="take the UNet weights from model_ema.*")
    convert.add_argument("--out", required=True, help="the .safetensors file to write")
    convert.set_defaults(run=_convert)

    check = commands.add_parser(
        "check", help="load a checkpoint and run each of its models once on random inputs",
        description="Loads every component of a checkpoint, prints its parameter count, and runs it on "
                    "random inputs of the configured size: a quick test that the checkpoint is usable.",
        epilog="example: ldm-jax check sd-v1-4.safetensors --config v1-inference.yaml")
    check.add_argument("checkpoint", help="the .ckpt or .safetensors file")
    check.add_argument("--config", help="the reference YAML (default: <checkpoint>.yaml beside it)")
    check.add_argument("--ema", action="store_true", help="take the UNet weights from model_ema.*")
    check.add_argument("--seed", type=int, default=0)
    check.set_defaults(run=_check)


def _convert(args) -> int:
    from ldm_jax.convert import compvis

    start = time.perf_counter()
    config, variables = compvis.load_checkpoint(args.checkpoint, args.config, use_ema=args.ema)
    compvis.save_checkpoint(args.out, config, variables)
    print(f"wrote {args.out} ({', '.join(variables)}) in {time.perf_counter() - start:.1f}s")
    return 0


def _check(args) -> int:
    from ldm_jax.convert import compvis, smoke_check

    config, variables = compvis.load_checkpoint(args.checkpoint, args.config, use_ema=args.ema)
    for line in smoke_check.run_components(config, variables, seed=args.seed):
        print(line)
    return 0
