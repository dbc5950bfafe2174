"""`ldm-jax train`: train the model of a config file in a workdir (resumes there)."""
import argparse

EXAMPLES = """examples:
  ldm-jax train --config configs/kl_f4.py:tiny --workdir /tmp/ae --config.train.num_steps=200
  ldm-jax train --config configs/cin256_ldm_vq4.py --workdir gs://bucket/cin256 \\
      --config.data.name=tfds --config.data.tfds_name=imagenet2012 --config.data.data_dir=gs://bucket/tfds
A run restarted with the same --workdir resumes from its latest checkpoint; SIGTERM saves and exits.
"""


def add(commands) -> None:
    train = commands.add_parser(
        "train", help="train an autoencoder or a latent diffusion model from a config",
        description="Trains the model of a configs/*.py file (stage 1 when it holds only a first stage, stage 2 "
                    "with a UNet) in --workdir: checkpoints, metrics.jsonl and image grids go there. Any config "
                    "field can be set with --config.<field>=<value> (ml_collections.config_flags).",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    train.add_argument("--config", required=True, help="configs/<experiment>.py, or path.py:variant")
    train.add_argument("--workdir", required=True, help="where checkpoints, metrics and images are written")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.set_defaults(run=_train, takes_overrides=True)


def _train(args) -> int:
    from ldm_jax.config_files import apply_overrides, load_config
    from ldm_jax.training.experiment import with_training_defaults
    from ldm_jax.training.loop import train_and_evaluate

    config = apply_overrides(with_training_defaults(load_config(args.config)), args.overrides)
    summary = train_and_evaluate(config, args.workdir, progress=not args.no_progress)
    print(f"trained to step {summary['step']} in {args.workdir}"
          + (f": loss {summary['loss']:.4g}" if "loss" in summary else ""))
    return 0
