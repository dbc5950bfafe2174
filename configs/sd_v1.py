"""Stable Diffusion v1 (512^2 text-to-image; CompVis/stable-diffusion, v1-inference.yaml).

Model: KL-f8 first stage (83,653,863 params, z 64x64x4 at 512^2, latents scaled by 0.18215) + the
859,520,964-parameter UNet (320 channels, mult 1,2,4,4, 8-head cross-attention transformers at
64, 32, 16, context 768) + the frozen CLIP ViT-L/14 text encoder (123,060,480 params, last layer).
eps-prediction; the "linear" schedule is linear in sqrt(beta), 0.00085..0.012 over 1000 steps.
use_ema False as in the YAML: the weights to use are `model.diffusion_model.*`.

Variants (`get_config(arg)`), all the same architecture:
  "v1-4" (default)  hf://CompVis/stable-diffusion-v-1-4-original/sd-v1-4.ckpt
  "v1-5"            hf://stable-diffusion-v1-5/stable-diffusion-v1-5/v1-5-pruned-emaonly.ckpt
                    (first released as runwayml/stable-diffusion-v1-5)
Task: text-to-image synthesis (and image-to-image).

Training (model card): both variants resume sd-v1-2.ckpt (hf://CompVis/stable-diffusion-v-1-2-original)
on LAION-Aesthetics v2 5+ (webdataset tar shards, images of at least 512^2) at 512^2 for 225k (v1-4) or
595k (v1-5) steps; data.tokenizer: the folder of openai/clip-vit-large-patch14's vocab.json + merges.txt.

  ldm-jax train --config configs/sd_v1.py --workdir /ckpt/sd_v1_4 \
      --config.data.shards='/data/laion-aesthetics-5plus/{00000..59999}.tar' \
      --config.data.tokenizer=/models/clip-vit-large-patch14 --config.pretrained.model=sd-v1-2.ckpt
  ldm-jax sample --config configs/sd_v1.py --checkpoint sd-v1-4.ckpt \
      --prompt "a photograph of an astronaut riding a horse" --steps 50 --eta 0.0 --guidance_scale 7.5
"""
from ldm_jax import zoo

SD_WARMUP = {"kind": "lambda_linear", "warm_up_steps": [10000], "f_start": [1.0e-6], "f_max": [1.0], "f_min": [1.0],
             "cycle_lengths": [10_000_000_000_000]}
LAION_AESTHETICS = {"name": "tar", "shards": "", "image_size": 512, "min_size": 512, "task": "caption",
                    "tokenizer_kind": "clip", "tokenizer": "", "max_length": 77}
_STEPS = {"v1-4": 225_000, "v1-5": 595_000}

_CHECKPOINTS = {
    "v1-4": "hf://CompVis/stable-diffusion-v-1-4-original/sd-v1-4.ckpt",
    "v1-5": "hf://stable-diffusion-v1-5/stable-diffusion-v1-5/v1-5-pruned-emaonly.ckpt",
}


def get_config(arg: str | None = None):
    if (arg or "v1-4") not in _CHECKPOINTS:
        raise ValueError(f"unknown SD v1 variant {arg!r}; expected one of {sorted(_CHECKPOINTS)}")
    config = zoo.stable_diffusion(
        zoo.sd_v1_unet(), zoo.clip_vit_l14(),
        zoo.released(_CHECKPOINTS[arg or "v1-4"], "configs/stable-diffusion/v1-inference.yaml",
                     "text-to-image synthesis, 512x512", repo="CompVis/stable-diffusion"),
        first_stage_resolution=512)
    # The SD recipe (model card): AdamW, batch 2048 (32 x 8 A100 x 4 per GPU x 2 accumulated; here one global
    # batch), lr 1e-4 used as is after a 10k-step warm-up (the YAML's LambdaLinearScheduler), 10% of the captions
    # dropped; the released *-ema weights are an EMA (decay not published: the reference LitEma's 0.9999).
    config = zoo.training(config, steps=_STEPS[arg or "v1-4"], batch_size=2048, learning_rate=1.0e-4,
                          schedule=SD_WARMUP, cond_drop_prob=0.1, data=LAION_AESTHETICS,
                          pretrained={"model": "sd-v1-2.ckpt"})
    config.ema = {"use_ema": True}
    return config
