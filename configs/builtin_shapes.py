"""Both stages on the built-in dataset (coloured shapes, no download): the config a fresh machine
trains first, and, with `:tiny`, the one the tests run.

Variants:
  autoencoder        KL-f4 (ch 64, z 8x8x3 at 32^2) with L1 + KL + PatchGAN (no LPIPS: its VGG weights
                     must be supplied by the user), on 32x32 shapes
  ldm                a class-conditional LDM (UNet 64 channels, cross-attention to a ClassEmbedder of the
                     12 classes plus the null class), classifier-free guidance dropout 0.1, on the
                     latents of the autoencoder above (`pretrained.first_stage`)
  autoencoder_tiny, ldm_tiny   the same at width 32 / 16x16, for tests

  ldm-jax train --config configs/builtin_shapes.py:autoencoder --workdir /tmp/shapes_ae
  ldm-jax train --config configs/builtin_shapes.py:ldm --workdir /tmp/shapes_ldm \
      --config.pretrained.first_stage=/tmp/shapes_ae/first_stage.safetensors
"""
import ml_collections

from ldm_jax import zoo
from ldm_jax.data.synthetic import SyntheticShapes

NUM_CLASSES = len(SyntheticShapes(1).classes)  # the null class (for guidance) is label NUM_CLASSES


def _autoencoder(channels: int, image_size: int) -> dict:
    component = zoo.kl_f4(with_loss=True)
    ddconfig = component["params"]["ddconfig"]
    ddconfig.update(ch=channels, ch_mult=[1, 1, 2], num_res_blocks=1, resolution=image_size)
    component["params"]["lossconfig"] = {
        "target": "ldm.modules.losses.LPIPSWithDiscriminator",
        "params": {"disc_start": 500, "kl_weight": 1.0e-6, "disc_weight": 0.5, "perceptual_weight": 0.0,
                   "disc_num_layers": 2}}
    return component


def _training(config, image_size: int, steps: int, batch_size: int) -> ml_collections.ConfigDict:
    config.seed = 0
    config.train = {"num_steps": steps, "global_batch_size": batch_size, "log_every_steps": 25,
                    "image_every_steps": steps}
    config.checkpoint = {"every_steps": max(steps // 2, 1), "keep": 2}
    config.data = {"name": "builtin", "num_records": 4096, "image_size": image_size, "flip": False}
    return config


def autoencoder(channels: int = 64, image_size: int = 32, steps: int = 1500, batch_size: int = 16):
    config = zoo.autoencoder(_autoencoder(channels, image_size),
                             zoo.released("", "", "autoencoder of the built-in shapes dataset", repo="ldm-jax"))
    config = _training(config, image_size, steps, batch_size)
    config.optimizer = {"learning_rate": 4.0e-4}
    return config


def ldm(channels: int = 64, image_size: int = 32, steps: int = 3000, batch_size: int = 32):
    first_stage = _autoencoder(channels, image_size)
    del first_stage["params"]["lossconfig"]
    config = zoo.latent_diffusion(
        first_stage,
        zoo.unet(image_size=image_size // 4, in_channels=3, out_channels=3, model_channels=channels,
                 attention_resolutions=[1, 2], num_res_blocks=1, channel_mult=[1, 2], num_heads=4,
                 use_spatial_transformer=True, transformer_depth=1, context_dim=channels),
        zoo.released("", "", "class-conditional synthesis of the built-in shapes dataset", repo="ldm-jax"),
        cond_stage=zoo.class_embedder(embed_dim=channels, n_classes=NUM_CLASSES + 1, key="class_label"),
        linear_start=0.0015, linear_end=0.0195, timesteps=1000, first_stage_key="image",
        cond_stage_key="class_label", image_size=image_size // 4, channels=3, cond_stage_trainable=True,
        conditioning_key="crossattn", scale_by_std=True, use_ema=True)
    config = _training(config, image_size, steps, batch_size)
    config.train.cond_drop_prob = 0.1
    config.optimizer = {"learning_rate": 2.0e-4}
    config.ema = {"decay": 0.999}
    return config


def get_config(variant: str = "autoencoder") -> ml_collections.ConfigDict:
    variants = {
        "autoencoder": autoencoder,
        "ldm": ldm,
        "autoencoder_tiny": lambda: autoencoder(channels=32, image_size=16, steps=4, batch_size=8),
        "ldm_tiny": lambda: ldm(channels=32, image_size=16, steps=4, batch_size=8),
    }
    if variant not in variants:
        raise ValueError(f"unknown variant {variant!r} of builtin_shapes; expected one of {sorted(variants)}")
    return variants[variant]()
