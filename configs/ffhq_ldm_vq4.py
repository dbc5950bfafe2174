"""LDM-VQ-4: unconditional FFHQ 256^2 (FID 4.98 with 200 DDIM steps, eta 1; Tab. 1, 12).

Model: VQ-f4 first stage (z 64x64x3) + a 274M-parameter UNet (224 channels, mult 1,2,3,4,
attention at 32, 16, 8 with 32-channel heads), the same architecture as CelebA-HQ's.
Released checkpoint: `models/ldm/ffhq256/model.ckpt` from https://ommer-lab.com/files/latent-diffusion/ffhq.zip
(reference YAML: CompVis/latent-diffusion `models/ldm/ffhq256/config.yaml`).
Task: unconditional image synthesis.

Training (Tab. 12): a folder of FFHQ images at 256^2, the frozen vq-f4 first stage.

  ldm-jax train --config configs/ffhq_ldm_vq4.py --workdir /ckpt/ffhq \
      --config.data.data_dir=/data/ffhq --config.pretrained.first_stage=models/first_stage_models/vq-f4/model.ckpt
  ldm-jax sample --config configs/ffhq_ldm_vq4.py --checkpoint models/ldm/ffhq256/model.ckpt \
      --steps 200 --eta 1.0 --num_samples 16
"""
from ldm_jax import zoo


def get_config():
    config = zoo.unconditional_ldm_vq4(zoo.released(
        "models/ldm/ffhq256/model.ckpt", "models/ldm/ffhq256/config.yaml",
        "unconditional image synthesis, FFHQ 256x256",
        url="https://ommer-lab.com/files/latent-diffusion/ffhq.zip"))
    # Tab. 12: batch 42, 635k iterations, lr 8.4e-5 = the YAML's base_learning_rate 2e-6 x 42 (scale_lr).
    # The reference FFHQTrain reads the 256^2 images as they are: no crop, no flip.
    return zoo.training(
        config, steps=635_000, batch_size=42, base_learning_rate=2.0e-6,
        data={"name": "folder", "data_dir": "", "labels": "none", "image_size": 256},
        pretrained={"first_stage": "models/first_stage_models/vq-f4/model.ckpt"})
