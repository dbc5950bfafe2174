"""`ldm-jax sample`: sample the task a checkpoint and the given inputs imply, saved as one image grid."""
import argparse
import time

EXAMPLES = """examples:
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


def add(commands) -> None:
    sample = commands.add_parser(
        "sample", help="sample images from a checkpoint and save them as one grid",
        description="Loads a CompVis / Stable Diffusion checkpoint and samples the task its model and the given "
                    "inputs imply (text, class label, image + mask, low-resolution image, segmentation map, "
                    "layout, or nothing), then writes the images as one PNG grid.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
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
    sample.add_argument("--discretize",
                        help="timestep spacing: the reference's uniform / quad, diffusers' leading / trailing / linspace "
                             "(exactly --steps steps), k-diffusion (euler, dpm_solver++) or time_uniform "
                             "(dpm_solver++ as SD 2's DPMSolverSampler); default: the sampler's own (see the README)")
    sample.add_argument("--guidance-scale", "--guidance_scale", type=float, default=7.5)
    sample.add_argument("--eta", type=float, default=0.0)
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("--batch-size", "--batch_size", "--num_samples", type=int, default=1)
    sample.add_argument("--height", type=int)
    sample.add_argument("--width", type=int)
    sample.add_argument("--rows", type=int, help="rows of the grid (default: about square)")
    sample.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32",
                        help="compute dtype of the models (weights stay float32)")
    sample.add_argument("--no-progress", action="store_true", help="no progress bar")
    sample.add_argument("--out", required=True, help="the PNG file to write")
    sample.set_defaults(run=_sample)


def _sample(args) -> int:
    from ldm_jax import hub, images
    from ldm_jax.inference.pipeline import LatentDiffusionPipeline

    start = time.perf_counter()
    checkpoint, config = hub.resolve_checkpoint(args.checkpoint, args.config)
    pipe = LatentDiffusionPipeline.from_checkpoint(checkpoint, config_path=config, use_ema=args.ema,
                                                   dtype=None if args.dtype == "float32" else args.dtype)
    samples = pipe(
        prompt=args.prompt, negative_prompt=args.negative_prompt, class_label=args.class_label,
        image=args.image, mask=args.mask, low_res=args.low_res, segmentation=args.segmentation, layout=args.layout,
        num_steps=args.steps, sampler=args.sampler, discretize=args.discretize, guidance_scale=args.guidance_scale,
        eta=args.eta, seed=args.seed, height=args.height, width=args.width, batch_size=args.batch_size,
        strength=args.strength, tokenizer=args.tokenizer, progress=not args.no_progress)
    images.make_grid(samples, args.rows).save(args.out)
    print(f"wrote {args.out} ({len(samples)} images, {samples[0].width}x{samples[0].height}) "
          f"in {time.perf_counter() - start:.1f}s")
    return 0
