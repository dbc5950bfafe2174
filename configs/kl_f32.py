"""KL-regularised autoencoder, f=32, d=64, attention at 16^2 and 8^2 (rFID 2.04).

Released checkpoint: `models/first_stage_models/kl-f32/model.ckpt`
from https://ommer-lab.com/files/latent-diffusion/kl-f32.zip
(CompVis/latent-diffusion model zoo, reference YAML `models/first_stage_models/kl-f32/config.yaml`).
Task: image <-> latent perceptual compression.

  ldm-jax convert --config configs/kl_f32.py --checkpoint models/first_stage_models/kl-f32/model.ckpt --out /tmp/kl_f32
  ldm-jax evaluate --config configs/kl_f32.py --checkpoint models/first_stage_models/kl-f32/model.ckpt
"""
from ldm_jax import zoo


def get_config():
    return zoo.autoencoder(
        zoo.kl_f32(),
        zoo.released("models/first_stage_models/kl-f32/model.ckpt", "models/first_stage_models/kl-f32/config.yaml",
                     "autoencoding", url="https://ommer-lab.com/files/latent-diffusion/kl-f32.zip"))
