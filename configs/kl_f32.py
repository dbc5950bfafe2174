"""KL-regularised autoencoder, f=32, d=64, attention at 16^2 and 8^2 (rFID 2.04).

Released checkpoint: `models/first_stage_models/kl-f32/model.ckpt`
from https://ommer-lab.com/files/latent-diffusion/kl-f32.zip
(CompVis/latent-diffusion model zoo, reference YAML `models/first_stage_models/kl-f32/config.yaml`).
Task: image <-> latent perceptual compression.

Training: OpenImages, 256^2 random crops, L1 + LPIPS + regulariser + PatchGAN (LPIPS needs torchvision's
VGG16 weights and lpips' vgg.pth).

  ldm-jax train --config configs/kl_f32.py --workdir /ckpt/kl_f32 --config.data.data_dir=/data/openimages/train \
      --config.train.lpips_vgg16_weights=vgg16-397923af.pth --config.train.lpips_linear_weights=vgg.pth
  ldm-jax convert --config configs/kl_f32.py --checkpoint models/first_stage_models/kl-f32/model.ckpt --out /tmp/kl_f32
  ldm-jax evaluate --config configs/kl_f32.py --checkpoint models/first_stage_models/kl-f32/model.ckpt \
      --data /data/imagenet/val --out eval/kl_f32   # PSNR, SSIM, R-FID (Tab. 8: ImageNet val)
"""
from ldm_jax import zoo

# The reference FullOpenImagesTrain resizes to 384 and takes a random 256 crop; here the smaller side
# goes to 256 before the random crop. data_dir: the user's OpenImages image folder.
OPENIMAGES = {"name": "folder", "data_dir": "", "labels": "none", "image_size": 256, "random_crop": True}


def get_config():
    config = zoo.autoencoder(
        zoo.kl_f32(),
        zoo.released("models/first_stage_models/kl-f32/model.ckpt", "models/first_stage_models/kl-f32/config.yaml",
                     "autoencoding", url="https://ommer-lab.com/files/latent-diffusion/kl-f32.zip"))
    # Reference YAML: base_learning_rate 4.5e-6 (Adam 0.5 / 0.9, the stage's default), batch_size 6 per
    # GPU (the GPU count is not published). Neither the paper nor the YAML states the run's length
    # (Lightning trains until stopped): 500k steps is ldm-jax's choice.
    return zoo.training(config, steps=500_000, batch_size=6, base_learning_rate=4.5e-6, data=OPENIMAGES)
