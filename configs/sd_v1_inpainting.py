"""Stable Diffusion v1.5 inpainting (runwayml/stable-diffusion, v1-inpainting-inference.yaml).

Model: SD v1 (KL-f8 first stage, CLIP ViT-L/14 text encoder) with a UNet of 9 input channels: the noisy
latent (4), the mask resized to the latent (1) and the first-stage encoding of the masked image (4),
concatenated ("hybrid" conditioning: concat + cross-attention on the text). 859,535,364 parameters
(SD v1's plus 5 input channels of the first 3x3 conv).
The YAML leaves use_ema at its default (True); the released file holds a single copy of the weights
(no `model_ema.*`), so `model.diffusion_model.*` are the ones to use and use_ema is False here.
Released checkpoint: hf://runwayml/stable-diffusion-inpainting/sd-v1-5-inpainting.ckpt
(also at stable-diffusion-v1-5/stable-diffusion-inpainting).
Task: text-guided image inpainting.

Training (model card): 440k steps at 512^2 on LAION-Aesthetics v2 5+ (webdataset tar shards) with
synthetic masks (here the pipeline's random masks over 10-50% of the image, masked pixels grey as SD's),
10% of the captions dropped. The reference resumed v1-5's 595k regular steps, zero-initialising the 5 new
input channels; loading a 4-channel UNet into this 9-channel one is not supported, so only the VAE and
the text encoder are loaded (from v1-5-pruned-emaonly.ckpt) and the UNet starts from scratch.
Not trainable yet: the data pipeline makes one task's inputs (data.task), and this model needs the masks
and the caption tokens together; the run stops at its first step naming the missing 'caption_tokens'.

  ldm-jax train --config configs/sd_v1_inpainting.py --workdir /ckpt/sd_v1_inpainting \
      --config.data.shards='/data/laion-aesthetics-5plus/{00000..59999}.tar'
  ldm-jax sample --config configs/sd_v1_inpainting.py --checkpoint sd-v1-5-inpainting.ckpt \
      --image dog.png --mask dog_mask.png --prompt "a white cat sitting on a bench" --steps 50 --guidance_scale 7.5
"""
from ldm_jax import zoo

SD_WARMUP = {"kind": "lambda_linear", "warm_up_steps": [10000], "f_start": [1.0e-6], "f_max": [1.0], "f_min": [1.0],
             "cycle_lengths": [10_000_000_000_000]}
LAION_AESTHETICS = {"name": "tar", "shards": "", "image_size": 512, "min_size": 512, "task": "inpainting",
                    "mask_fill": 0.0}


def get_config():
    config = zoo.stable_diffusion(
        zoo.sd_v1_unet(in_channels=9), zoo.clip_vit_l14(),
        zoo.released("hf://runwayml/stable-diffusion-inpainting/sd-v1-5-inpainting.ckpt",
                     "configs/stable-diffusion/v1-inpainting-inference.yaml", "text-guided image inpainting, 512x512",
                     repo="runwayml/stable-diffusion"),
        conditioning_key="hybrid")
    # The SD recipe (model card): AdamW, batch 2048 (32 x 8 A100 x 4 per GPU x 2 accumulated; here one global
    # batch), lr 1e-4 used as is after a 10k-step warm-up (the YAML's LambdaLinearScheduler), 10% of the captions
    # dropped; the released *-ema weights are an EMA (decay not published: the reference LitEma's 0.9999).
    config = zoo.training(config, steps=440_000, batch_size=2048, learning_rate=1.0e-4, schedule=SD_WARMUP,
                          cond_drop_prob=0.1, data=LAION_AESTHETICS,
                          pretrained={"first_stage": "v1-5-pruned-emaonly.ckpt",
                                      "cond_stage": "v1-5-pruned-emaonly.ckpt"})
    config.ema = {"use_ema": True}
    return config
