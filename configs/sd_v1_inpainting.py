"""Stable Diffusion v1.5 inpainting (runwayml/stable-diffusion, v1-inpainting-inference.yaml).

Model: SD v1 (KL-f8 first stage, CLIP ViT-L/14 text encoder) with a UNet of 9 input channels: the noisy
latent (4), the mask resized to the latent (1) and the first-stage encoding of the masked image (4),
concatenated ("hybrid" conditioning: concat + cross-attention on the text). 859,535,364 parameters
(SD v1's plus 5 input channels of the first 3x3 conv).
The YAML leaves use_ema at its default (True); the released file holds a single copy of the weights
(no `model_ema.*`), so `model.diffusion_model.*` are the ones to use and use_ema is False here.
Released checkpoint: hf://runwayml/stable-diffusion-inpainting/sd-v1-5-inpainting.ckpt
(also at stable-diffusion-v1-5/stable-diffusion-inpainting).
Task: text-guided image inpainting.

  ldm-jax sample --config configs/sd_v1_inpainting.py --checkpoint sd-v1-5-inpainting.ckpt \
      --image dog.png --mask dog_mask.png --prompt "a white cat sitting on a bench" --steps 50 --guidance_scale 7.5
"""
from ldm_jax import zoo


def get_config():
    return zoo.stable_diffusion(
        zoo.sd_v1_unet(in_channels=9), zoo.clip_vit_l14(),
        zoo.released("hf://runwayml/stable-diffusion-inpainting/sd-v1-5-inpainting.ckpt",
                     "configs/stable-diffusion/v1-inpainting-inference.yaml", "text-guided image inpainting, 512x512",
                     repo="runwayml/stable-diffusion"),
        conditioning_key="hybrid")
