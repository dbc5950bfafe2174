"""LDM-4 (cin256-v2): class-conditional ImageNet 256^2 (FID 3.60 / IS 247.7 with 250 DDIM steps and
classifier-free guidance scale 1.5; Tab. 3, 10, 13).

Model: VQ-f4 first stage (z 64x64x3) + a 395M-parameter UNet (192 channels, mult 1,2,3,5, one-head
cross-attention transformers at 32, 16, 8) + a ClassEmbedder of 1001 x 512: the 1000 ImageNet classes and,
as label 1000, the unconditional class used for classifier-free guidance. About 400M parameters in all.
Released checkpoint: `models/ldm/cin256-v2/model.ckpt`
from https://ommer-lab.com/files/latent-diffusion/nitro/cin/model.ckpt
(reference YAML: CompVis/latent-diffusion `configs/latent-diffusion/cin256-v2.yaml`).
Task: class-conditional image synthesis.

  ldm-jax sample --config configs/cin256_ldm_vq4.py --checkpoint models/ldm/cin256-v2/model.ckpt \
      --class_label 88 --steps 250 --eta 0.0 --guidance_scale 1.5 --num_samples 16
"""
from ldm_jax import zoo


def get_config():
    return zoo.latent_diffusion(
        zoo.vq_f4(with_loss=False),
        zoo.unet(image_size=64, in_channels=3, out_channels=3, model_channels=192, attention_resolutions=[8, 4, 2],
                 num_res_blocks=2, channel_mult=[1, 2, 3, 5], num_heads=1, use_spatial_transformer=True,
                 transformer_depth=1, context_dim=512),
        zoo.released("models/ldm/cin256-v2/model.ckpt", "configs/latent-diffusion/cin256-v2.yaml",
                     "class-conditional image synthesis, ImageNet 256x256",
                     url="https://ommer-lab.com/files/latent-diffusion/nitro/cin/model.ckpt"),
        cond_stage=zoo.class_embedder(embed_dim=512, n_classes=1001, key="class_label"),
        linear_start=0.0015, linear_end=0.0195, timesteps=1000, first_stage_key="image",
        cond_stage_key="class_label", image_size=64, channels=3, cond_stage_trainable=True,
        conditioning_key="crossattn", cond_stage_source="model", use_ema=False)
