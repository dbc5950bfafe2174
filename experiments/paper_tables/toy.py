"""The toy models of the paper-table rows marked "toy": trained on the built-in shapes on a CPU.

Both are `configs/builtin_shapes.py`'s (a KL-f4 autoencoder, then a class-conditional LDM with label
dropout 0.1 on its latents), narrower and shorter. `python experiments/paper_tables.py --run-toy`
trains them into WORK/toy_<size>/{autoencoder,ldm} (`train_and_evaluate`, resumable) and evaluates the
toy rows with `ldm-jax evaluate --features builtin --data builtin`; `evaluation` here overrides those
rows' sample counts and sampler steps, so one row config serves every size.

Sizes (`get_config(size)`):
  "default"  16x16 shapes, width 32: 300 autoencoder + 400 LDM steps, 120 samples of 25 DDIM steps
             (a few minutes on 2 CPU cores); the numbers are a pipeline check, not the paper's
  "smoke"    2 + 2 training steps, 12 samples of 2 steps: what the test runs

  python experiments/paper_tables.py --tables 3,8 --run-toy --work /tmp/tables --out /tmp/tables/tables.md
  python experiments/paper_tables.py --run-toy --toy-size smoke --work /tmp/tables_smoke
"""
import pathlib

import ml_collections

from ldm_jax import config_files
from ldm_jax.training.experiment import with_training_defaults

REPO = pathlib.Path(__file__).resolve().parents[2]
SIZES = {
    "default": {"image_size": 16, "channels": 32, "batch_size": 8, "autoencoder_steps": 300, "ldm_steps": 400,
                "num_samples": 120, "sampling_steps": 25, "feature_net_steps": 200, "eval_batch_size": 24},
    "smoke": {"image_size": 16, "channels": 32, "batch_size": 8, "autoencoder_steps": 2, "ldm_steps": 2,
              "num_samples": 12, "sampling_steps": 2, "feature_net_steps": 2, "eval_batch_size": 12},
}


def _short_run(config: ml_collections.ConfigDict, steps: int) -> ml_collections.ConfigDict:
    """One checkpoint (at the end), a few log lines, no image grids, a small built-in set; 8 groups in
    the first stage's GroupNorms (the demo's finding: at width 32 the reference's 32 groups normalise each
    channel alone and the autoencoder learns colours far more slowly)."""
    config = with_training_defaults(config)
    config.model.first_stage.params.ddconfig.num_groups = 8
    config.train.update(log_every_steps=max(steps // 5, 1), image_every_steps=0)
    config.checkpoint.update(every_steps=steps, keep=1)
    config.data.num_records = 1024
    return config


def get_config(size: str = "default") -> ml_collections.ConfigDict:
    """The two training runs and the evaluation sizes of the toy rows at `size`."""
    if size not in SIZES:
        raise ValueError(f"unknown toy size {size!r}; expected one of {sorted(SIZES)}")
    s = SIZES[size]
    shapes = config_files.load_config_module(REPO / "configs" / "builtin_shapes.py")
    config = ml_collections.ConfigDict()
    config.size = size
    config.autoencoder = _short_run(shapes.autoencoder(channels=s["channels"], image_size=s["image_size"],
                                                       steps=s["autoencoder_steps"], batch_size=s["batch_size"]),
                                    s["autoencoder_steps"])
    # pretrained.first_stage: the autoencoder above, filled in by paper_tables.py (it knows the work folder).
    config.ldm = _short_run(shapes.ldm(channels=s["channels"], image_size=s["image_size"], steps=s["ldm_steps"],
                                       batch_size=s["batch_size"]), s["ldm_steps"])
    # Fields of the toy rows' evaluation settings that follow the size.
    config.evaluation = {"num_samples": s["num_samples"], "steps": s["sampling_steps"],
                         "feature_net_steps": s["feature_net_steps"], "batch_size": s["eval_batch_size"]}
    return config
