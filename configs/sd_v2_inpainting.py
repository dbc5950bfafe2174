"""Stable Diffusion 2 inpainting (512^2; Stability-AI/stablediffusion, v2-inpainting-inference.yaml).

Model: SD 2 base (KL-f8 first stage, OpenCLIP ViT-H/14 penultimate layer) with a UNet of 9 input channels:
the noisy latent (4), the mask resized to the latent (1) and the first-stage encoding of the masked image
(4), concatenated ("hybrid": concat + cross-attention on the text). 865,925,124 parameters (SD 2's plus
5 input channels of the first 3x3 conv). eps-prediction.
Released checkpoint: hf://stabilityai/stable-diffusion-2-inpainting/512-inpainting-ema.ckpt
Task: text-guided image inpainting.

  ldm-jax sample --config configs/sd_v2_inpainting.py --checkpoint 512-inpainting-ema.ckpt \
      --image dog.png --mask dog_mask.png --prompt "a white cat sitting on a bench" --steps 50 --guidance_scale 9.0
"""
from ldm_jax import zoo


def get_config():
    return zoo.stable_diffusion(
        zoo.sd_v2_unet(in_channels=9, use_fp16=None), zoo.open_clip_vit_h14(),
        zoo.released("hf://stabilityai/stable-diffusion-2-inpainting/512-inpainting-ema.ckpt",
                     "configs/stable-diffusion/v2-inpainting-inference.yaml", "text-guided image inpainting, 512x512",
                     repo="Stability-AI/stablediffusion"),
        conditioning_key="hybrid")
