"""VQ-regularised autoencoder, f=4, codebook Z=8192 x d=3, z 64x64x3 at 256^2.

Variants (`get_config(arg)`):
  ""        vq-f4 (rFID 0.58), the first stage of the LDM-VQ-4 models (CelebA-HQ, FFHQ, LSUN-Bedrooms,
            ImageNet cin256-v2, layout-to-image, semantic synthesis, BSR super-resolution).
            Released checkpoint: `models/first_stage_models/vq-f4/model.ckpt`
            from https://ommer-lab.com/files/latent-diffusion/vq-f4.zip
  "noattn"  vq-f4-noattn (rFID 1.06): no attention block at all (attn_type none), the first stage of
            the big inpainting LDM. Released checkpoint: `models/first_stage_models/vq-f4-noattn/model.ckpt`
            from https://heibox.uni-heidelberg.de/f/9c6681f64bb94338a069/?dl=1
Reference YAML: CompVis/latent-diffusion `models/first_stage_models/<variant>/config.yaml`.
Task: image <-> latent perceptual compression.

Training: OpenImages, 256^2 random crops, L1 + LPIPS + codebook loss + PatchGAN (LPIPS needs
torchvision's VGG16 weights and lpips' vgg.pth).

  ldm-jax train --config configs/vq_f4.py --workdir /ckpt/vq_f4 --config.data.data_dir=/data/openimages/train \
      --config.train.lpips_vgg16_weights=vgg16-397923af.pth --config.train.lpips_linear_weights=vgg.pth
  ldm-jax convert --config configs/vq_f4.py --checkpoint models/first_stage_models/vq-f4/model.ckpt --out /tmp/vq_f4
  ldm-jax evaluate --config configs/vq_f4.py:noattn --checkpoint models/first_stage_models/vq-f4-noattn/model.ckpt \
      --data /data/imagenet/val --out eval/vq_f4   # PSNR, SSIM, R-FID (Tab. 8: ImageNet val)
"""
from ldm_jax import zoo

# The reference YAMLs give FullOpenImagesTrain only crop_size 256 (a random 256 crop); here the smaller
# side first goes to 256. data_dir: the user's OpenImages image folder.
OPENIMAGES = {"name": "folder", "data_dir": "", "labels": "none", "image_size": 256, "random_crop": True}

_VARIANTS = {
    "": (zoo.vq_f4, "vq-f4", "https://ommer-lab.com/files/latent-diffusion/vq-f4.zip"),
    "noattn": (zoo.vq_f4_noattn, "vq-f4-noattn", "https://heibox.uni-heidelberg.de/f/9c6681f64bb94338a069/?dl=1"),
}


def get_config(arg: str | None = None):
    if (arg or "") not in _VARIANTS:
        raise ValueError(f"unknown vq_f4 variant {arg!r}; expected one of {sorted(_VARIANTS)}")
    component, folder, url = _VARIANTS[arg or ""]
    config = zoo.autoencoder(
        component(),
        zoo.released(f"models/first_stage_models/{folder}/model.ckpt",
                     f"models/first_stage_models/{folder}/config.yaml", "autoencoding", url=url))
    # Reference YAMLs (both variants): base_learning_rate 4.5e-6 (Adam 0.5 / 0.9, the stage's default),
    # batch_size 8 per GPU (the GPU count is not published). Neither the paper nor the YAMLs state the
    # run's length (Lightning trains until stopped): 500k steps is ldm-jax's choice.
    return zoo.training(config, steps=500_000, batch_size=8, base_learning_rate=4.5e-6, data=OPENIMAGES)
