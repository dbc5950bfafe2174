"""LDM-BSR: 4x super-resolution trained on OpenImages with the BSR degradation pipeline (Sec. 4.4, D.6.1).

Model: VQ-f4 first stage (z 64x64x3) + a 169M-parameter UNet (160 channels, mult 1,2,2,4, attention with
32-channel heads at the 8x-downsampled level and in the middle block; ds 16 is never reached)
taking the latent concatenated with the low-resolution image itself: the cond stage is the identity
(the 64^2 RGB image in [-1, 1] is the condition for a 256^2 output).
Runs convolutionally on larger inputs.
Released checkpoint: `models/ldm/bsr_sr/model.ckpt` from https://ommer-lab.com/files/latent-diffusion/sr_bsr.zip
(reference YAML: CompVis/latent-diffusion `models/ldm/bsr_sr/config.yaml`).
Task: super-resolution (x4).

  ldm-jax sample --config configs/bsr_sr.py --checkpoint models/ldm/bsr_sr/model.ckpt \
      --low_res low_res.png --steps 100 --eta 1.0
"""
from ldm_jax import zoo


def get_config():
    return zoo.latent_diffusion(
        zoo.vq_f4(with_loss=False),
        zoo.unet(image_size=64, in_channels=6, out_channels=3, model_channels=160, attention_resolutions=[16, 8],
                 num_res_blocks=2, channel_mult=[1, 2, 2, 4], num_head_channels=32),
        zoo.released("models/ldm/bsr_sr/model.ckpt", "models/ldm/bsr_sr/config.yaml",
                     "super-resolution x4 (BSR degradation)",
                     url="https://ommer-lab.com/files/latent-diffusion/sr_bsr.zip"),
        linear_start=0.0015, linear_end=0.0155, timesteps=1000, loss_type="l2", first_stage_key="image",
        cond_stage_key="LR_image", image_size=64, channels=3, concat_mode=True, cond_stage_trainable=False,
        conditioning_key="concat", cond_stage_source="identity")
