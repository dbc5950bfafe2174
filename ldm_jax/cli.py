"""The `ldm-jax` command line: demo, convert, check, sample, train, data, evaluate.

    ldm-jax demo --out out
    ldm-jax convert sd-v1-4.ckpt --config v1-inference.yaml --out sd-v1-4.safetensors
    ldm-jax sample --checkpoint sd-v1-4.ckpt --config v1-inference.yaml --prompt "a red house" --out grid.png
    ldm-jax train --config configs/kl_f4.py --workdir /ckpt/kl_f4
    ldm-jax evaluate --checkpoint model.safetensors --num-samples 50000 --reference-stats ref.npz --out eval
"""
import argparse
import sys
import time

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

SAMPLE_EXAMPLES = """examples:
  text-to-image:  ldm-jax sample --checkpoint sd-v1-4.ckpt --config v1-inference.yaml \\
                      --tokenizer clip-vit-large-patch14/ --prompt "a red house" --batch-size 4 --out grid.png
  class label:    ldm-jax sample --checkpoint cin256-v2.ckpt --config configs/cin256_ldm_vq4.py \\
                      --class-label 88 --guidance-scale 1.5 --steps 250 --out birds.png
  inpainting:     ldm-jax sample --checkpoint last.ckpt --config configs/inpainting_big.py \\
                      --image photo.png --mask photo_mask.png --out inpainted.png
  image-to-image: ldm-jax sample --checkpoint sd-v1-4.ckpt --tokenizer clip/ --prompt "oil painting" \\
                      --image photo.png --strength 0.6 --out painted.png
  super-res:      ldm-jax sample --checkpoint model.ckpt --config configs/bsr_sr.py --low-res small.png --eta 1
  checkpoints on the Hugging Face Hub: --checkpoint hf://org/repo/file.ckpt
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="ldm-jax", description="Latent diffusion models in JAX/Flax.", epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)

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

    _add_sample(commands)
    _add_data(commands)
    _add_train(commands)
    _add_demo(commands)
    _add_evaluate(commands)

    # `train` and `demo` also take `--config.<dotted.field>=<value>` overrides, which argparse cannot list.
    args, extra = parser.parse_known_args(argv)
    overrides = [arg for arg in extra if arg.startswith("--config.")]
    takes_overrides = args.command in ("train", "demo")
    if len(overrides) != len(extra) or (overrides and not takes_overrides):
        parser.error(f"unrecognized arguments: {' '.join(a for a in extra if a not in overrides or not takes_overrides)}")
    args.overrides = [arg[len("--config."):] for arg in overrides]
    return args.run(args)


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


def _add_sample(commands) -> None:
    sample = commands.add_parser(
        "sample", help="sample images from a checkpoint and save them as one grid",
        description="Loads a CompVis / Stable Diffusion checkpoint and samples the task its model and the given "
                    "inputs imply (text, class label, image + mask, low-resolution image, segmentation map, "
                    "layout, or nothing), then writes the images as one PNG grid.",
        epilog=SAMPLE_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    sample.add_argument("--checkpoint", required=True, help="the .ckpt / .safetensors file, or hf://org/repo/file")
    sample.add_argument("--config", help="the reference YAML or one of configs/*.py (default: the YAML beside it)")
    sample.add_argument("--ema", action="store_true", help="take the UNet weights from model_ema.*")
    sample.add_argument("--prompt", help="the text prompt (text-to-image models)")
    sample.add_argument("--negative-prompt", "--negative_prompt", default="", help="the unconditional text")
    sample.add_argument("--tokenizer", help="folder of the text encoder's vocabulary files")
    sample.add_argument("--class-label", "--class_label", type=int, help="the class (class-conditional models)")
    sample.add_argument("--image", help="input image (image-to-image, inpainting)")
    sample.add_argument("--mask", help="inpainting mask image: white = generate")
    sample.add_argument("--low-res", "--low_res", help="low-resolution image (super-resolution models)")
    sample.add_argument("--segmentation", help="label map image, one class index per pixel (semantic synthesis)")
    sample.add_argument("--layout", help='JSON list of boxes [{"category": 5, "bbox": [x0, y0, w, h]}, ...]')
    sample.add_argument("--strength", type=float, help="image-to-image strength in [0, 1] (default 0.75)")
    sample.add_argument("--steps", type=int, default=50)
    sample.add_argument("--sampler", default="ddim", help="ddim, plms, ddpm, dpm_solver++ or euler")
    sample.add_argument("--guidance-scale", "--guidance_scale", type=float, default=7.5)
    sample.add_argument("--eta", type=float, default=0.0)
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("--batch-size", "--batch_size", "--num_samples", type=int, default=1)
    sample.add_argument("--height", type=int)
    sample.add_argument("--width", type=int)
    sample.add_argument("--rows", type=int, help="rows of the grid (default: about square)")
    sample.add_argument("--no-progress", action="store_true", help="no progress bar")
    sample.add_argument("--out", required=True, help="the PNG file to write")
    sample.set_defaults(run=_sample)


def _add_data(commands) -> None:
    from ldm_jax.data import build, latent_cache

    data = commands.add_parser(
        "data", help="prepare datasets: convert to ArrayRecord, cache first-stage latents",
        description="Dataset tools. `build` converts an image folder or webdataset tar shards into a TFDS "
                    "ArrayRecord dataset; `cache-latents` encodes a dataset once with a first-stage model.",
        epilog="examples:\n  ldm-jax data build --from folder --out ~/tensorflow_datasets --name pets ~/photos/pets\n"
               "  ldm-jax data cache-latents --checkpoint kl-f8.ckpt --config configs/kl_f8.py --dataset folder \\\n"
               "      --data-dir /data/images --image-size 256 --out /data/latents",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    data_commands = data.add_subparsers(dest="data_command", required=True)
    for name, module, help_text in (
            ("build", build, "convert an image folder or tar shards into a TFDS ArrayRecord dataset"),
            ("cache-latents", latent_cache, "encode a dataset with a first-stage model into ArrayRecord shards")):
        parser = data_commands.add_parser(name, help=help_text)
        module.add_arguments(parser)
        parser.set_defaults(run=module.run)


TRAIN_EXAMPLES = """examples:
  ldm-jax train --config configs/kl_f4.py:tiny --workdir /tmp/ae --config.train.num_steps=200
  ldm-jax train --config configs/cin256_ldm_vq4.py --workdir gs://bucket/cin256 \\
      --config.data.name=tfds --config.data.tfds_name=imagenet2012 --config.data.data_dir=gs://bucket/tfds
