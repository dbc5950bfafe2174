"""LDM-KL-8: unconditional LSUN-Churches 256^2 (FID 4.02 with 400 DDIM steps, eta 0; Tab. 1, 12).

Model: KL-f8 first stage (z 32x32x4) + a 294M-parameter UNet (192 channels, mult 1,2,2,4,4,
attention at 32, 16, 8, 4 with 8 heads, scale-shift norm and BigGAN up/down ResBlocks), L1 loss.
`scale_by_std`: the latent scale was estimated from the data when training began and is stored in the
checkpoint as the `scale_factor` buffer, which takes the place of `diffusion.scale_factor`.
Released checkpoint: `models/ldm/lsun_churches256/model.ckpt`
from https://ommer-lab.com/files/latent-diffusion/lsun_churches.zip
(reference YAML: CompVis/latent-diffusion `models/ldm/lsun_churches256/config.yaml`).
Task: unconditional image synthesis.

Training (Tab. 12): a folder of LSUN-Churches images, the frozen kl-f8 first stage, a 10k-step warm-up.

  ldm-jax train --config configs/lsun_churches_ldm_kl8.py --workdir /ckpt/lsun_churches \
      --config.data.data_dir=/data/lsun/churches \
      --config.pretrained.first_stage=models/first_stage_models/kl-f8/model.ckpt
  ldm-jax sample --config configs/lsun_churches_ldm_kl8.py --checkpoint models/ldm/lsun_churches256/model.ckpt \
      --steps 400 --eta 0.0 --num_samples 16
"""
from ldm_jax import zoo


def get_config():
    config = zoo.latent_diffusion(
        zoo.kl_f8(with_loss=False),
        zoo.unet(image_size=32, in_channels=4, out_channels=4, model_channels=192, attention_resolutions=[1, 2, 4, 8],
                 num_res_blocks=2, channel_mult=[1, 2, 2, 4, 4], num_heads=8, use_scale_shift_norm=True,
                 resblock_updown=True),
        zoo.released("models/ldm/lsun_churches256/model.ckpt", "models/ldm/lsun_churches256/config.yaml",
                     "unconditional image synthesis, LSUN-Churches 256x256",
                     url="https://ommer-lab.com/files/latent-diffusion/lsun_churches.zip"),
        linear_start=0.0015, linear_end=0.0155, timesteps=1000, loss_type="l1", first_stage_key="image",
        cond_stage_key="image", image_size=32, channels=4, cond_stage_trainable=False, concat_mode=False,
        scale_by_std=True)
    # Tab. 12: batch 96, 500k iterations, lr 5e-5; the YAML's base_learning_rate 5e-5 is that rate ("set to
    # target_lr by starting main.py with '--scale_lr False'"), with its LambdaLinearScheduler: 10k warm-up
    # steps from f_start 1e-6. The reference LSUNChurchesTrain: centre crop, bicubic resize, flip with p 0.5.
    return zoo.training(
        config, steps=500_000, batch_size=96, learning_rate=5.0e-5,
        schedule={"kind": "lambda_linear", "warm_up_steps": [10000], "f_start": [1.0e-6], "f_max": [1.0],
                  "f_min": [1.0], "cycle_lengths": [10_000_000_000_000]},
        data={"name": "folder", "data_dir": "", "labels": "none", "image_size": 256, "flip": True},
        pretrained={"first_stage": "models/first_stage_models/kl-f8/model.ckpt"})
