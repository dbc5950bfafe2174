"""KL-regularised autoencoder, f=8, z 32x32x4 at 256^2 (rFID 0.90); the same architecture is Stable Diffusion's VAE.

Released checkpoint: `models/first_stage_models/kl-f8/model.ckpt`
from https://ommer-lab.com/files/latent-diffusion/kl-f8.zip
(CompVis/latent-diffusion model zoo, reference YAML `models/first_stage_models/kl-f8/config.yaml`).
Task: image <-> latent perceptual compression (first stage of LDM-KL-8, the LDM text-to-image model and SD).

Training: OpenImages, 256^2 random crops, L1 + LPIPS + regulariser + PatchGAN (LPIPS needs torchvision's
VGG16 weights and lpips' vgg.pth).

  ldm-jax train --config configs/kl_f8.py --workdir /ckpt/kl_f8 --config.data.data_dir=/data/openimages/train \
      --config.train.lpips_vgg16_weights=vgg16-397923af.pth --config.train.lpips_linear_weights=vgg.pth
  ldm-jax convert --config configs/kl_f8.py --checkpoint models/first_stage_models/kl-f8/model.ckpt --out /tmp/kl_f8
  ldm-jax evaluate --config configs/kl_f8.py --checkpoint models/first_stage_models/kl-f8/model.ckpt \
      --data /data/imagenet/val --out eval/kl_f8   # PSNR, SSIM, R-FID (Tab. 8: ImageNet val)
"""
from ldm_jax import zoo

# The reference FullOpenImagesTrain resizes to 384 and takes a random 256 crop; here the smaller side
# goes to 256 before the random crop. data_dir: the user's OpenImages image folder.
OPENIMAGES = {"name": "folder", "data_dir": "", "labels": "none", "image_size": 256, "random_crop": True}


def get_config():
    config = zoo.autoencoder(
        zoo.kl_f8(),
        zoo.released("models/first_stage_models/kl-f8/model.ckpt", "models/first_stage_models/kl-f8/config.yaml",
                     "autoencoding", url="https://ommer-lab.com/files/latent-diffusion/kl-f8.zip"))
    # Reference YAML: base_learning_rate 4.5e-6 (Adam 0.5 / 0.9, the stage's default), batch_size 4 per
    # GPU (the GPU count is not published). Neither the paper nor the YAML states the run's length
    # (Lightning trains until stopped): 500k steps is ldm-jax's choice.
    return zoo.training(config, steps=500_000, batch_size=4, base_learning_rate=4.5e-6, data=OPENIMAGES)
