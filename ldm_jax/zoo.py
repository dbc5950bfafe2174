"""Model-zoo building blocks: the released CompVis LDM / Stable Diffusion components as config dicts.

Every component is `{"kind": ..., "params": ...}` where `params` restates the reference
construction params (the `params:` mapping of the original repos' YAML files), so the builders in
`ldm_jax.models` (see `ldm_jax.models.components.build`) read them unchanged. The files under
`configs/` assemble these pieces with `latent_diffusion(...)` / `autoencoder(...)` and add where
the released weights come from.

First stages (CompVis/latent-diffusion `models/first_stage_models/*/config.yaml`):
  kl_f4 / kl_f8 / kl_f16 / kl_f32   KL-regularised, z = 3 / 4 / 16 / 64 channels
  vq_f4 / vq_f4_noattn / vq_f8 / vq_f8_n256 / vq_f16   VQ-regularised (codebook n_embed x embed_dim)
  identity_first_stage   no autoencoder (IdentityFirstStage): pixel-space diffusion, the paper's baseline
Conditioners: clip_vit_l14 (SD v1), open_clip_vit_h14 (SD 2), bert_embedder (LDM text / layout),
class_embedder (ImageNet), spatial_rescaler (semantic maps).
UNets: unet(**params), with sd_v1_unet / sd_v2_unet for the Stable Diffusion ones.
Training runs: `training(config, steps=..., batch_size=..., data=..., ...)` adds a run's sections.
"""
import copy
from typing import Any, Mapping

import ml_collections

Component = dict[str, Any]

# The reference AutoencoderKL training losses (LPIPS + patch discriminator); training-only params.
_KL_LOSS = {"target": "ldm.modules.losses.LPIPSWithDiscriminator",
            "params": {"disc_start": 50001, "kl_weight": 1.0e-06, "disc_weight": 0.5}}
_VQ_LOSS_TARGET = "taming.modules.losses.vqperceptual.VQLPIPSWithDiscriminator"

# The diffusion settings every released LatentDiffusion shares unless its YAML says otherwise
# (CompVis ldm.models.diffusion.ddpm DDPM / LatentDiffusion defaults).
DIFFUSION_DEFAULTS = {
    "timesteps": 1000,
    "beta_schedule": "linear",
    "linear_start": 1e-4,
    "linear_end": 2e-2,
    "cosine_s": 8e-3,
    "v_posterior": 0.0,
    "parameterization": "eps",
    "loss_type": "l2",
    "scale_factor": 1.0,
    "scale_by_std": False,
    "conditioning_key": "none",
    "cond_stage_source": "none",
    "image_size": 256,
    "channels": 3,
    "first_stage_key": "image",
    "cond_stage_key": "image",
    "cond_stage_trainable": False,
    "concat_mode": True,
    "use_ema": True,
}
CONDITIONING_KEYS = ("none", "crossattn", "concat", "hybrid", "adm")
# Where the conditioning fed to the UNet comes from: `model` = the `cond_stage` component;
# `first_stage` = the reference's "__is_first_stage__" (the first stage encodes the condition);
# `identity` = the reference's torch.nn.Identity cond stage (the input is used as is);
# `none` = unconditional ("__is_unconditional__").
COND_STAGE_SOURCES = ("none", "model", "first_stage", "identity")


def _ddconfig(ch_mult, z_channels, double_z, attn_resolutions=(), resolution=256, **extra) -> dict:
    ddconfig = {"double_z": double_z, "z_channels": z_channels, "resolution": resolution, "in_channels": 3,
                "out_ch": 3, "ch": 128, "ch_mult": list(ch_mult), "num_res_blocks": 2,
                "attn_resolutions": list(attn_resolutions), "dropout": 0.0}
    ddconfig.update(extra)
    return ddconfig


