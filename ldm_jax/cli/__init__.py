"""The `ldm-jax` command line: demo, convert, check, sample, train, data, evaluate.

    ldm-jax demo --out out
    ldm-jax convert sd-v1-4.ckpt --config v1-inference.yaml --out sd-v1-4.safetensors
    ldm-jax sample --checkpoint sd-v1-4.ckpt --config v1-inference.yaml --prompt "a red house" --out grid.png
    ldm-jax train --config configs/kl_f4.py --workdir /ckpt/kl_f4
    ldm-jax evaluate --checkpoint model.safetensors --num-samples 50000 --reference-stats ref.npz --out eval

One module per command (group) parses its arguments and calls the library; each imports the library
only when its command runs, so `ldm-jax --help` stays fast.
"""
import argparse
import sys

from ldm_jax.cli import checkpoint, data, demo, evaluate, sample, train

EXAMPLES = """examples:
  ldm-jax demo --out out          # train both stages on built-in data, sample, report (CPU, ~25 min)
  ldm-jax convert sd-v1-4.ckpt --config v1-inference.yaml --out sd-v1-4.safetensors
  ldm-jax convert sd-v1-4.ckpt --config v1-inference.yaml --ema --out sd-v1-4-ema.safetensors
  ldm-jax check sd-v1-4.safetensors
  ldm-jax sample --checkpoint sd-v1-4.ckpt --config v1-inference.yaml --tokenizer clip-vit-large-patch14/ \\
      --prompt "a photograph of an astronaut riding a horse" --steps 50 --out grid.png
  ldm-jax train --config configs/builtin_shapes.py:autoencoder --workdir /tmp/shapes_ae
  ldm-jax data build --from folder --out ~/tensorflow_datasets --name pets ~/photos/pets
  ldm-jax evaluate --checkpoint cin256-v2.ckpt --config configs/cin256_ldm_vq4.py --steps 250 \\
      --guidance-scale 1.5 --reference-stats VIRTUAL_imagenet256_labeled.npz \\
      --inception-weights pt_inception-2015-12-05-6726825d.pth --out eval/cin256
Each command's --help says more, with examples.
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="ldm-jax", description="Latent diffusion models in JAX/Flax.", epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--debug", action="store_true", help="on an error, the whole traceback, not one line")
    commands = parser.add_subparsers(dest="command", required=True)
    for module in (checkpoint, sample, data, train, demo, evaluate):
        module.add(commands)

    # `train` and `demo` hand what argparse does not know (`--config.<field>=<value>` overrides, which
    # argparse cannot list) to ml_collections.config_flags, which says what it does not accept.
    argv = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in argv  # taken before or after the command
    args, extra = parser.parse_known_args([arg for arg in argv if arg != "--debug"])
    if extra and not getattr(args, "takes_overrides", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.overrides = extra
    try:
        return args.run(args)
    except Exception as error:  # a bad input ends in its message, like argparse's own errors
        if debug:
            raise
        message = str(error) or type(error).__name__
        print(f"ldm-jax {args.command}: error: {message} (--debug for the traceback)", file=sys.stderr)
        return 1