A run restarted with the same --workdir resumes from its latest checkpoint; SIGTERM saves and exits.
"""


def _add_train(commands) -> None:
    train = commands.add_parser(
        "train", help="train an autoencoder or a latent diffusion model from a config",
        description="Trains the model of a configs/*.py file (stage 1 when it holds only a first stage, stage 2 "
                    "with a UNet) in --workdir: checkpoints, metrics.jsonl and image grids go there. Any config "
                    "field can be set with --config.<field>=<value>.",
        epilog=TRAIN_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    train.add_argument("--config", required=True, help="configs/<experiment>.py, or path.py:variant")
    train.add_argument("--workdir", required=True, help="where checkpoints, metrics and images are written")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.set_defaults(run=_train)


def _train(args) -> int:
    from ldm_jax.config_files import apply_overrides, load_config
    from ldm_jax.training.experiment import with_training_defaults
    from ldm_jax.training.loop import train_and_evaluate

    config = apply_overrides(with_training_defaults(load_config(args.config)), args.overrides)
    summary = train_and_evaluate(config, args.workdir, progress=not args.no_progress)
    print(f"trained to step {summary['step']} in {args.workdir}"
          + (f": loss {summary['loss']:.4g}" if "loss" in summary else ""))
    return 0


DEMO_EXAMPLES = """examples:
  ldm-jax demo --out out                                      # the built-in default: ~23 min on 2 CPU cores
  ldm-jax demo --out out --config configs/demo.py:large       # 64x64, longer runs (for an accelerator)
  ldm-jax demo --out out --data-dir /data/captioned_images    # your images, <stem>.txt captions beside them
  ldm-jax demo --out out --config.ldm.train.num_steps=3000    # any field of ldm_jax/demo/config.py
