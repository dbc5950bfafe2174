"""KL-regularised autoencoder, f=8, z 32x32x4 at 256^2 (rFID 0.90); the same architecture is Stable Diffusion's VAE.

Released checkpoint: `models/first_stage_models/kl-f8/model.ckpt`
from https://ommer-lab.com/files/latent-diffusion/kl-f8.zip
(CompVis/latent-diffusion model zoo, reference YAML `models/first_stage_models/kl-f8/config.yaml`).
Task: image <-> latent perceptual compression (first stage of LDM-KL-8, the LDM text-to-image model and SD).

  ldm-jax convert --config configs/kl_f8.py --checkpoint models/first_stage_models/kl-f8/model.ckpt --out /tmp/kl_f8
  ldm-jax evaluate --config configs/kl_f8.py --checkpoint models/first_stage_models/kl-f8/model.ckpt
"""
from ldm_jax import zoo


def get_config():
    return zoo.autoencoder(
        zoo.kl_f8(),
        zoo.released("models/first_stage_models/kl-f8/model.ckpt", "models/first_stage_models/kl-f8/config.yaml",
                     "autoencoding", url="https://ommer-lab.com/files/latent-diffusion/kl-f8.zip"))
