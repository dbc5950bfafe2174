"""LDM-VQ-4 text-to-image on Conceptual Captions, fine-tuned from the LAION model (FID 16.79 / IS 13.89
with 100 DDIM steps, eta 0; CompVis/latent-diffusion model zoo).

Model: VQ-f4 first stage (z 64x64x3) + a UNet of 192 channels, mult 1,2,3,5, cross-attention transformers
with 32-channel heads at latent resolutions 32, 16, 8, context 640 + a
BERTEmbedder (bert-base-uncased tokenizer, 32-layer, 640-wide x-transformers encoder).
Released checkpoint: `models/ldm/text2img256/model.ckpt` from https://ommer-lab.com/files/latent-diffusion/text2img.zip
(reference YAML: CompVis/latent-diffusion `models/ldm/text2img256/config.yaml`).
Task: text-to-image synthesis.

Training: Conceptual Captions as webdataset tar shards (image + .txt caption), BERT-tokenised captions,
the frozen vq-f4 first stage; data.tokenizer: the folder of bert-base-uncased's vocab.txt.

  ldm-jax train --config configs/txt2img_cc_vq4.py --workdir /ckpt/txt2img_cc \
      --config.data.shards='/data/cc3m/{00000..00331}.tar' --config.data.tokenizer=/models/bert-base-uncased \
      --config.pretrained.first_stage=models/first_stage_models/vq-f4/model.ckpt
  ldm-jax sample --config configs/txt2img_cc_vq4.py --checkpoint models/ldm/text2img256/model.ckpt \
      --prompt "a painting of a lighthouse at dusk" --steps 100 --eta 0.0
"""
from ldm_jax import zoo


def get_config():
    config = zoo.latent_diffusion(
        zoo.vq_f4(with_loss=False),
        zoo.unet(image_size=64, in_channels=3, out_channels=3, model_channels=192, attention_resolutions=[8, 4, 2],
                 num_res_blocks=2, channel_mult=[1, 2, 3, 5], num_head_channels=32, use_spatial_transformer=True,
                 transformer_depth=1, context_dim=640),
        zoo.released("models/ldm/text2img256/model.ckpt", "models/ldm/text2img256/config.yaml",
                     "text-to-image synthesis, 256x256 (Conceptual Captions)",
                     url="https://ommer-lab.com/files/latent-diffusion/text2img.zip"),
        cond_stage=zoo.bert_embedder(n_embed=640, n_layer=32),
        linear_start=0.0015, linear_end=0.0195, timesteps=1000, first_stage_key="image", cond_stage_key="caption",
        image_size=64, channels=3, cond_stage_trainable=True, conditioning_key="crossattn",
        cond_stage_source="model")
    # The YAML: base_learning_rate 2e-6, batch_size 28 (lr 5.6e-5). The paper does not list this model;
    # its length is published nowhere: 500k steps is ldm-jax's choice. Its FID is reported without
    # guidance, so captions are not dropped.
    return zoo.training(
        config, steps=500_000, batch_size=28, base_learning_rate=2.0e-6,
        data={"name": "tar", "shards": "", "image_size": 256, "task": "caption", "tokenizer_kind": "bert",
              "tokenizer": "", "max_length": 77},
        pretrained={"first_stage": "models/first_stage_models/vq-f4/model.ckpt"})
