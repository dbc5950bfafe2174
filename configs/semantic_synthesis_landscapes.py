"""LDM-4 semantic synthesis of landscapes (Flickr-Landscapes segmentation maps; Sec. 4.3.2, Tab. 15).

Model: VQ-f4 first stage (z 64x64x3) + a 215M-parameter UNet (128 channels, mult 1,4,8, 8-head attention
in the middle block only: attention_resolutions 32, 16, 8 are never reached with three levels) taking
the latent concatenated with the semantic map, which a SpatialRescaler shrinks 4x (two bilinear
halvings) and maps from 182 one-hot COCO-Stuff classes to 3 channels with a 1x1 convolution.
Runs convolutionally beyond its training size (up to about 1024^2).

Variants (`get_config(arg)`):
  "256" (default)  semantic_synthesis256, trained on 256^2 crops:
                   `models/ldm/semantic_synthesis256/model.ckpt`
                   from https://ommer-lab.com/files/latent-diffusion/semantic_synthesis256.zip
  "512"            semantic_synthesis512, fine-tuned on 512^2 crops (latent 128^2):
                   `models/ldm/semantic_synthesis512/model.ckpt`
                   from https://ommer-lab.com/files/latent-diffusion/semantic_synthesis.zip
Reference YAML: CompVis/latent-diffusion `models/ldm/<variant>/config.yaml`.
Task: semantic image synthesis (segmentation map -> image).

  ldm-jax sample --config configs/semantic_synthesis_landscapes.py:512 \
      --checkpoint models/ldm/semantic_synthesis512/model.ckpt --segmentation map.png --steps 100 --eta 1.0
"""
from ldm_jax import zoo

_VARIANTS = {
    "256": ("semantic_synthesis256", 64, "semantic_synthesis256.zip"),
    "512": ("semantic_synthesis512", 128, "semantic_synthesis.zip"),
}


def get_config(arg: str | None = None):
    if (arg or "256") not in _VARIANTS:
        raise ValueError(f"unknown semantic synthesis variant {arg!r}; expected one of {sorted(_VARIANTS)}")
    folder, latent_size, archive = _VARIANTS[arg or "256"]
    return zoo.latent_diffusion(
        zoo.vq_f4(with_loss=False),
        zoo.unet(image_size=latent_size, in_channels=6, out_channels=3, model_channels=128,
                 attention_resolutions=[32, 16, 8], num_res_blocks=2, channel_mult=[1, 4, 8], num_heads=8),
        zoo.released(f"models/ldm/{folder}/model.ckpt", f"models/ldm/{folder}/config.yaml",
                     "semantic image synthesis, landscapes",
                     url=f"https://ommer-lab.com/files/latent-diffusion/{archive}"),
        cond_stage=zoo.spatial_rescaler(n_stages=2, in_channels=182, out_channels=3),
        linear_start=0.0015, linear_end=0.0205, timesteps=1000, loss_type="l1", first_stage_key="image",
        cond_stage_key="segmentation", image_size=latent_size, channels=3, concat_mode=True,
        cond_stage_trainable=True, conditioning_key="concat", cond_stage_source="model")
