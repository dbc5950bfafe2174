"""LDM-4 (cin256-v2): class-conditional ImageNet 256^2 (FID 3.60 / IS 247.7 with 250 DDIM steps and
classifier-free guidance scale 1.5; Tab. 3, 10, 13).

Model: VQ-f4 first stage (z 64x64x3) + a 395M-parameter UNet (192 channels, mult 1,2,3,5, one-head
cross-attention transformers at 32, 16, 8) + a ClassEmbedder of 1001 x 512: the 1000 ImageNet classes and,
as label 1000, the unconditional class used for classifier-free guidance. About 400M parameters in all.
Released checkpoint: `models/ldm/cin256-v2/model.ckpt`
from https://ommer-lab.com/files/latent-diffusion/nitro/cin/model.ckpt
(reference YAML: CompVis/latent-diffusion `configs/latent-diffusion/cin256-v2.yaml`).
Task: class-conditional image synthesis.

Variants (`get_config(arg)`):
  "" (default)  the released model's training run (Tab. 10, 15): imagenet2012 prepared as a TFDS ArrayRecord
                dataset, labels dropped to the null class 1000 for guidance, the frozen vq-f4 first stage
  "tiny"        width 32, 16x16 images of the built-in dataset (its 12 classes + the null class 12),
                random first stage, 2 steps: the test variant

  ldm-jax train --config configs/cin256_ldm_vq4.py --workdir /ckpt/cin256 --config.data.data_dir=/data/tfds \
      --config.pretrained.first_stage=models/first_stage_models/vq-f4/model.ckpt
  ldm-jax train --config configs/cin256_ldm_vq4.py:tiny --workdir /tmp/cin256_tiny
  ldm-jax sample --config configs/cin256_ldm_vq4.py --checkpoint models/ldm/cin256-v2/model.ckpt \
      --class_label 88 --steps 250 --eta 0.0 --guidance_scale 1.5 --num_samples 16
"""
from ldm_jax import zoo
from ldm_jax.data.synthetic import SyntheticShapes

IMAGENET = {"name": "tfds", "tfds_name": "imagenet2012", "data_dir": "", "image_size": 256, "random_crop": True}


def _model(release):
    return zoo.latent_diffusion(
        zoo.vq_f4(with_loss=False),
        zoo.unet(image_size=64, in_channels=3, out_channels=3, model_channels=192, attention_resolutions=[8, 4, 2],
                 num_res_blocks=2, channel_mult=[1, 2, 3, 5], num_heads=1, use_spatial_transformer=True,
                 transformer_depth=1, context_dim=512),
        release,
        cond_stage=zoo.class_embedder(embed_dim=512, n_classes=1001, key="class_label"),
        linear_start=0.0015, linear_end=0.0195, timesteps=1000, first_stage_key="image",
        cond_stage_key="class_label", image_size=64, channels=3, cond_stage_trainable=True,
        conditioning_key="crossattn", cond_stage_source="model", use_ema=False)


def _tiny():
    config = _model(zoo.released("", "", "tiny class-conditional LDM for tests", repo="ldm-jax"))
    model = config.model
    model.first_stage.params.ddconfig.update(ch=32, ch_mult=[1, 1, 2], num_res_blocks=1, resolution=16)
    model.unet.params.update(image_size=4, model_channels=32, attention_resolutions=[2], num_res_blocks=1,
                             channel_mult=[1, 2], context_dim=32)
    # The built-in dataset's classes plus, as the last label, the null class of guidance.
    model.cond_stage.params.update(embed_dim=32, n_classes=len(SyntheticShapes(1).classes) + 1)
    model.diffusion.image_size = 4
    return zoo.tiny_training(config, cond_drop_prob=0.1)


def get_config(arg: str | None = None):
    if arg == "tiny":
        return _tiny()
    if arg:
        raise ValueError(f"unknown cin256_ldm_vq4 variant {arg!r}; expected '' or 'tiny'")
    config = _model(zoo.released("models/ldm/cin256-v2/model.ckpt", "configs/latent-diffusion/cin256-v2.yaml",
                                 "class-conditional image synthesis, ImageNet 256x256",
                                 url="https://ommer-lab.com/files/latent-diffusion/nitro/cin/model.ckpt"))
    # Tab. 10 / 15: batch 1200, 178k iterations, lr 1.0e-4, the YAML's base_learning_rate used as is (scaled
    # by 1200 it would be 0.12). The YAML has no scheduler_config: a constant rate (a 10k-step warm-up as
    # LSUN-Churches': --config.optimizer.schedule.kind=lambda_linear). The label dropout rate is published
    # nowhere (only the null class 1000 and guidance): 0.1, among the best of Ho & Salimans' ImageNet runs.
    # The reference ImageNetTrain: smaller side to 256, random crop, no flip.
    return zoo.training(config, steps=178_000, batch_size=1200, learning_rate=1.0e-4, cond_drop_prob=0.1,
                        data=IMAGENET, pretrained={"first_stage": "models/first_stage_models/vq-f4/model.ckpt"})
