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

  ldm-jax sample --config configs/sd_v1.py --checkpoint sd-v1-4.ckpt \
      --prompt "a photograph of an astronaut riding a horse" --steps 50 --eta 0.0 --guidance_scale 7.5
"""
from ldm_jax import zoo

_CHECKPOINTS = {
    "v1-4": "hf://CompVis/stable-diffusion-v-1-4-original/sd-v1-4.ckpt",
    "v1-5": "hf://stable-diffusion-v1-5/stable-diffusion-v1-5/v1-5-pruned-emaonly.ckpt",
}


def get_config(arg: str | None = None):
    if (arg or "v1-4") not in _CHECKPOINTS:
        raise ValueError(f"unknown SD v1 variant {arg!r}; expected one of {sorted(_CHECKPOINTS)}")
    return zoo.stable_diffusion(
        zoo.sd_v1_unet(), zoo.clip_vit_l14(),
        zoo.released(_CHECKPOINTS[arg or "v1-4"], "configs/stable-diffusion/v1-inference.yaml",
                     "text-to-image synthesis, 512x512", repo="CompVis/stable-diffusion"),
        first_stage_resolution=512)
