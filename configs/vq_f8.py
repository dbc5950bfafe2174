"""VQ-regularised autoencoder, f=8, d=4, attention at 32^2, z 32x32x4 at 256^2.

Variants (`get_config(arg)`):
  ""      vq-f8, codebook Z=16384 (rFID 1.14): `models/first_stage_models/vq-f8/model.ckpt`
          from https://ommer-lab.com/files/latent-diffusion/vq-f8.zip
  "n256"  vq-f8-n256, codebook Z=256 (rFID 1.49): `models/first_stage_models/vq-f8-n256/model.ckpt`
          from https://ommer-lab.com/files/latent-diffusion/vq-f8-n256.zip
Reference YAML: CompVis/latent-diffusion `models/first_stage_models/<variant>/config.yaml`.
Task: image <-> latent perceptual compression (vq-f8: first stage of the LDM-VQ-8 ImageNet model).

  ldm-jax convert --config configs/vq_f8.py --checkpoint models/first_stage_models/vq-f8/model.ckpt --out /tmp/vq_f8
  ldm-jax evaluate --config configs/vq_f8.py:n256 --checkpoint models/first_stage_models/vq-f8-n256/model.ckpt
"""
from ldm_jax import zoo

_VARIANTS = {
    "": (zoo.vq_f8, "vq-f8"),
    "n256": (zoo.vq_f8_n256, "vq-f8-n256"),
}


def get_config(arg: str | None = None):
    if (arg or "") not in _VARIANTS:
        raise ValueError(f"unknown vq_f8 variant {arg!r}; expected one of {sorted(_VARIANTS)}")
    component, folder = _VARIANTS[arg or ""]
    return zoo.autoencoder(
        component(),
        zoo.released(f"models/first_stage_models/{folder}/model.ckpt",
                     f"models/first_stage_models/{folder}/config.yaml", "autoencoding",
                     url=f"https://ommer-lab.com/files/latent-diffusion/{folder}.zip"))
