"""`ldm-jax demo`: the paper's pipeline end to end on built-in data, with a report."""
import argparse

EXAMPLES = """examples:
  ldm-jax demo --out out                                      # the built-in default: ~23 min on 2 CPU cores
  ldm-jax demo --out out --config configs/demo.py:large       # 64x64, longer runs (for an accelerator)
  ldm-jax demo --out out --data-dir /data/my_images           # your images: class sub-folders and / or captions
  ldm-jax demo --out out --config.ldm.train.num_steps=3000    # any field of ldm_jax/demo/config.py
A rerun with the same --out continues: finished stages are not trained again.
"""


def add(commands) -> None:
    demo = commands.add_parser(
        "demo", help="train an autoencoder, an LDM and a pixel-space baseline, sample them and write a report",
        description="The paper's pipeline end to end on the built-in shapes dataset (or --data-dir): a KL-f4 "
                    "autoencoder, a text-conditional LDM on its latents and a pixel-space diffusion model for "
                    "about the same wall time, then guided samples per prompt, reconstruction PSNR / SSIM, "
                    "prompt adherence and FID, written to --out (grids, metrics.jsonl, report.json, report.md).",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    demo.add_argument("--out", required=True, help="the output folder")
    demo.add_argument("--config", help="a demo config, path.py[:variant] (default: the built-in ldm_jax/demo/config.py)")
    demo.add_argument("--data-dir", help="train on this image folder instead of the built-in dataset: class "
                                         "sub-folders (their names are the prompts) and / or a <stem>.txt caption "
                                         "beside each image; checked before training, 10%% of each class held out")
    demo.add_argument("--no-progress", action="store_true", help="no progress bars")
    demo.set_defaults(run=_demo, takes_overrides=True)


def _demo(args) -> int:
    from ldm_jax.config_files import apply_overrides, load_config
    from ldm_jax.demo.config import get_config
    from ldm_jax.demo.run import run_demo

    config = load_config(args.config) if args.config else get_config()
    if args.data_dir:
        config.data.update(name="folder", data_dir=args.data_dir)
    run_demo(apply_overrides(config, args.overrides), args.out, progress=not args.no_progress)
    return 0
