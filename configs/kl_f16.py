"""KL-regularised autoencoder, f=16, d=16, attention at 16^2 (rFID 0.87).

Released checkpoint: `models/first_stage_models/kl-f16/model.ckpt`
from https://ommer-lab.com/files/latent-diffusion/kl-f16.zip
(CompVis/latent-diffusion model zoo, reference YAML `models/first_stage_models/kl-f16/config.yaml`).
Task: image <-> latent perceptual compression.

  ldm-jax convert --config configs/kl_f16.py --checkpoint models/first_stage_models/kl-f16/model.ckpt --out /tmp/kl_f16
  ldm-jax evaluate --config configs/kl_f16.py --checkpoint models/first_stage_models/kl-f16/model.ckpt
"""
from ldm_jax import zoo


def get_config():
    return zoo.autoencoder(
        zoo.kl_f16(),
        zoo.released("models/first_stage_models/kl-f16/model.ckpt", "models/first_stage_models/kl-f16/config.yaml",
                     "autoencoding", url="https://ommer-lab.com/files/latent-diffusion/kl-f16.zip"))
