"""LDM-4 big inpainting model (Places; FID 9.39 on 512^2 crops after fine-tuning, Sec. 4.5, Tab. 7).

Model: VQ-f4 first stage without attention (vq-f4-noattn, z 64x64x3) + a 387M-parameter UNet (256 channels,
mult 1,2,3,4, 8-head attention at 32, 16, 8, BigGAN up/down ResBlocks). The UNet sees 7 channels: the noisy
latent (3), the first-stage encoding of the masked image (3) and the mask resized to the latent (1);
the cond stage is the first stage itself (reference `__is_first_stage__`).
Released checkpoint: `models/ldm/inpainting_big/last.ckpt`
from https://heibox.uni-heidelberg.de/f/4d9ac7ea40c64582b7c9/?dl=1
(reference YAML: CompVis/latent-diffusion `models/ldm/inpainting_big/config.yaml`).
Task: image inpainting.

  ldm-jax sample --config configs/inpainting_big.py --checkpoint models/ldm/inpainting_big/last.ckpt \
      --image image.png --mask image_mask.png --steps 50 --eta 0.0
"""
from ldm_jax import zoo


def get_config():
    return zoo.latent_diffusion(
        zoo.vq_f4_noattn(with_loss=False),
        zoo.unet(image_size=64, in_channels=7, out_channels=3, model_channels=256, attention_resolutions=[8, 4, 2],
                 num_res_blocks=2, channel_mult=[1, 2, 3, 4], num_heads=8, resblock_updown=True),
        zoo.released("models/ldm/inpainting_big/last.ckpt", "models/ldm/inpainting_big/config.yaml",
                     "image inpainting", url="https://heibox.uni-heidelberg.de/f/4d9ac7ea40c64582b7c9/?dl=1"),
        linear_start=0.0015, linear_end=0.0205, timesteps=1000, loss_type="l1", first_stage_key="image",
        cond_stage_key="masked_image", image_size=64, channels=3, concat_mode=True, conditioning_key="concat",
        cond_stage_source="first_stage")
