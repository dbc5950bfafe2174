"""Stable Diffusion 2 base (512^2, eps-prediction; Stability-AI/stablediffusion, v2-inference.yaml).

Model: KL-f8 first stage (83,653,863 params, latents scaled by 0.18215) + the 865,910,724-parameter UNet
(320 channels, mult 1,2,4,4, cross-attention transformers with 64-channel heads and linear in/out
projections, context 1024) + the frozen OpenCLIP ViT-H/14 text encoder, read at its penultimate layer.

Variants (`get_config(arg)`), the same architecture:
  "2.0" (default)  hf://stabilityai/stable-diffusion-2-base/512-base-ema.ckpt
  "2.1"            hf://stabilityai/stable-diffusion-2-1-base/v2-1_512-ema-pruned.ckpt
Task: text-to-image synthesis, 512x512.

Training (model card), on a LAION-5B subset (punsafe < 0.1, aesthetic score >= 4.5) as webdataset tar
shards; data.tokenizer: the folder of OpenCLIP's bpe_simple_vocab_16e6.txt.gz.
  "2.0"  550k steps at 256^2, then 850k at 512^2 on images of at least 512^2: this config is the second
         phase; its UNet starts from the first's export (the first phase was not released; run it with
         --config.data.image_size=256 --config.data.min_size=0 --config.train.num_steps=550000), the VAE and
         the text encoder come from 512-base-ema.ckpt
  "2.1"  220k more steps from 512-base-ema.ckpt (with punsafe < 0.98)

  ldm-jax train --config configs/sd_v2.py --workdir /ckpt/sd2_512 \
      --config.data.shards='/data/laion5b-subset/{00000..99999}.tar' --config.data.tokenizer=/models/open_clip \
      --config.pretrained.model=/ckpt/sd2_256/model.safetensors
  ldm-jax train --config configs/sd_v2.py:2.1 --workdir /ckpt/sd2_1 \
      --config.data.shards='/data/laion5b-subset/{00000..99999}.tar' --config.data.tokenizer=/models/open_clip
  ldm-jax sample --config configs/sd_v2.py --checkpoint 512-base-ema.ckpt \
      --prompt "a professional photograph of an astronaut riding a horse" --steps 50 --guidance_scale 9.0
"""
from ldm_jax import zoo

SD_WARMUP = {"kind": "lambda_linear", "warm_up_steps": [10000], "f_start": [1.0e-6], "f_max": [1.0], "f_min": [1.0],
             "cycle_lengths": [10_000_000_000_000]}
LAION_5B = {"name": "tar", "shards": "", "image_size": 512, "min_size": 512, "task": "caption",
            "tokenizer_kind": "open_clip", "tokenizer": "", "max_length": 77}

_CHECKPOINTS = {
    "2.0": "hf://stabilityai/stable-diffusion-2-base/512-base-ema.ckpt",
    "2.1": "hf://stabilityai/stable-diffusion-2-1-base/v2-1_512-ema-pruned.ckpt",
}


def get_config(arg: str | None = None):
    if (arg or "2.0") not in _CHECKPOINTS:
        raise ValueError(f"unknown SD 2 base variant {arg!r}; expected one of {sorted(_CHECKPOINTS)}")
    config = zoo.stable_diffusion(
        zoo.sd_v2_unet(), zoo.open_clip_vit_h14(),
        zoo.released(_CHECKPOINTS[arg or "2.0"], "configs/stable-diffusion/v2-inference.yaml",
                     "text-to-image synthesis, 512x512", repo="Stability-AI/stablediffusion"))
    # The SD 2 recipe (model card): AdamW, batch 2048, lr 1e-4 used as is after a 10k-step warm-up, 10% of the
    # captions dropped (as SD v1's; not restated for SD 2); the released *-ema weights are an EMA (decay not
    # published: the reference LitEma's 0.9999).
    if arg == "2.1":
        pretrained, steps = {"model": "512-base-ema.ckpt"}, 220_000
    else:
        pretrained, steps = {"first_stage": "512-base-ema.ckpt", "cond_stage": "512-base-ema.ckpt"}, 850_000
    config = zoo.training(config, steps=steps, batch_size=2048, learning_rate=1.0e-4, schedule=SD_WARMUP,
                          cond_drop_prob=0.1, data=LAION_5B, pretrained=pretrained)
    config.ema = {"use_ema": True}
    return config