def _kl(embed_dim: int, ch_mult, attn_resolutions=(), resolution=256, with_loss=True) -> Component:
    params = {"embed_dim": embed_dim,
              "ddconfig": _ddconfig(ch_mult, embed_dim, True, attn_resolutions, resolution)}
    if with_loss:
        params["lossconfig"] = copy.deepcopy(_KL_LOSS)  # callers edit their config in place
    return {"kind": "autoencoder_kl", "params": params}


def _vq(embed_dim: int, n_embed: int, ch_mult, attn_resolutions=(), loss=None, **ddextra) -> Component:
    params = {"embed_dim": embed_dim, "n_embed": n_embed,
              "ddconfig": _ddconfig(ch_mult, embed_dim, False, attn_resolutions, **ddextra)}
    if loss is not None:
        params["lossconfig"] = {"target": _VQ_LOSS_TARGET,
                                "params": {"disc_conditional": False, "disc_in_channels": 3, "codebook_weight": 1.0,
                                           **loss}}
    return {"kind": "vq", "params": params}


def kl_f4(with_loss: bool = True) -> Component:
    """KL-f4 (z 64x64x3 at 256^2); `with_loss=False` drops the training-only lossconfig."""
    return _kl(3, (1, 2, 4), with_loss=with_loss)


def kl_f8(resolution: int = 256, with_loss: bool = True) -> Component:
    """KL-f8 (z 32x32x4 at 256^2), the Stable Diffusion VAE: 83,653,863 parameters."""
    return _kl(4, (1, 2, 4, 4), resolution=resolution, with_loss=with_loss)


def kl_f16(with_loss: bool = True) -> Component:
    """KL-f16, d=16, attention at 16^2."""
    return _kl(16, (1, 1, 2, 2, 4), attn_resolutions=(16,), with_loss=with_loss)


def kl_f32(with_loss: bool = True) -> Component:
    """KL-f32, d=64, attention at 16^2 and 8^2."""
    return _kl(64, (1, 1, 2, 2, 4, 4), attn_resolutions=(16, 8), with_loss=with_loss)


def vq_f4(with_loss: bool = True) -> Component:
    """VQ-f4, Z=8192, d=3: the first stage of the LDM-4 models (no attention below the middle block)."""
    return _vq(3, 8192, (1, 2, 4), loss={"disc_start": 0, "disc_weight": 0.75} if with_loss else None)


def vq_f4_noattn(with_loss: bool = True) -> Component:
    """VQ-f4 without any attention block (attn_type none), the first stage of the big inpainting LDM."""
    return _vq(3, 8192, (1, 2, 4), loss={"disc_start": 11, "disc_weight": 0.75} if with_loss else None,
               attn_type="none")


def vq_f8(with_loss: bool = True) -> Component:
    """VQ-f8, Z=16384, d=4, attention at 32^2."""
    loss = {"disc_num_layers": 2, "disc_start": 1, "disc_weight": 0.6} if with_loss else None
    return _vq(4, 16384, (1, 2, 2, 4), attn_resolutions=(32,), loss=loss)


def vq_f8_n256(with_loss: bool = True) -> Component:
    """VQ-f8 with a 256-entry codebook."""
    loss = {"disc_start": 250001, "disc_weight": 0.75} if with_loss else None
    return _vq(4, 256, (1, 2, 2, 4), attn_resolutions=(32,), loss=loss)


def vq_f16(with_loss: bool = True) -> Component:
    """VQ-f16, Z=16384, d=8, attention at 16^2."""
    loss = {"disc_start": 250001, "disc_weight": 0.75, "disc_num_layers": 2} if with_loss else None
    return _vq(8, 16384, (1, 1, 2, 2, 4), attn_resolutions=(16,), loss=loss)


def identity_first_stage() -> Component:
    """IdentityFirstStage: encode / decode are the identity, so the UNet diffuses pixels (f = 1). The
    UNet's in / out channels and `diffusion.image_size` are then the image's."""
    return {"kind": "identity", "params": {}}


