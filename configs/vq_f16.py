"""VQ-regularised autoencoder, f=16, codebook Z=16384 x d=8, attention at 16^2 (rFID 5.15).

Released checkpoint: `models/first_stage_models/vq-f16/model.ckpt`
from https://heibox.uni-heidelberg.de/f/0e42b04e2e904890a9b6/?dl=1
(CompVis/latent-diffusion model zoo, reference YAML `models/first_stage_models/vq-f16/config.yaml`).
Task: image <-> latent perceptual compression.

  ldm-jax convert --config configs/vq_f16.py --checkpoint models/first_stage_models/vq-f16/model.ckpt --out /tmp/vq_f16
  ldm-jax evaluate --config configs/vq_f16.py --checkpoint models/first_stage_models/vq-f16/model.ckpt
"""
from ldm_jax import zoo


def get_config():
    return zoo.autoencoder(
        zoo.vq_f16(),
        zoo.released("models/first_stage_models/vq-f16/model.ckpt", "models/first_stage_models/vq-f16/config.yaml",
                     "autoencoding", url="https://heibox.uni-heidelberg.de/f/0e42b04e2e904890a9b6/?dl=1"))
