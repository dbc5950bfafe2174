"""LDM-VQ-4: unconditional LSUN-Bedrooms 256^2 (FID 2.95 with 200 DDIM steps, eta 1; Tab. 1, 12).

Model: VQ-f4 first stage (z 64x64x3) + a 274M-parameter UNet (224 channels, mult 1,2,3,4,
attention at 32, 16, 8 with 32-channel heads), the same architecture as CelebA-HQ's.
Released checkpoint: `models/ldm/lsun_beds256/model.ckpt`
from https://ommer-lab.com/files/latent-diffusion/lsun_bedrooms.zip
(reference YAML: CompVis/latent-diffusion `models/ldm/lsun_beds256/config.yaml`).
Task: unconditional image synthesis.

  ldm-jax sample --config configs/lsun_bedrooms_ldm_vq4.py --checkpoint models/ldm/lsun_beds256/model.ckpt \
      --steps 200 --eta 1.0 --num_samples 16
"""
from ldm_jax import zoo


def get_config():
    return zoo.unconditional_ldm_vq4(zoo.released(
        "models/ldm/lsun_beds256/model.ckpt", "models/ldm/lsun_beds256/config.yaml",
        "unconditional image synthesis, LSUN-Bedrooms 256x256",
        url="https://ommer-lab.com/files/latent-diffusion/lsun_bedrooms.zip"))