def clip_vit_l14() -> Component:
    """SD v1's FrozenCLIPEmbedder: the text tower of openai/clip-vit-large-patch14 (123,060,480 params).

    The params are a transformers CLIPTextConfig; the token ids are those of the CLIP BPE tokenizer
    (<|startoftext|> 49406, <|endoftext|> 49407, padding with <|endoftext|>).
    """
    return {"kind": "clip_text", "params": {
        "_name_or_path": "openai/clip-vit-large-patch14", "model_type": "clip_text_model",
        "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12,
        "max_position_embeddings": 77, "vocab_size": 49408, "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5,
        "bos_token_id": 49406, "eos_token_id": 49407, "pad_token_id": 49407}}


def open_clip_vit_h14() -> Component:
    """SD 2's FrozenOpenCLIPEmbedder: the OpenCLIP ViT-H-14 text tower, penultimate layer's output."""
    return {"kind": "open_clip_text", "params": {
        "arch": "ViT-H-14", "layer": "penultimate", "width": 1024, "layers": 24, "heads": 16,
        "context_length": 77, "vocab_size": 49408, "embed_dim": 1024}}


def bert_embedder(n_embed: int, n_layer: int, vocab_size: int = 30522, max_seq_len: int = 77,
                  use_tokenizer: bool = True) -> Component:
    """The LDM BERTEmbedder: an x-transformers encoder (8 heads x 64) over BERT-tokenised text or codes."""
    return {"kind": "bert_embedder", "params": {"n_embed": n_embed, "n_layer": n_layer, "vocab_size": vocab_size,
                                                "max_seq_len": max_seq_len, "use_tokenizer": use_tokenizer}}


def class_embedder(embed_dim: int = 512, n_classes: int = 1000, key: str = "class_label") -> Component:
    """ClassEmbedder: one learned `embed_dim` token per class label (cross-attention context of length 1)."""
    return {"kind": "class_embedder", "params": {"embed_dim": embed_dim, "n_classes": n_classes, "key": key}}


def spatial_rescaler(n_stages: int, in_channels: int, out_channels: int | None = None, method: str = "bilinear",
                     multiplier: float = 0.5, bias: bool = False) -> Component:
    """SpatialRescaler: `n_stages` resizes by `multiplier`, then an optional 1x1 channel map."""
    params = {"n_stages": n_stages, "method": method, "multiplier": multiplier, "in_channels": in_channels,
              "bias": bias}
    if out_channels is not None:
        params["out_channels"] = out_channels
    return {"kind": "spatial_rescaler", "params": params}


def unet(**params) -> Component:
    """A UNetModel component from the reference `unet_config.params` (lists, not tuples, as in YAML)."""
    return {"kind": "unet", "params": {k: list(v) if isinstance(v, tuple) else v for k, v in params.items()}}


def sd_v1_unet(in_channels: int = 4) -> Component:
    """The SD v1 UNet (859,520,964 params at in_channels 4): 320 channels, 8 heads, CLIP-L context 768."""
    return unet(image_size=32, in_channels=in_channels, out_channels=4, model_channels=320,
                attention_resolutions=[4, 2, 1], num_res_blocks=2, channel_mult=[1, 2, 4, 4], num_heads=8,
                use_spatial_transformer=True, transformer_depth=1, context_dim=768, use_checkpoint=True,
                legacy=False)


def sd_v2_unet(in_channels: int = 4, use_fp16: bool | None = True) -> Component:
    """The SD 2 UNet (865,910,724 params at in_channels 4): 64-channel heads, linear projections,
    OpenCLIP-H context 1024. `use_fp16=None` leaves the key out, as v2-inpainting-inference.yaml does."""
    params = {"use_checkpoint": True, "use_fp16": use_fp16, "image_size": 32, "in_channels": in_channels,
              "out_channels": 4, "model_channels": 320, "attention_resolutions": [4, 2, 1], "num_res_blocks": 2,
              "channel_mult": [1, 2, 4, 4], "num_head_channels": 64, "use_spatial_transformer": True,
              "use_linear_in_transformer": True, "transformer_depth": 1, "context_dim": 1024, "legacy": False}
    if use_fp16 is None:
        del params["use_fp16"]
    return unet(**params)


