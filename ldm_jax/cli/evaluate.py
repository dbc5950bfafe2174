"""`ldm-jax evaluate`: the flags of `EvaluationSettings`, one per field, and its problems told as flags."""
import argparse
import dataclasses
import sys

EXAMPLES = """examples:
  class-conditional (Tab. 3):  ldm-jax evaluate --checkpoint cin256-v2.ckpt --config configs/cin256_ldm_vq4.py \\
      --num-samples 50000 --steps 250 --eta 0 --guidance-scale 1.5 --batch-size 64 \\
      --reference-stats VIRTUAL_imagenet256_labeled.npz --inception-weights pt_inception-2015-12-05-6726825d.pth \\
      --vgg16-weights vgg16-397923af.pth --out eval/cin256
  text-to-image:  ldm-jax evaluate --checkpoint sd-v1-4.ckpt --tokenizer clip-vit-large-patch14/ \\
      --prompts coco_captions.txt --guidance-scale 7.5 --num-samples 30000 --data /data/coco_val \\
      --inception-weights pt_inception-2015-12-05-6726825d.pth --metrics fid,clip_score \\
      --clip-weights clip-vit-large-patch14/model.safetensors --out eval/sd
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


def add(commands) -> None:
    evaluate = commands.add_parser(
        "evaluate", help="sample a checkpoint (or read images) and compute FID, IS, precision/recall, PSNR, SSIM, "
                         "CLIP score",
        description="Draws --num-samples images from a diffusion checkpoint with the stated sampler, steps, eta and "
                    "guidance (a super-resolution model upscales the x4-downsampled images of --data, an inpainting "
                    "model fills them under fixed evaluation masks; an autoencoder reconstructs --data; or reads "
                    "--samples), computes the metrics against --reference-stats or --data (the CLIP score against "
                    "each sample's prompt), and writes --out/results.json with every setting, the metric values, the "
                    "software versions, the device and the wall time. Samples are written batch by batch to "
                    "--out/samples/, so a stopped run continues where it ended.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
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
    sampling.add_argument("--max-batches", type=_positive, help="draw at most this many batches, then stop "
                                                                "(continue later with the same command)")
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
    metrics.add_argument("--metrics", type=_names, help="comma-separated: fid,is,precision_recall,psnr,ssim,lpips,"
                                                        "r_fid,clip_score (default: every one that applies)")
    metrics.add_argument("--vgg16-weights", help="torchvision's vgg16-397923af.pth: precision/recall on VGG-16 fc2")
    metrics.add_argument("--lpips-vgg16-weights", help="LPIPS: torchvision's vgg16-397923af.pth")
    metrics.add_argument("--lpips-linear-weights", help="LPIPS: lpips v0.1 vgg.pth (the linear heads)")
    metrics.add_argument("--clip-weights", help="clip_score: a CLIP checkpoint file, transformers' CLIPModel "
                                                "(openai/clip-vit-large-patch14 model.safetensors) or open_clip's "
                                                "(ViT-H-14 laion2b open_clip_model.safetensors); heads and activation "
                                                "from the config.json / open_clip_config.json beside it")
    metrics.add_argument("--clip-tokenizer", help="clip_score: the folder of the CLIP vocabulary (vocab.json + "
                                                  "merges.txt or bpe_simple_vocab_16e6.txt.gz; default: the folder "
                                                  "of --clip-weights)")
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


def _names(text: str) -> tuple[str, ...]:
    """--metrics fid,is -> ("fid", "is"); the settings check the names."""
    return tuple(name.strip() for name in text.split(",") if name.strip())


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return int(text)


def _flag(field: str) -> str:
    """The flag of an EvaluationSettings field: each field's flag is its name in kebab case."""
    return "--" + field.replace("_", "-")


def _evaluate(args) -> int:
    # Looked up when the command runs (tests replace `evaluate`); the library speaks of fields, we of flags.
    from ldm_jax.evaluation.evaluate import EvaluationSettings, SettingsError, evaluate

    try:
        settings = EvaluationSettings(**{field.name: getattr(args, field.name)
                                         for field in dataclasses.fields(EvaluationSettings)})
        results = evaluate(settings, args.out, progress=not args.no_progress, max_batches=args.max_batches)
    except SettingsError as error:
        print(f"ldm-jax evaluate: {error.describe(_flag)}", file=sys.stderr)
        return 2
    if not results["complete"]:
        print(f"stopped after {results['batches_done']} of {results['num_batches']} batches in {args.out}: "
              "run the same command again to continue")
        return 0
    values = ", ".join(f"{name} {value:.4g}" for name, value in results["metrics"].items())
    print(f"{values} ({results['num_samples']} samples, {results['wall_time_s']:.1f}s): {args.out}/results.json")
    return 0