A rerun with the same --out continues: finished stages are not trained again.
"""


def _add_demo(commands) -> None:
    demo = commands.add_parser(
        "demo", help="train an autoencoder, an LDM and a pixel-space baseline, sample them and write a report",
        description="The paper's pipeline end to end on the built-in shapes dataset (or --data-dir): a KL-f4 "
                    "autoencoder, a text-conditional LDM on its latents and a pixel-space diffusion model for "
                    "about the same wall time, then guided samples per prompt, reconstruction PSNR / SSIM, "
                    "prompt adherence and FID, written to --out (grids, metrics.jsonl, report.json, report.md).",
        epilog=DEMO_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    demo.add_argument("--out", required=True, help="the output folder")
    demo.add_argument("--config", help="a demo config, path.py[:variant] (default: the built-in ldm_jax/demo/config.py)")
    demo.add_argument("--data-dir", help="train on this image folder instead of the built-in dataset "
                                         "(captions from <stem>.txt; class sub-folders give the feature net labels)")
    demo.add_argument("--no-progress", action="store_true", help="no progress bars")
    demo.set_defaults(run=_demo)


def _demo(args) -> int:
    from ldm_jax.config_files import apply_overrides, load_config
    from ldm_jax.demo.config import get_config
    from ldm_jax.demo.run import run_demo

    config = load_config(args.config) if args.config else get_config()
    if args.data_dir:
        config.data.update(name="folder", data_dir=args.data_dir)
    run_demo(apply_overrides(config, args.overrides), args.out, progress=not args.no_progress)
    return 0


EVALUATE_EXAMPLES = """examples:
  class-conditional (Tab. 3):  ldm-jax evaluate --checkpoint cin256-v2.ckpt --config configs/cin256_ldm_vq4.py \\
      --num-samples 50000 --steps 250 --eta 0 --guidance-scale 1.5 --batch-size 64 \\
      --reference-stats VIRTUAL_imagenet256_labeled.npz --inception-weights pt_inception-2015-12-05-6726825d.pth \\
      --vgg16-weights vgg16-397923af.pth --out eval/cin256
  text-to-image:  ldm-jax evaluate --checkpoint sd-v1-4.ckpt --tokenizer clip-vit-large-patch14/ \\
      --prompts coco_captions.txt --guidance-scale 7.5 --num-samples 30000 --data /data/coco_val \\
      --inception-weights pt_inception-2015-12-05-6726825d.pth --out eval/sd
  autoencoder (Tab. 8):  ldm-jax evaluate --checkpoint kl-f8.ckpt --config configs/kl_f8.py \\
      --data /data/imagenet_val --num-samples 50000 --inception-weights pt_inception-2015-12-05-6726825d.pth \\
      --lpips-vgg16-weights vgg16-397923af.pth --lpips-linear-weights vgg.pth --out eval/kl_f8
  super-resolution (Tab. 5):  ldm-jax evaluate --checkpoint sr.ckpt --config configs/bsr_sr.py \\
      --data /data/imagenet/val_sr --steps 100 --eta 1 --metrics fid,is,psnr,ssim \\
      --inception-weights pt_inception-2015-12-05-6726825d.pth --out eval/sr
  inpainting (Tab. 7):  ldm-jax evaluate --checkpoint last.ckpt --config configs/inpainting_big.py \\
      --data /data/places/test_512 --image-size 512 --mask-coverage 0.4,0.5 --metrics fid,lpips \\
      --inception-weights pt_inception-2015-12-05-6726825d.pth \\
      --lpips-vgg16-weights vgg16-397923af.pth --lpips-linear-weights vgg.pth --out eval/inpainting_hard
  images made elsewhere:  ldm-jax evaluate --samples samples.npz --reference-stats ref.npz \\
      --inception-weights pt_inception-2015-12-05-6726825d.pth --out eval/adm
  toy model on CPU:  ldm-jax evaluate --checkpoint out/ldm/model.safetensors --prompts prompts.txt \\
      --tokenizer out/vocab.txt --num-samples 512 --features builtin --data builtin --out eval/toy