def diffusion(**overrides) -> dict:
    """The LatentDiffusion settings: the reference defaults, then the YAML's own values."""
    unknown = set(overrides) - set(DIFFUSION_DEFAULTS)
    if unknown:
        raise ValueError(f"unknown diffusion settings {sorted(unknown)}; "
                         f"expected some of {sorted(DIFFUSION_DEFAULTS)}")
    settings = {**DIFFUSION_DEFAULTS, **overrides}
    if settings["conditioning_key"] not in CONDITIONING_KEYS:
        raise ValueError(f"diffusion.conditioning_key must be one of {CONDITIONING_KEYS}, "
                         f"got {settings['conditioning_key']!r}")
    if settings["cond_stage_source"] not in COND_STAGE_SOURCES:
        raise ValueError(f"diffusion.cond_stage_source must be one of {COND_STAGE_SOURCES}, "
                         f"got {settings['cond_stage_source']!r}")
    return settings


def released(checkpoint: str, yaml: str, task: str, repo: str = "CompVis/latent-diffusion",
             url: str | None = None) -> dict:
    """Where the released weights and their reference YAML live. `checkpoint` is the file name
    (an `hf://org/repo/file` reference where the Hugging Face Hub hosts it); `url` its download link."""
    info = {"checkpoint": checkpoint, "yaml": yaml, "repo": repo, "task": task}
    if url is not None:
        info["url"] = url
    return info


def autoencoder(first_stage: Component, release: Mapping) -> ml_collections.ConfigDict:
    """A first-stage-only config: `model.first_stage` and `released`."""
    config = ml_collections.ConfigDict()
    config.model = ml_collections.ConfigDict()
    config.model.first_stage = first_stage
    config.released = dict(release)
    return config


def latent_diffusion(first_stage: Component, unet_component: Component, release: Mapping,
                     cond_stage: Component | None = None, **diffusion_settings) -> ml_collections.ConfigDict:
    """A LatentDiffusion config: first stage, UNet, optional cond stage, diffusion settings, release.

    `diffusion_settings` override the reference defaults (see `diffusion`); cond_stage_source defaults
    to "model" when a cond stage is given and to "none" otherwise.
    """
    has_model = cond_stage is not None
    diffusion_settings.setdefault("cond_stage_source", "model" if has_model else "none")
    settings = diffusion(**diffusion_settings)
    if has_model != (settings["cond_stage_source"] == "model"):
        given = f"a {cond_stage['kind']} cond_stage" if has_model else "no cond_stage"
        raise ValueError("diffusion.cond_stage_source must be 'model' exactly when a cond_stage component is given, "
                         f"got {settings['cond_stage_source']!r} with {given}")
    config = autoencoder(first_stage, release)
    config.model.unet = unet_component
    if has_model:
        config.model.cond_stage = cond_stage
    config.model.diffusion = settings
    return config


def unconditional_ldm_vq4(release: Mapping) -> ml_collections.ConfigDict:
    """The unconditional LDM-VQ-4 of CelebA-HQ, FFHQ and LSUN-Bedrooms (274M-parameter UNet, Tab. 12)."""
    return latent_diffusion(
        vq_f4(with_loss=False),
        unet(image_size=64, in_channels=3, out_channels=3, model_channels=224, attention_resolutions=[8, 4, 2],
             num_res_blocks=2, channel_mult=[1, 2, 3, 4], num_head_channels=32),
        release, linear_start=0.0015, linear_end=0.0195, timesteps=1000, first_stage_key="image",
        cond_stage_key="class_label", image_size=64, channels=3, cond_stage_trainable=False, concat_mode=False)


