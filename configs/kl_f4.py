"""KL-regularised autoencoder, f=4, z 64x64x3 at 256^2 (rFID 0.27 on OpenImages val).

Released checkpoint: `models/first_stage_models/kl-f4/model.ckpt`
from https://ommer-lab.com/files/latent-diffusion/kl-f4.zip
(CompVis/latent-diffusion model zoo, reference YAML `models/first_stage_models/kl-f4/config.yaml`).
Task: image <-> latent perceptual compression (first stage of LDM-KL-4 models).

Variants (`get_config(arg)`):
  "" (default)  the released model and its training run: OpenImages, 256^2 random crops, L1 + LPIPS + KL
                + PatchGAN (LPIPS needs torchvision's VGG16 weights and lpips' vgg.pth)
  "tiny"        width 32, 16x16 images of the built-in dataset, no LPIPS, 2 steps: the test variant

  ldm-jax train --config configs/kl_f4.py --workdir /ckpt/kl_f4 --config.data.data_dir=/data/openimages/train \
      --config.train.lpips_vgg16_weights=vgg16-397923af.pth --config.train.lpips_linear_weights=vgg.pth
  ldm-jax train --config configs/kl_f4.py:tiny --workdir /tmp/kl_f4_tiny
  ldm-jax convert --config configs/kl_f4.py --checkpoint models/first_stage_models/kl-f4/model.ckpt --out /tmp/kl_f4
  ldm-jax evaluate --config configs/kl_f4.py --checkpoint models/first_stage_models/kl-f4/model.ckpt \
      --data /data/imagenet/val --out eval/kl_f4   # PSNR, SSIM, R-FID (Tab. 8: ImageNet val)
"""
from ldm_jax import zoo

# The reference FullOpenImagesTrain resizes to 384 and takes a random 256 crop; here the smaller side
# goes to 256 before the random crop. data_dir: the user's OpenImages image folder.
OPENIMAGES = {"name": "folder", "data_dir": "", "labels": "none", "image_size": 256, "random_crop": True}


def _tiny():
    component = zoo.kl_f4()
    component["params"]["ddconfig"].update(ch=32, ch_mult=[1, 1, 2], num_res_blocks=1, resolution=16)
    # No LPIPS (its VGG16 weights cannot be part of a test); a 2-layer discriminator fits 16x16.
    component["params"]["lossconfig"] = {
        "target": "ldm.modules.losses.LPIPSWithDiscriminator",
        "params": {"disc_start": 1, "kl_weight": 1.0e-6, "disc_weight": 0.5, "perceptual_weight": 0.0,
                   "disc_num_layers": 2}}
    config = zoo.autoencoder(component, zoo.released("", "", "tiny KL-f4 for tests", repo="ldm-jax"))
    return zoo.tiny_training(config, learning_rate=4.0e-4)


def get_config(arg: str | None = None):
    if arg == "tiny":
        return _tiny()
    if arg:
        raise ValueError(f"unknown kl_f4 variant {arg!r}; expected '' or 'tiny'")
    config = zoo.autoencoder(
        zoo.kl_f4(),
        zoo.released("models/first_stage_models/kl-f4/model.ckpt", "models/first_stage_models/kl-f4/config.yaml",
                     "autoencoding", url="https://ommer-lab.com/files/latent-diffusion/kl-f4.zip"))
    # Reference YAML: base_learning_rate 4.5e-6 (Adam 0.5 / 0.9, the stage's default), batch_size 10 per
    # GPU (the GPU count is not published). Neither the paper nor the YAML states the run's length
    # (Lightning trains until stopped): 500k steps is ldm-jax's choice.
    return zoo.training(config, steps=500_000, batch_size=10, base_learning_rate=4.5e-6, data=OPENIMAGES)
