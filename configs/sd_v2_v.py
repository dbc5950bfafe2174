"""Stable Diffusion 2 768-v (768^2, v-prediction; Stability-AI/stablediffusion, v2-inference-v.yaml).

Model: as SD 2 base (KL-f8 first stage, the 865,910,724-parameter UNet, OpenCLIP ViT-H/14 penultimate
layer), trained to predict v = sqrt(abar) eps - sqrt(1 - abar) x0. Sample at 768x768 (latent 96x96);
the YAML's image_size 64 only sizes training logs.

Variants (`get_config(arg)`), the same architecture:
  "2.0" (default)  hf://stabilityai/stable-diffusion-2/768-v-ema.ckpt
  "2.1"            hf://stabilityai/stable-diffusion-2-1/v2-1_768-ema-pruned.ckpt
Task: text-to-image synthesis, 768x768.

  ldm-jax sample --config configs/sd_v2_v.py --checkpoint 768-v-ema.ckpt --height 768 --width 768 \
      --prompt "a professional photograph of an astronaut riding a horse" --steps 50 --guidance_scale 9.0
"""
from ldm_jax import zoo

_CHECKPOINTS = {
    "2.0": "hf://stabilityai/stable-diffusion-2/768-v-ema.ckpt",
    "2.1": "hf://stabilityai/stable-diffusion-2-1/v2-1_768-ema-pruned.ckpt",
}


def get_config(arg: str | None = None):
    if (arg or "2.0") not in _CHECKPOINTS:
        raise ValueError(f"unknown SD 2 768-v variant {arg!r}; expected one of {sorted(_CHECKPOINTS)}")
    return zoo.stable_diffusion(
        zoo.sd_v2_unet(), zoo.open_clip_vit_h14(),
        zoo.released(_CHECKPOINTS[arg or "2.0"], "configs/stable-diffusion/v2-inference-v.yaml",
                     "text-to-image synthesis, 768x768", repo="Stability-AI/stablediffusion"),
        parameterization="v")
