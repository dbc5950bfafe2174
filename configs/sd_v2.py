"""Stable Diffusion 2 base (512^2, eps-prediction; Stability-AI/stablediffusion, v2-inference.yaml).

Model: KL-f8 first stage (83,653,863 params, latents scaled by 0.18215) + the 865,910,724-parameter UNet
(320 channels, mult 1,2,4,4, cross-attention transformers with 64-channel heads and linear in/out
projections, context 1024) + the frozen OpenCLIP ViT-H/14 text encoder, read at its penultimate layer.

Variants (`get_config(arg)`), the same architecture:
  "2.0" (default)  hf://stabilityai/stable-diffusion-2-base/512-base-ema.ckpt
  "2.1"            hf://stabilityai/stable-diffusion-2-1-base/v2-1_512-ema-pruned.ckpt
Task: text-to-image synthesis, 512x512.

  ldm-jax sample --config configs/sd_v2.py --checkpoint 512-base-ema.ckpt \
      --prompt "a professional photograph of an astronaut riding a horse" --steps 50 --guidance_scale 9.0
"""
from ldm_jax import zoo

_CHECKPOINTS = {
    "2.0": "hf://stabilityai/stable-diffusion-2-base/512-base-ema.ckpt",
    "2.1": "hf://stabilityai/stable-diffusion-2-1-base/v2-1_512-ema-pruned.ckpt",
}


def get_config(arg: str | None = None):
    if (arg or "2.0") not in _CHECKPOINTS:
        raise ValueError(f"unknown SD 2 base variant {arg!r}; expected one of {sorted(_CHECKPOINTS)}")
    return zoo.stable_diffusion(
        zoo.sd_v2_unet(), zoo.open_clip_vit_h14(),
        zoo.released(_CHECKPOINTS[arg or "2.0"], "configs/stable-diffusion/v2-inference.yaml",
                     "text-to-image synthesis, 512x512", repo="Stability-AI/stablediffusion"))
