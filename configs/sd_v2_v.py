"""Stable Diffusion 2 768-v (768^2, v-prediction; Stability-AI/stablediffusion, v2-inference-v.yaml).

Model: as SD 2 base (KL-f8 first stage, the 865,910,724-parameter UNet, OpenCLIP ViT-H/14 penultimate
layer), trained to predict v = sqrt(abar) eps - sqrt(1 - abar) x0. Sample at 768x768 (latent 96x96);
the YAML's image_size 64 only sizes training logs.

Variants (`get_config(arg)`), the same architecture:
  "2.0" (default)  hf://stabilityai/stable-diffusion-2/768-v-ema.ckpt
  "2.1"            hf://stabilityai/stable-diffusion-2-1/v2-1_768-ema-pruned.ckpt
Task: text-to-image synthesis, 768x768.

Training (model card), on a LAION-5B subset (punsafe < 0.1, aesthetic score >= 4.5) as webdataset tar
shards; data.tokenizer: the folder of OpenCLIP's bpe_simple_vocab_16e6.txt.gz.
  "2.0"  from 512-base-ema.ckpt (the default pretrained.model), 150k v-objective steps at 512^2, then 140k
         at 768^2: this config is the second phase; run the first with --config.data.image_size=512
         --config.data.min_size=512 --config.train.num_steps=150000 and pass its export as pretrained.model
  "2.1"  from 768-v-ema.ckpt, 55k more steps (punsafe < 0.1) and 155k (punsafe < 0.98): 210k in all

  ldm-jax train --config configs/sd_v2_v.py --workdir /ckpt/sd2_768v \
      --config.data.shards='/data/laion5b-subset/{00000..99999}.tar' --config.data.tokenizer=/models/open_clip \
      --config.pretrained.model=/ckpt/sd2_v512/model.safetensors
  ldm-jax sample --config configs/sd_v2_v.py --checkpoint 768-v-ema.ckpt --height 768 --width 768 \
      --prompt "a professional photograph of an astronaut riding a horse" --steps 50 --guidance_scale 9.0
"""
from ldm_jax import zoo

SD_WARMUP = {"kind": "lambda_linear", "warm_up_steps": [10000], "f_start": [1.0e-6], "f_max": [1.0], "f_min": [1.0],
             "cycle_lengths": [10_000_000_000_000]}
LAION_5B = {"name": "tar", "shards": "", "image_size": 768, "min_size": 768, "task": "caption",
            "tokenizer_kind": "open_clip", "tokenizer": "", "max_length": 77}

_CHECKPOINTS = {
    "2.0": "hf://stabilityai/stable-diffusion-2/768-v-ema.ckpt",
    "2.1": "hf://stabilityai/stable-diffusion-2-1/v2-1_768-ema-pruned.ckpt",
}


def get_config(arg: str | None = None):
    if (arg or "2.0") not in _CHECKPOINTS:
        raise ValueError(f"unknown SD 2 768-v variant {arg!r}; expected one of {sorted(_CHECKPOINTS)}")
    config = zoo.stable_diffusion(
        zoo.sd_v2_unet(), zoo.open_clip_vit_h14(),
        zoo.released(_CHECKPOINTS[arg or "2.0"], "configs/stable-diffusion/v2-inference-v.yaml",
                     "text-to-image synthesis, 768x768", repo="Stability-AI/stablediffusion"),
        parameterization="v")
    # The SD 2 recipe (model card): AdamW, batch 2048, lr 1e-4 used as is after a 10k-step warm-up, 10% of the
    # captions dropped (as SD v1's; not restated for SD 2); the released *-ema weights are an EMA (decay not
    # published: the reference LitEma's 0.9999).
    if arg == "2.1":
        pretrained, steps = {"model": "768-v-ema.ckpt"}, 210_000
    else:
        pretrained, steps = {"model": "512-base-ema.ckpt"}, 140_000
    config = zoo.training(config, steps=steps, batch_size=2048, learning_rate=1.0e-4, schedule=SD_WARMUP,
                          cond_drop_prob=0.1, data=LAION_5B, pretrained=pretrained)
    config.ema = {"use_ema": True}
    return config
