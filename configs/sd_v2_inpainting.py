"""Stable Diffusion 2 inpainting (512^2; Stability-AI/stablediffusion, v2-inpainting-inference.yaml).

Model: SD 2 base (KL-f8 first stage, OpenCLIP ViT-H/14 penultimate layer) with a UNet of 9 input channels:
the noisy latent (4), the mask resized to the latent (1) and the first-stage encoding of the masked image
(4), concatenated ("hybrid": concat + cross-attention on the text). 865,925,124 parameters (SD 2's plus
5 input channels of the first 3x3 conv). eps-prediction.
Released checkpoint: hf://stabilityai/stable-diffusion-2-inpainting/512-inpainting-ema.ckpt
Task: text-guided image inpainting.

Training (model card): 200k steps from 512-base-ema.ckpt with LaMa's mask generation (here the
pipeline's random masks over 10-50% of the image, masked pixels grey), on the LAION-5B subset as
webdataset tar shards. Loading a 4-channel UNet into this 9-channel one is not supported, so only the VAE
and the text encoder are loaded from 512-base-ema.ckpt and the UNet starts from scratch.
Not trainable yet: the data pipeline makes one task's inputs (data.task), and this model needs the masks
and the caption tokens together; the run stops at its first step naming the missing 'caption_tokens'.

  ldm-jax train --config configs/sd_v2_inpainting.py --workdir /ckpt/sd2_inpainting \
      --config.data.shards='/data/laion5b-subset/{00000..99999}.tar'
  ldm-jax sample --config configs/sd_v2_inpainting.py --checkpoint 512-inpainting-ema.ckpt \
      --image dog.png --mask dog_mask.png --prompt "a white cat sitting on a bench" --steps 50 --guidance_scale 9.0
"""
from ldm_jax import zoo

SD_WARMUP = {"kind": "lambda_linear", "warm_up_steps": [10000], "f_start": [1.0e-6], "f_max": [1.0], "f_min": [1.0],
             "cycle_lengths": [10_000_000_000_000]}
LAION_5B = {"name": "tar", "shards": "", "image_size": 512, "min_size": 512, "task": "inpainting", "mask_fill": 0.0}


def get_config():
    config = zoo.stable_diffusion(
        zoo.sd_v2_unet(in_channels=9, use_fp16=None), zoo.open_clip_vit_h14(),
        zoo.released("hf://stabilityai/stable-diffusion-2-inpainting/512-inpainting-ema.ckpt",
                     "configs/stable-diffusion/v2-inpainting-inference.yaml", "text-guided image inpainting, 512x512",
                     repo="Stability-AI/stablediffusion"),
        conditioning_key="hybrid")
    # The SD 2 recipe (model card): AdamW, batch 2048, lr 1e-4 used as is after a 10k-step warm-up, 10% of the
    # captions dropped (as SD v1's; not restated for SD 2); the released *-ema weights are an EMA (decay not
    # published: the reference LitEma's 0.9999).
    config = zoo.training(config, steps=200_000, batch_size=2048, learning_rate=1.0e-4, schedule=SD_WARMUP,
                          cond_drop_prob=0.1, data=LAION_5B,
                          pretrained={"first_stage": "512-base-ema.ckpt", "cond_stage": "512-base-ema.ckpt"})
    config.ema = {"use_ema": True}
    return config
