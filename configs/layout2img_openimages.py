"""LDM-4 layout-to-image on OpenImages 256^2 (FID 32.02 with 200 DDIM steps, eta 0; Tab. 9, 15, 17).

Model: VQ-f4 first stage (z 64x64x3) + a 306M-parameter UNet (128 channels, mult 1,2,3,4, depth-3
cross-attention transformers with 32-channel heads at 32, 16, 8, context 512) + a BERTEmbedder over
layout tokens (no tokenizer: each box is a (top-left, bottom-right, class) triple of codes from a
vocabulary of 8192, 92 tokens; 16-layer, 512-wide x-transformers encoder).
Released checkpoint: `models/ldm/layout2img-openimages256/model.ckpt`
from https://ommer-lab.com/files/latent-diffusion/layout2img_model.zip
(reference YAML: CompVis/latent-diffusion `models/ldm/layout2img-openimages256/config.yaml`).
Task: layout-to-image synthesis (bounding boxes).

Training (Tab. 15): a TFDS ArrayRecord dataset of OpenImages images whose records carry their "boxes"
(written with `ldm_jax.data.arrayrecord.write_dataset`, named by data.tfds_name, default
"openimages_layouts"), the frozen vq-f4 first stage.

  ldm-jax train --config configs/layout2img_openimages.py --workdir /ckpt/layout2img --config.data.data_dir=/data/tfds \
      --config.pretrained.first_stage=models/first_stage_models/vq-f4/model.ckpt
  ldm-jax sample --config configs/layout2img_openimages.py \
      --checkpoint models/ldm/layout2img-openimages256/model.ckpt --layout boxes.json --steps 200 --eta 0.0
"""
from ldm_jax import zoo


def get_config():
    config = zoo.latent_diffusion(
        zoo.vq_f4(with_loss=False),
        zoo.unet(image_size=64, in_channels=3, out_channels=3, model_channels=128, attention_resolutions=[8, 4, 2],
                 num_res_blocks=2, channel_mult=[1, 2, 3, 4], num_head_channels=32, use_spatial_transformer=True,
                 transformer_depth=3, context_dim=512),
        zoo.released("models/ldm/layout2img-openimages256/model.ckpt",
                     "models/ldm/layout2img-openimages256/config.yaml",
                     "layout-to-image synthesis, OpenImages 256x256",
                     url="https://ommer-lab.com/files/latent-diffusion/layout2img_model.zip"),
        cond_stage=zoo.bert_embedder(n_embed=512, n_layer=16, vocab_size=8192, max_seq_len=92, use_tokenizer=False),
        linear_start=0.0015, linear_end=0.0205, timesteps=1000, loss_type="l1", first_stage_key="image",
        cond_stage_key="coordinates_bbox", image_size=64, channels=3, cond_stage_trainable=True,
        conditioning_key="crossattn", cond_stage_source="model")
    # Tab. 15 (layout-to-image, OpenImages): batch 24, 4.4M iterations, lr 4.8e-5 = the YAML's
    # base_learning_rate 2e-6 x 24. The layouts are not dropped (sampled without guidance, Tab. 9).
    return zoo.training(
        config, steps=4_400_000, batch_size=24, base_learning_rate=2.0e-6,
        data={"name": "tfds", "tfds_name": "openimages_layouts", "data_dir": "", "image_size": 256,
              "task": "layout"},
        pretrained={"first_stage": "models/first_stage_models/vq-f4/model.ckpt"})
