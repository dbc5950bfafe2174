"""bfloat16 compute against float32 on the built-in LDM: the two loss curves of one run each, from
the same first stage, data order, seed and initial weights (float32 master weights in both).

    python experiments/bf16_curves.py --workdir /tmp/bf16_curves                  # ~400 steps each
    python experiments/bf16_curves.py --workdir /tmp/bf16_curves --steps 1000 --window 50

The built-in autoencoder is trained first (`--autoencoder-steps`, reused when its export exists),
then `configs/builtin_shapes.py:ldm` twice, with `precision.compute_dtype` float32 and bfloat16.
Printed: the mean loss of each window of `--window` steps for both and their relative difference;
`curves.json` in the workdir keeps them.
"""
import argparse
import json
import pathlib
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from ldm_jax.config_files import load_config  # noqa: E402
from ldm_jax.training import loop  # noqa: E402
from ldm_jax.training.experiment import with_training_defaults  # noqa: E402

CONFIG = str(REPO / "configs" / "builtin_shapes.py")
PRECISIONS = ("float32", "bfloat16")


def _config(variant: str, steps: int, window: int):
    config = with_training_defaults(load_config(f"{CONFIG}:{variant}"))
    config.train.update(num_steps=steps, log_every_steps=window, image_every_steps=0)
    config.checkpoint.update(every_steps=steps)
    return config


def window_losses(workdir: pathlib.Path) -> list[float]:
    """The loss the loop logged for each window (its mean over the window's steps)."""
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    return [record["loss"] for record in records if "loss" in record]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", type=pathlib.Path, required=True)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--window", type=int, default=25)
    parser.add_argument("--autoencoder-steps", type=int, default=1500)
    args = parser.parse_args(argv)

    first_stage = args.workdir / "autoencoder" / "first_stage.safetensors"
    if not first_stage.exists():
        loop.train_and_evaluate(_config("autoencoder", args.autoencoder_steps, 100), first_stage.parent)
    curves = {}
    for precision in PRECISIONS:
        config = _config("ldm", args.steps, args.window)
        config.pretrained.first_stage = str(first_stage)
        config.precision.compute_dtype = precision
        loop.train_and_evaluate(config, args.workdir / precision)
        curves[precision] = window_losses(args.workdir / precision)

    print(f"{'steps':>11}  {'float32':>9}  {'bfloat16':>9}  relative difference")
    rows = []
    for index, (f32, bf16) in enumerate(zip(*(curves[p] for p in PRECISIONS))):
        steps = f"{index * args.window + 1}-{(index + 1) * args.window}"
        rows.append({"steps": steps, "float32": f32, "bfloat16": bf16, "relative_difference": (bf16 - f32) / f32})
        print(f"{steps:>11}  {f32:9.5f}  {bf16:9.5f}  {rows[-1]['relative_difference']:+.2%}")
    (args.workdir / "curves.json").write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
