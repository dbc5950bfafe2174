"""VQ-regularised autoencoder, f=8, d=4, attention at 32^2, z 32x32x4 at 256^2.

Variants (`get_config(arg)`):
  ""      vq-f8, codebook Z=16384 (rFID 1.14): `models/first_stage_models/vq-f8/model.ckpt`
          from https://ommer-lab.com/files/latent-diffusion/vq-f8.zip
  "n256"  vq-f8-n256, codebook Z=256 (rFID 1.49): `models/first_stage_models/vq-f8-n256/model.ckpt`
          from https://ommer-lab.com/files/latent-diffusion/vq-f8-n256.zip
Reference YAML: CompVis/latent-diffusion `models/first_stage_models/<variant>/config.yaml`.
Task: image <-> latent perceptual compression (vq-f8: first stage of the LDM-VQ-8 ImageNet model).

Training: OpenImages, 256^2 random crops, L1 + LPIPS + codebook loss + PatchGAN (LPIPS needs
torchvision's VGG16 weights and lpips' vgg.pth).

  ldm-jax train --config configs/vq_f8.py --workdir /ckpt/vq_f8 --config.data.data_dir=/data/openimages/train \
      --config.train.lpips_vgg16_weights=vgg16-397923af.pth --config.train.lpips_linear_weights=vgg.pth
  ldm-jax convert --config configs/vq_f8.py --checkpoint models/first_stage_models/vq-f8/model.ckpt --out /tmp/vq_f8
  ldm-jax evaluate --config configs/vq_f8.py:n256 --checkpoint models/first_stage_models/vq-f8-n256/model.ckpt \
      --data /data/imagenet/val --out eval/vq_f8   # PSNR, SSIM, R-FID (Tab. 8: ImageNet val)
"""
from ldm_jax import zoo

# The reference FullOpenImagesTrain resizes to 384 and takes a random 256 crop; here the smaller side
# goes to 256 before the random crop. data_dir: the user's OpenImages image folder.
OPENIMAGES = {"name": "folder", "data_dir": "", "labels": "none", "image_size": 256, "random_crop": True}

_VARIANTS = {
    "": (zoo.vq_f8, "vq-f8"),
    "n256": (zoo.vq_f8_n256, "vq-f8-n256"),
}


def get_config(arg: str | None = None):
    if (arg or "") not in _VARIANTS:
        raise ValueError(f"unknown vq_f8 variant {arg!r}; expected one of {sorted(_VARIANTS)}")
    component, folder = _VARIANTS[arg or ""]
    config = zoo.autoencoder(
        component(),
        zoo.released(f"models/first_stage_models/{folder}/model.ckpt",
                     f"models/first_stage_models/{folder}/config.yaml", "autoencoding",
                     url=f"https://ommer-lab.com/files/latent-diffusion/{folder}.zip"))
    # Reference YAMLs (both variants): base_learning_rate 4.5e-6 (Adam 0.5 / 0.9, the stage's default),
    # batch_size 10 per GPU (the GPU count is not published). Neither the paper nor the YAMLs state the
    # run's length (Lightning trains until stopped): 500k steps is ldm-jax's choice.
    return zoo.training(config, steps=500_000, batch_size=10, base_learning_rate=4.5e-6, data=OPENIMAGES)