def stable_diffusion(unet_component: Component, cond_stage: Component, release: Mapping,
                     first_stage_resolution: int = 256, **overrides) -> ml_collections.ConfigDict:
    """A Stable Diffusion config (v1-inference.yaml / v2-inference*.yaml settings, then `overrides`)."""
    settings = {"linear_start": 0.00085, "linear_end": 0.012, "timesteps": 1000, "first_stage_key": "jpg",
                "cond_stage_key": "txt", "image_size": 64, "channels": 4, "cond_stage_trainable": False,
                "conditioning_key": "crossattn", "cond_stage_source": "model", "scale_factor": 0.18215,
                "use_ema": False, **overrides}
    return latent_diffusion(kl_f8(resolution=first_stage_resolution, with_loss=False), unet_component, release,
                            cond_stage, **settings)


def training(config: ml_collections.ConfigDict, *, steps: int, batch_size: int, data: Mapping,
             base_learning_rate: float | None = None, learning_rate: float | None = None,
             schedule: Mapping | None = None, accumulate: int = 1, cond_drop_prob: float = 0.0,
             pretrained: Mapping | None = None, checkpoint_every: int = 5000, seed: int = 0,
             train: Mapping | None = None) -> ml_collections.ConfigDict:
    """`config` (a zoo config) plus the sections of a training run; the model sections stay as they are.

    Exactly one learning rate: `base_learning_rate` is scaled by batch_size * accumulate (the reference
    `main.py` with scale_lr, the default there); `learning_rate` is used as is (`--scale_lr False`).
    `schedule` is an `optimizer.schedule` section, e.g. the reference LambdaLinearScheduler
    `{"kind": "lambda_linear", "warm_up_steps": [10000], "f_start": [1e-6]}`. `cond_drop_prob` and
    `pretrained` (first_stage / cond_stage / model checkpoints) are stage-2 fields; `train` adds
    other `train.*` fields. Every other field keeps the default of `ldm_jax.training.experiment`; a
    checkpoint every 5000 steps is ldm-jax's choice (the reference saves once per epoch).
    """
    if (base_learning_rate is None) == (learning_rate is None):
        raise ValueError("give exactly one of base_learning_rate (scaled by batch size * accumulate) and "
                         "learning_rate (used as is)")
    is_ldm = "unet" in config.model
    if not is_ldm and (cond_drop_prob or pretrained):
        raise ValueError("cond_drop_prob and pretrained are latent diffusion (stage 2) settings; "
                         "this config has no model.unet")
    optimizer = {"accumulate_grad_batches": accumulate}
    if learning_rate is not None:
        optimizer.update(learning_rate=learning_rate, scale_lr=False)
    else:
        optimizer.update(base_learning_rate=base_learning_rate, scale_lr=True)
    if schedule is not None:
        optimizer["schedule"] = dict(schedule)
    config.seed = seed
    config.train = {"num_steps": steps, "global_batch_size": batch_size, **(train or {})}
    if is_ldm:
        config.train.cond_drop_prob = cond_drop_prob
        config.pretrained = dict(pretrained or {})
    config.optimizer = optimizer
    config.checkpoint = {"every_steps": checkpoint_every}
    config.data = dict(data)
    return config


def tiny_training(config: ml_collections.ConfigDict, *, learning_rate: float = 2.0e-4, cond_drop_prob: float = 0.0,
                  image_size: int = 16, **data) -> ml_collections.ConfigDict:
    """Two steps on 64 records of the built-in dataset: the CPU variants (`:tiny`) the tests train.
    `data` adds `config.data` fields (a task and its options)."""
    return training(config, steps=2, batch_size=8, learning_rate=learning_rate, cond_drop_prob=cond_drop_prob,
                    checkpoint_every=2, data={"name": "builtin", "num_records": 64, "image_size": image_size, **data},
                    train={"log_every_steps": 1, "image_every_steps": 0})
