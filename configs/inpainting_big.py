"""LDM-4 big inpainting model (Places; FID 9.39 on 512^2 crops after fine-tuning, Sec. 4.5, Tab. 7).

Model: VQ-f4 first stage without attention (vq-f4-noattn, z 64x64x3) + a 387M-parameter UNet (256 channels,
mult 1,2,3,4, 8-head attention at 32, 16, 8, BigGAN up/down ResBlocks). The UNet sees 7 channels: the noisy
latent (3), the first-stage encoding of the masked image (3) and the mask resized to the latent (1);
the cond stage is the first stage itself (reference `__is_first_stage__`).
Released checkpoint: `models/ldm/inpainting_big/last.ckpt`
from https://heibox.uni-heidelberg.de/f/4d9ac7ea40c64582b7c9/?dl=1
(reference YAML: CompVis/latent-diffusion `models/ldm/inpainting_big/config.yaml`).
Task: image inpainting.

Variants (`get_config(arg)`):
  "" (default)  the released model's training run: a folder of Places images, random 256^2 crops, random
                masks (black fill, as the reference's masked images), the frozen vq-f4-noattn first stage
  "tiny"        width 32, 16x16 images of the built-in dataset, random first stage, 2 steps: the test variant

  ldm-jax train --config configs/inpainting_big.py --workdir /ckpt/inpainting --config.data.data_dir=/data/places \
      --config.pretrained.first_stage=models/first_stage_models/vq-f4-noattn/model.ckpt
  ldm-jax train --config configs/inpainting_big.py:tiny --workdir /tmp/inpainting_tiny
  ldm-jax sample --config configs/inpainting_big.py --checkpoint models/ldm/inpainting_big/last.ckpt \
      --image image.png --mask image_mask.png --steps 50 --eta 0.0
"""
from ldm_jax import zoo


def _model(release):
    return zoo.latent_diffusion(
        zoo.vq_f4_noattn(with_loss=False),
        zoo.unet(image_size=64, in_channels=7, out_channels=3, model_channels=256, attention_resolutions=[8, 4, 2],
                 num_res_blocks=2, channel_mult=[1, 2, 3, 4], num_heads=8, resblock_updown=True),
        release,
        linear_start=0.0015, linear_end=0.0205, timesteps=1000, loss_type="l1", first_stage_key="image",
        cond_stage_key="masked_image", image_size=64, channels=3, concat_mode=True, conditioning_key="concat",
        cond_stage_source="first_stage")


def _tiny():
    config = _model(zoo.released("", "", "tiny inpainting LDM for tests", repo="ldm-jax"))
    model = config.model
    model.first_stage.params.ddconfig.update(ch=32, ch_mult=[1, 1, 2], num_res_blocks=1, resolution=16)
    model.unet.params.update(image_size=4, model_channels=32, attention_resolutions=[2], num_res_blocks=1,
                             channel_mult=[1, 2], num_heads=2)
    model.diffusion.image_size = 4
    return zoo.tiny_training(config, task="inpainting", mask_fill=-1.0)


def get_config(arg: str | None = None):
    if arg == "tiny":
        return _tiny()
    if arg:
        raise ValueError(f"unknown inpainting_big variant {arg!r}; expected '' or 'tiny'")
    config = _model(zoo.released("models/ldm/inpainting_big/last.ckpt", "models/ldm/inpainting_big/config.yaml",
                                 "image inpainting",
                                 url="https://heibox.uni-heidelberg.de/f/4d9ac7ea40c64582b7c9/?dl=1"))
    # The YAML: base_learning_rate 1e-6 with its LambdaWarmUpCosineScheduler (1000 warm-up steps from 0.001 to
    # 0.1, cosine down to 1e-4 at step 50000, then flat): one cycle of lambda_warmup_cosine. Tab. 15's
    # inpainting column (8 V100, batch 128, 360k iterations, lr 1e-6 = the base rate) lists a 215M-parameter
    # UNet; no other source gives the big model's batch or length, so they are used here. E.2.2: random
    # 256^2 crops of Places, LaMa's synthetic masks (here the pipeline's random masks, 10-50% of the image).
    return zoo.training(
        config, steps=360_000, batch_size=128, base_learning_rate=1.0e-6,
        schedule={"kind": "lambda_warmup_cosine", "warm_up_steps": [1000], "f_start": [1.0e-3], "f_max": [0.1],
                  "f_min": [1.0e-4], "cycle_lengths": [50_000]},
        data={"name": "folder", "data_dir": "", "labels": "none", "image_size": 256, "random_crop": True,
              "task": "inpainting", "mask_fill": -1.0},
        pretrained={"first_stage": "models/first_stage_models/vq-f4-noattn/model.ckpt"})
