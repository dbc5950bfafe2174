"""LDM-VQ-8: class-conditional ImageNet 256^2, the first released ImageNet LDM (FID 7.77 with
classifier guidance scale 10, 15.82 without; 200 DDIM steps, eta 1; Tab. 10, 13).

Model: VQ-f8 first stage (z 32x32x4) + a 395M-parameter UNet (256 channels, mult 1,2,4, cross-attention
transformers with 32-channel heads at 32, 16, 8) + a ClassEmbedder of 1000 x 512.
Released checkpoint: `models/ldm/cin256/model.ckpt` from https://ommer-lab.com/files/latent-diffusion/cin.zip
(reference YAML: CompVis/latent-diffusion `models/ldm/cin256/config.yaml`).
Task: class-conditional image synthesis.

Training (Tab. 10, 13): imagenet2012 prepared as a TFDS ArrayRecord dataset, the frozen vq-f8 first stage.

  ldm-jax train --config configs/cin256_ldm_vq8.py --workdir /ckpt/cin256_vq8 --config.data.data_dir=/data/tfds \
      --config.pretrained.first_stage=models/first_stage_models/vq-f8/model.ckpt
  ldm-jax sample --config configs/cin256_ldm_vq8.py --checkpoint models/ldm/cin256/model.ckpt \
      --class_label 88 --steps 200 --eta 1.0 --num_samples 16
"""
from ldm_jax import zoo


def get_config():
    config = zoo.latent_diffusion(
        zoo.vq_f8(with_loss=False),
        zoo.unet(image_size=32, in_channels=4, out_channels=4, model_channels=256, attention_resolutions=[4, 2, 1],
                 num_res_blocks=2, channel_mult=[1, 2, 4], num_head_channels=32, use_spatial_transformer=True,
                 transformer_depth=1, context_dim=512),
        zoo.released("models/ldm/cin256/model.ckpt", "models/ldm/cin256/config.yaml",
                     "class-conditional image synthesis, ImageNet 256x256",
                     url="https://ommer-lab.com/files/latent-diffusion/cin.zip"),
        cond_stage=zoo.class_embedder(embed_dim=512, n_classes=1000, key="class_label"),
        linear_start=0.0015, linear_end=0.0195, timesteps=1000, first_stage_key="image",
        cond_stage_key="class_label", image_size=32, channels=4, cond_stage_trainable=True,
        conditioning_key="crossattn", cond_stage_source="model")
    # Tab. 13 (LDM-8) and the YAML: batch 64, lr 6.4e-5 = base_learning_rate 1e-6 x 64; 2.9M iterations for
    # the released model (Tab. 10, 18; the analysis of Tab. 13 ran 2M).
    # No null class: this model was guided by a classifier, not trained with label dropout.
    # The reference ImageNetTrain: smaller side to 256, random crop, no flip.
    return zoo.training(
        config, steps=2_900_000, batch_size=64, base_learning_rate=1.0e-6,
        data={"name": "tfds", "tfds_name": "imagenet2012", "data_dir": "", "image_size": 256, "random_crop": True},
        pretrained={"first_stage": "models/first_stage_models/vq-f8/model.ckpt"})