A rerun with the same --out continues a stopped evaluation with the remaining samples; --samples DIR/samples
scores a finished evaluation's samples again (e.g. against another --data).
"""


def _add_evaluate(commands) -> None:
    evaluate = commands.add_parser(
        "evaluate", help="sample a checkpoint (or read images) and compute FID, IS, precision/recall, PSNR, SSIM",
        description="Draws --num-samples images from a diffusion checkpoint with the stated sampler, steps, eta and "
                    "guidance (a super-resolution model upscales the x4-downsampled images of --data, an inpainting "
                    "model fills them under fixed evaluation masks; an autoencoder reconstructs --data; or reads "
                    "--samples), computes the metrics "
                    "against --reference-stats or --data, and writes --out/results.json with every setting, the "
                    "metric values, the software versions, the device and the wall time. Samples are written "
                    "batch by batch to --out/samples/, so a stopped run continues where it ended.",
        epilog=EVALUATE_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = evaluate.add_argument
    add("--out", required=True, help="the output folder: results.json, settings.json, samples/, cache/")
    source = evaluate.add_argument_group("model source (one of)")
    source.add_argument("--checkpoint", help="a diffusion model (sampled; super-resolution and inpainting models on "
                                             "the images of --data) or an autoencoder (reconstructs --data): "
                                             ".ckpt / .safetensors / hf://org/repo/file")
    source.add_argument("--samples", help="generated images: a folder of PNG/JPEG files, an ADM .npz (arr_0), or "
                                          "an earlier evaluation's --out/samples folder")
    source.add_argument("--config", help="the checkpoint's YAML or configs/*.py (default: the YAML beside it)")
    source.add_argument("--ema", action="store_true", help="take the UNet weights from model_ema.*")
    sampling = evaluate.add_argument_group("sampling")
    sampling.add_argument("--num-samples", type=int, help="images to score (default 50000; all of --samples; "
                                                          "super-resolution / inpainting: all of --data, at most "
                                                          "50000)")
    sampling.add_argument("--sampler", default="ddim", help="ddim, plms, ddpm, dpm_solver++ or euler")
    sampling.add_argument("--steps", type=int, default=50)
    sampling.add_argument("--eta", type=float, default=0.0)
    sampling.add_argument("--guidance-scale", type=float, default=1.0, help="classifier-free guidance (1: none)")
    sampling.add_argument("--batch-size", type=int, default=16)
    sampling.add_argument("--seed", type=int, default=0, help="batch i is drawn with a seed derived from (seed, i)")
    sampling.add_argument("--prompts", help="text models: a file of prompts, one per line, cycled "
                                            "(default: the captions of --data)")
    sampling.add_argument("--tokenizer", help="text models: the folder of the tokenizer's vocabulary files")
    sampling.add_argument("--image-size", type=int, help="default: the model's trained size / the samples' size")
    sampling.add_argument("--mask-coverage", type=_coverage, help="inpainting: LOW,HIGH, the share of each "
                                                                  "evaluation mask (default 0.1,0.5)")
    sampling.add_argument("--max-batches", type=int, help="draw at most this many batches, then stop (continue "
                                                          "later with the same command)")
    reference = evaluate.add_argument_group("reference")
    reference.add_argument("--reference-stats", help="an .npz of FID statistics (pytorch-fid mu, sigma) or an ADM "
                                                     "reference batch")
    reference.add_argument("--data", help="reference images: builtin (the built-in shapes), an image folder, or a "
                                          "data config path.py[:variant], read in order; an autoencoder "
                                          "reconstructs them, a super-resolution model upscales them from their "
                                          "downsampling, an inpainting model fills them under masks")
    reference.add_argument("--num-reference", type=int, help="reference images to summarise (default: --num-samples)")
    metrics = evaluate.add_argument_group("features and metrics")
    metrics.add_argument("--features", default="inception", help="inception (the paper's FID network, needs "
                                                                 "--inception-weights) or builtin (a small "
                                                                 "classifier of the built-in shapes, for toy models)")
    metrics.add_argument("--inception-weights", help="pytorch-fid's pt_inception-2015-12-05-6726825d.pth")
    metrics.add_argument("--feature-net-steps", type=int, default=400, help="training steps of the builtin features")
    metrics.add_argument("--metrics", help="comma-separated: fid,is,precision_recall,psnr,ssim,lpips,r_fid "
                                           "(default: every one that applies)")
    metrics.add_argument("--vgg16-weights", help="torchvision's vgg16-397923af.pth: precision/recall on VGG-16 fc2")
    metrics.add_argument("--lpips-vgg16-weights", help="LPIPS: torchvision's vgg16-397923af.pth")
    metrics.add_argument("--lpips-linear-weights", help="LPIPS: lpips v0.1 vgg.pth (the linear heads)")
    add("--cache-dir", help="where the builtin feature net and reference statistics are cached (default: "
                            "--out/cache); evaluations may share one")
    add("--no-progress", action="store_true", help="no progress bars")
    evaluate.set_defaults(run=_evaluate)


def _coverage(text: str) -> tuple[float, ...]:
    """--mask-coverage LOW,HIGH -> (low, high); the settings check the range."""
    try:
        values = tuple(float(part) for part in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 2:
        raise argparse.ArgumentTypeError(f"expected LOW,HIGH (two numbers, e.g. 0.4,0.5), got {text!r}")
    return values


def _evaluate(args) -> int:
    from ldm_jax.evaluation.evaluate import EvaluationSettings, evaluate

    names = [field for field in EvaluationSettings.__dataclass_fields__ if field != "metrics"]
    metrics = tuple(name.strip() for name in args.metrics.split(",") if name.strip()) if args.metrics else None
    settings = EvaluationSettings(**{name: getattr(args, name) for name in names}, metrics=metrics)
    results = evaluate(settings, args.out, progress=not args.no_progress, max_batches=args.max_batches)
    if not results["complete"]:
        print(f"stopped after {results['batches_done']} of {results['num_batches']} batches in {args.out}: "
              "run the same command again to continue")
        return 0
    values = ", ".join(f"{name} {value:.4g}" for name, value in results["metrics"].items())
    print(f"{values} ({results['num_samples']} samples, {results['wall_time_s']:.1f}s): {args.out}/results.json")
    return 0


def _sample(args) -> int:
    from ldm_jax import hub, images, tasks
    from ldm_jax.pipeline import LatentDiffusionPipeline

    start = time.perf_counter()
    checkpoint, config = hub.resolve_checkpoint(args.checkpoint, args.config)
    pipe = LatentDiffusionPipeline.from_checkpoint(checkpoint, config_path=config, use_ema=args.ema)
    samples = tasks.generate(
        pipe, prompt=args.prompt, negative_prompt=args.negative_prompt, class_label=args.class_label,
        image=args.image, mask=args.mask, low_res=args.low_res, segmentation=args.segmentation, layout=args.layout,
        num_steps=args.steps, sampler=args.sampler, guidance_scale=args.guidance_scale, eta=args.eta,
        seed=args.seed, height=args.height, width=args.width, batch_size=args.batch_size, strength=args.strength,
        tokenizer=args.tokenizer, progress=not args.no_progress)
    images.make_grid(samples, args.rows).save(args.out)
    print(f"wrote {args.out} ({len(samples)} images, {samples[0].width}x{samples[0].height}) "
          f"in {time.perf_counter() - start:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
