"""LDM-VQ-4: unconditional LSUN-Bedrooms 256^2 (FID 2.95 with 200 DDIM steps, eta 1; Tab. 1, 12).

Model: VQ-f4 first stage (z 64x64x3) + a 274M-parameter UNet (224 channels, mult 1,2,3,4,
attention at 32, 16, 8 with 32-channel heads), the same architecture as CelebA-HQ's.
Released checkpoint: `models/ldm/lsun_beds256/model.ckpt`
from https://ommer-lab.com/files/latent-diffusion/lsun_bedrooms.zip
(reference YAML: CompVis/latent-diffusion `models/ldm/lsun_beds256/config.yaml`).
Task: unconditional image synthesis.

Training (Tab. 12): a folder of LSUN-Bedrooms images, the frozen vq-f4 first stage.

  ldm-jax train --config configs/lsun_bedrooms_ldm_vq4.py --workdir /ckpt/lsun_bedrooms \
      --config.data.data_dir=/data/lsun/bedrooms \
      --config.pretrained.first_stage=models/first_stage_models/vq-f4/model.ckpt
  ldm-jax sample --config configs/lsun_bedrooms_ldm_vq4.py --checkpoint models/ldm/lsun_beds256/model.ckpt \
      --steps 200 --eta 1.0 --num_samples 16
"""
from ldm_jax import zoo


def get_config():
    config = zoo.unconditional_ldm_vq4(zoo.released(
        "models/ldm/lsun_beds256/model.ckpt", "models/ldm/lsun_beds256/config.yaml",
        "unconditional image synthesis, LSUN-Bedrooms 256x256",
        url="https://ommer-lab.com/files/latent-diffusion/lsun_bedrooms.zip"))
    # Tab. 12: batch 48, 1.9M iterations, lr 9.6e-5 = the YAML's base_learning_rate 2e-6 x 48 (scale_lr).
    # The reference LSUNBedroomsTrain: centre crop, bicubic resize to 256, flip with p 0.5.
    return zoo.training(
        config, steps=1_900_000, batch_size=48, base_learning_rate=2.0e-6,
        data={"name": "folder", "data_dir": "", "labels": "none", "image_size": 256, "flip": True},
        pretrained={"first_stage": "models/first_stage_models/vq-f4/model.ckpt"})
