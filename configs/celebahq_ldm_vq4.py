"""LDM-VQ-4: unconditional CelebA-HQ 256^2 (FID 5.11 with 500 DDIM steps, eta 0; Tab. 1, 12).

Model: VQ-f4 first stage (z 64x64x3) + a 274M-parameter UNet (224 channels, mult 1,2,3,4,
attention at 32, 16, 8 with 32-channel heads).
Released checkpoint: `models/ldm/celeba256/model.ckpt` from https://ommer-lab.com/files/latent-diffusion/celeba.zip
(reference YAML: CompVis/latent-diffusion `models/ldm/celeba256/config.yaml`).
Task: unconditional image synthesis.

Variants (`get_config(arg)`):
  "" (default)  the released model and its training run (Tab. 12): a folder of CelebA-HQ images at 256^2,
                the frozen vq-f4 first stage
  "tiny"        width 32, 16x16 images of the built-in dataset, random first stage, 2 steps: the test variant

  ldm-jax train --config configs/celebahq_ldm_vq4.py --workdir /ckpt/celebahq --config.data.data_dir=/data/celebahq \
      --config.pretrained.first_stage=models/first_stage_models/vq-f4/model.ckpt
  ldm-jax train --config configs/celebahq_ldm_vq4.py:tiny --workdir /tmp/celebahq_tiny
  ldm-jax sample --config configs/celebahq_ldm_vq4.py --checkpoint models/ldm/celeba256/model.ckpt \
      --steps 500 --eta 0.0 --num_samples 16
"""
from ldm_jax import zoo


def _tiny():
    config = zoo.unconditional_ldm_vq4(zoo.released("", "", "tiny unconditional LDM-VQ-4 for tests", repo="ldm-jax"))
    config.model.first_stage.params.ddconfig.update(ch=32, ch_mult=[1, 1, 2], num_res_blocks=1, resolution=16)
    config.model.unet.params.update(image_size=4, model_channels=32, attention_resolutions=[2], num_res_blocks=1,
                                    channel_mult=[1, 2], num_head_channels=16)
    config.model.diffusion.image_size = 4
    return zoo.tiny_training(config)


def get_config(arg: str | None = None):
    if arg == "tiny":
        return _tiny()
    if arg:
        raise ValueError(f"unknown celebahq_ldm_vq4 variant {arg!r}; expected '' or 'tiny'")
    config = zoo.unconditional_ldm_vq4(zoo.released(
        "models/ldm/celeba256/model.ckpt", "models/ldm/celeba256/config.yaml",
        "unconditional image synthesis, CelebA-HQ 256x256",
        url="https://ommer-lab.com/files/latent-diffusion/celeba.zip"))
    # Tab. 12: batch 48, 410k iterations, lr 9.6e-5 = the YAML's base_learning_rate 2e-6 x 48 (scale_lr).
    # The reference CelebAHQTrain reads the 256^2 images as they are: no crop, no flip.
    return zoo.training(
        config, steps=410_000, batch_size=48, base_learning_rate=2.0e-6,
        data={"name": "folder", "data_dir": "", "labels": "none", "image_size": 256},
        pretrained={"first_stage": "models/first_stage_models/vq-f4/model.ckpt"})
