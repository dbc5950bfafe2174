"""KL-regularised autoencoder, f=4, z 64x64x3 at 256^2 (rFID 0.27 on OpenImages val).

Released checkpoint: `models/first_stage_models/kl-f4/model.ckpt`
from https://ommer-lab.com/files/latent-diffusion/kl-f4.zip
(CompVis/latent-diffusion model zoo, reference YAML `models/first_stage_models/kl-f4/config.yaml`).
Task: image <-> latent perceptual compression (first stage of LDM-KL-4 models).

  ldm-jax convert --config configs/kl_f4.py --checkpoint models/first_stage_models/kl-f4/model.ckpt --out /tmp/kl_f4
  ldm-jax evaluate --config configs/kl_f4.py --checkpoint models/first_stage_models/kl-f4/model.ckpt
"""
from ldm_jax import zoo


def get_config():
    return zoo.autoencoder(
        zoo.kl_f4(),
        zoo.released("models/first_stage_models/kl-f4/model.ckpt", "models/first_stage_models/kl-f4/config.yaml",
                     "autoencoding", url="https://ommer-lab.com/files/latent-diffusion/kl-f4.zip"))
