"""LDM-VQ-4: unconditional FFHQ 256^2 (FID 4.98 with 200 DDIM steps, eta 1; Tab. 1, 12).

Model: VQ-f4 first stage (z 64x64x3) + a 274M-parameter UNet (224 channels, mult 1,2,3,4,
attention at 32, 16, 8 with 32-channel heads), the same architecture as CelebA-HQ's.
Released checkpoint: `models/ldm/ffhq256/model.ckpt` from https://ommer-lab.com/files/latent-diffusion/ffhq.zip
(reference YAML: CompVis/latent-diffusion `models/ldm/ffhq256/config.yaml`).
Task: unconditional image synthesis.

  ldm-jax sample --config configs/ffhq_ldm_vq4.py --checkpoint models/ldm/ffhq256/model.ckpt \
      --steps 200 --eta 1.0 --num_samples 16
"""
from ldm_jax import zoo


def get_config():
    return zoo.unconditional_ldm_vq4(zoo.released(
        "models/ldm/ffhq256/model.ckpt", "models/ldm/ffhq256/config.yaml",
        "unconditional image synthesis, FFHQ 256x256",
        url="https://ommer-lab.com/files/latent-diffusion/ffhq.zip"))
