"""LDM-VQ-4: unconditional CelebA-HQ 256^2 (FID 5.11 with 500 DDIM steps, eta 0; Tab. 1, 12).

Model: VQ-f4 first stage (z 64x64x3) + a 274M-parameter UNet (224 channels, mult 1,2,3,4,
attention at 32, 16, 8 with 32-channel heads).
Released checkpoint: `models/ldm/celeba256/model.ckpt` from https://ommer-lab.com/files/latent-diffusion/celeba.zip
(reference YAML: CompVis/latent-diffusion `models/ldm/celeba256/config.yaml`).
Task: unconditional image synthesis.

  ldm-jax sample --config configs/celebahq_ldm_vq4.py --checkpoint models/ldm/celeba256/model.ckpt \
      --steps 500 --eta 0.0 --num_samples 16
"""
from ldm_jax import zoo


def get_config():
    return zoo.unconditional_ldm_vq4(zoo.released(
        "models/ldm/celeba256/model.ckpt", "models/ldm/celeba256/config.yaml",
        "unconditional image synthesis, CelebA-HQ 256x256",
        url="https://ommer-lab.com/files/latent-diffusion/celeba.zip"))
