"""LDM-BSR: 4x super-resolution trained on OpenImages with the BSR degradation pipeline (Sec. 4.4, D.6.1).

Model: VQ-f4 first stage (z 64x64x3) + a 169M-parameter UNet (160 channels, mult 1,2,2,4, attention with
32-channel heads at the 8x-downsampled level and in the middle block; ds 16 is never reached)
taking the latent concatenated with the low-resolution image itself: the cond stage is the identity
(the 64^2 RGB image in [-1, 1] is the condition for a 256^2 output).
Runs convolutionally on larger inputs.
Released checkpoint: `models/ldm/bsr_sr/model.ckpt` from https://ommer-lab.com/files/latent-diffusion/sr_bsr.zip
(reference YAML: CompVis/latent-diffusion `models/ldm/bsr_sr/config.yaml`).
Task: super-resolution (x4).

Variants (`get_config(arg)`):
  "" (default)  the released model's training run: a folder of OpenImages images, 256^2 random crops
                degraded 4x by the light BSR pipeline (bsrgan_light), the frozen vq-f4 first stage
  "tiny"        width 32, 16x16 images of the built-in dataset (4x4 low-resolution inputs), random first
                stage, 2 steps: the test variant

  ldm-jax train --config configs/bsr_sr.py --workdir /ckpt/bsr_sr --config.data.data_dir=/data/openimages/train \
      --config.pretrained.first_stage=models/first_stage_models/vq-f4/model.ckpt
  ldm-jax train --config configs/bsr_sr.py:tiny --workdir /tmp/bsr_sr_tiny
The ImageNet LDM-SR of Tab. 5 (bicubic 4x, images under 256 px dropped, E.3.4) is the same run with
  --config.data.name=tfds --config.data.tfds_name=imagenet2012 --config.data.data_dir=/data/tfds \
      --config.data.degradation=bicubic --config.data.min_size=256
  ldm-jax sample --config configs/bsr_sr.py --checkpoint models/ldm/bsr_sr/model.ckpt \
      --low_res low_res.png --steps 100 --eta 1.0
"""
from ldm_jax import zoo


def _model(release):
    return zoo.latent_diffusion(
        zoo.vq_f4(with_loss=False),
        zoo.unet(image_size=64, in_channels=6, out_channels=3, model_channels=160, attention_resolutions=[16, 8],
                 num_res_blocks=2, channel_mult=[1, 2, 2, 4], num_head_channels=32),
        release,
        linear_start=0.0015, linear_end=0.0155, timesteps=1000, loss_type="l2", first_stage_key="image",
        cond_stage_key="LR_image", image_size=64, channels=3, concat_mode=True, cond_stage_trainable=False,
        conditioning_key="concat", cond_stage_source="identity")


def _tiny():
    config = _model(zoo.released("", "", "tiny super-resolution LDM for tests", repo="ldm-jax"))
    model = config.model
    model.first_stage.params.ddconfig.update(ch=32, ch_mult=[1, 1, 2], num_res_blocks=1, resolution=16)
    model.unet.params.update(image_size=4, model_channels=32, attention_resolutions=[2], num_res_blocks=1,
                             channel_mult=[1, 2], num_head_channels=16)
    model.diffusion.image_size = 4
    return zoo.tiny_training(config, task="super_resolution", sr_factor=4, degradation="bsr_light")


def get_config(arg: str | None = None):
    if arg == "tiny":
        return _tiny()
    if arg:
        raise ValueError(f"unknown bsr_sr variant {arg!r}; expected '' or 'tiny'")
    config = _model(zoo.released("models/ldm/bsr_sr/model.ckpt", "models/ldm/bsr_sr/config.yaml",
                                 "super-resolution x4 (BSR degradation)",
                                 url="https://ommer-lab.com/files/latent-diffusion/sr_bsr.zip"))
    # The YAML: base_learning_rate 1e-6, batch 64 (Tab. 15: lr 6.4e-5 = 1e-6 x 64), OpenImages
    # SuperresOpenImagesAdvancedTrain with degradation bsrgan_light, downscale_f 4, random crops (of 0.5-1.0
    # of the smaller side, then resized to 256; here the smaller side goes to 256 first). 860k iterations:
    # Tab. 15's super-resolution column, whose 169M-parameter UNet is this one.
    return zoo.training(
        config, steps=860_000, batch_size=64, base_learning_rate=1.0e-6,
        data={"name": "folder", "data_dir": "", "labels": "none", "image_size": 256, "random_crop": True,
              "task": "super_resolution", "sr_factor": 4, "degradation": "bsr_light"},
        pretrained={"first_stage": "models/first_stage_models/vq-f4/model.ckpt"})
