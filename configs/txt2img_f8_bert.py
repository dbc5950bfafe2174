"""LDM-KL-8-G: the 1.45B-parameter text-to-image LDM trained on LAION-400M (MS-COCO FID 12.63 / IS 30.3
with 250 DDIM steps and classifier-free guidance scale 1.5; Tab. 2, 15, 17).

Model: KL-f8 first stage (z 32x32x4) + an 872M-parameter UNet (320 channels, mult 1,2,4,4, 8-head
cross-attention transformers at 32, 16, 8, context 1280) + a BERTEmbedder: BERT tokenizer
(bert-base-uncased, 77 tokens) and a 32-layer, 1280-wide x-transformers encoder. UNet and encoder
(including its unused to_logits head) make the 1.45B.
Released checkpoint: `models/ldm/text2img-large/model.ckpt`
from https://ommer-lab.com/files/latent-diffusion/nitro/txt2img-f8-large/model.ckpt
(reference YAML: CompVis/latent-diffusion `configs/latent-diffusion/txt2img-1p4B-eval.yaml`).
Task: text-to-image synthesis.

  ldm-jax sample --config configs/txt2img_f8_bert.py --checkpoint models/ldm/text2img-large/model.ckpt \
      --prompt "a virus monster is playing guitar, oil on canvas" --steps 50 --eta 0.0 --guidance_scale 5.0
"""
from ldm_jax import zoo


def get_config():
    return zoo.latent_diffusion(
        zoo.kl_f8(with_loss=False),
        zoo.unet(image_size=32, in_channels=4, out_channels=4, model_channels=320, attention_resolutions=[4, 2, 1],
                 num_res_blocks=2, channel_mult=[1, 2, 4, 4], num_heads=8, use_spatial_transformer=True,
                 transformer_depth=1, context_dim=1280, use_checkpoint=True, legacy=False),
        zoo.released("models/ldm/text2img-large/model.ckpt", "configs/latent-diffusion/txt2img-1p4B-eval.yaml",
                     "text-to-image synthesis, 256x256",
                     url="https://ommer-lab.com/files/latent-diffusion/nitro/txt2img-f8-large/model.ckpt"),
        cond_stage=zoo.bert_embedder(n_embed=1280, n_layer=32),
        linear_start=0.00085, linear_end=0.012, timesteps=1000, first_stage_key="image", cond_stage_key="caption",
        image_size=32, channels=4, cond_stage_trainable=True, conditioning_key="crossattn",
        cond_stage_source="model", scale_factor=0.18215, use_ema=False)
