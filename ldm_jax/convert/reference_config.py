"""The reference YAML configs (`model.target` / `model.params`) read into our ml_collections configs.

A component keeps the reference construction params unchanged, under the kind of module that
builds it: `config.model.unet = {"kind": "unet", "params": unet_config.params}`. The diffusion
settings of `LatentDiffusion` go to `config.model.diffusion`.
"""
import json
import os
import pathlib
import warnings
from typing import Any, Mapping

import ml_collections
import yaml

from ldm_jax import zoo
from ldm_jax.config_checks import to_plain_dict

# Reference classes by name (the module path differs between the CompVis / Stability repos).
KIND_OF_CLASS = {
    "AutoencoderKL": "autoencoder_kl",
    "VQModel": "vq",
    "VQModelInterface": "vq",
    "IdentityFirstStage": "identity",
    "UNetModel": "unet",
    "BERTEmbedder": "bert_embedder",
    "TransformerEmbedder": "bert_embedder",
    "FrozenCLIPEmbedder": "clip_text",
    "FrozenOpenCLIPEmbedder": "open_clip_text",
    "ClassEmbedder": "class_embedder",
    "SpatialRescaler": "spatial_rescaler",
}
_COMPONENT_CONFIGS = {"first_stage_config": "first_stage", "unet_config": "unet",
                      "cond_stage_config": "cond_stage"}
_LATENT_DIFFUSION_CLASSES = ("LatentDiffusion", "LatentInpaintDiffusion", "LatentFinetuneDiffusion")
_COND_STAGE_SOURCES = {"__is_unconditional__": "none", "__is_first_stage__": "first_stage"}
# LatentDiffusion params that only the reference training loop reads.
_TRAINING_ONLY = frozenset({
    "num_timesteps_cond", "log_every_t", "monitor", "ckpt_path", "ignore_keys", "load_only_unet",
    "original_elbo_weight", "l_simple_weight", "learn_logvar", "logvar_init", "use_positional_encodings",
    "clip_denoised", "scheduler_config", "make_it_fit", "ucg_training", "reset_ema", "reset_num_ema_updates",
    "unet_trainable", "finetune_keys", "keep_finetune_dims", "masked_loss_weight", "base_learning_rate",
})
# `version` values of FrozenCLIPEmbedder whose text config we know without a download.
_KNOWN_CLIP_VERSIONS = ("openai/clip-vit-large-patch14",)


class ReferenceConfigError(ValueError):
    """A reference YAML that does not describe a model this library builds."""


def read_reference_yaml(path: str | os.PathLike) -> ml_collections.ConfigDict:
    """Our config for the model a reference inference / training YAML describes."""
    path = pathlib.Path(path)
    try:
        document = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise ReferenceConfigError(f"{path}: not a readable YAML config: {error}") from error
    if not isinstance(document, Mapping):
        raise ReferenceConfigError(f"{path}: expected a mapping with a `model:` entry")
    return config_from_reference(document, base_dir=path.parent, source=str(path))


def config_from_reference(document: Mapping, *, base_dir: pathlib.Path | None = None,
                          source: str = "config") -> ml_collections.ConfigDict:
    """Our config from a parsed reference YAML document (a dict with `model.target` / `model.params`)."""
    model = document.get("model", document)
    target = model.get("target")
    if not target:
        raise ReferenceConfigError(f"{source}: model.target is missing")
    params = dict(model.get("params") or {})
    config = ml_collections.ConfigDict()
    config.model = ml_collections.ConfigDict()
    class_name = target.rsplit(".", 1)[-1]
    if class_name not in _LATENT_DIFFUSION_CLASSES:
        component = _component(model, f"{source}: model", base_dir)
        name = {"unet": "unet", "autoencoder_kl": "first_stage", "vq": "first_stage",
                "identity": "first_stage"}.get(component.kind, "cond_stage")
        config.model[name] = component
        return config
    missing = [key for key in _COMPONENT_CONFIGS if key not in params]
    if missing:
        raise ReferenceConfigError(f"{source}: model.params lacks {', '.join(missing)}")
    cond_stage_config = params.pop("cond_stage_config")
    for config_key, name in (("first_stage_config", "first_stage"), ("unet_config", "unet")):
        config.model[name] = _component(params.pop(config_key), f"{source}: model.params.{config_key}", base_dir)
    if isinstance(cond_stage_config, str):
        if cond_stage_config not in _COND_STAGE_SOURCES:
            raise ReferenceConfigError(f"{source}: model.params.cond_stage_config {cond_stage_config!r}; expected "
                                       f"a mapping with `target` or one of {', '.join(_COND_STAGE_SOURCES)}")
        source_of_condition = _COND_STAGE_SOURCES[cond_stage_config]
    elif str(cond_stage_config.get("target", "")).endswith("torch.nn.Identity"):
        source_of_condition = "identity"  # the condition (e.g. a low-resolution image) is used as is
    else:
        source_of_condition = "model"
        config.model.cond_stage = _component(cond_stage_config, f"{source}: model.params.cond_stage_config",
                                             base_dir)
    settings = {k: v for k, v in params.items() if k in zoo.DIFFUSION_DEFAULTS}
    dropped = sorted(set(params) - set(settings) - _TRAINING_ONLY)
    if dropped:
        warnings.warn(f"{source}: ignoring model.params {dropped}, which do not affect inference here")
    if source_of_condition == "none":  # "__is_unconditional__": the reference sets conditioning_key None
        settings["conditioning_key"] = "none"
    elif settings.get("conditioning_key") is None:  # the reference LatentDiffusion's default (bsr_sr,
        # semantic_synthesis, inpainting_big give only `concat_mode`, which defaults to True)
        settings["conditioning_key"] = "concat" if settings.get("concat_mode", True) else "crossattn"
    config.model.diffusion = zoo.diffusion(**to_plain_dict(settings), cond_stage_source=source_of_condition)
    return config


def _component(entry: Any, where: str, base_dir: pathlib.Path | None) -> ml_collections.ConfigDict:
    if not isinstance(entry, Mapping) or "target" not in entry:
        raise ReferenceConfigError(f"{where}: expected a mapping with `target` and `params`")
    class_name = entry["target"].rsplit(".", 1)[-1]
    kind = KIND_OF_CLASS.get(class_name)
    if kind is None:
        raise ReferenceConfigError(f"{where}.target: {entry['target']} is not a model this library builds; "
                                   f"expected one of {', '.join(sorted(KIND_OF_CLASS))}")
    params = dict(entry.get("params") or {})
    if kind == "clip_text":
        # FrozenCLIPEmbedder names a hub model; its architecture is the transformers config.
        if params.get("layer", "last") != "last":
            raise ReferenceConfigError(f"{where}.params.layer: only 'last' (SD v1) is supported, "
                                       f"got {params['layer']!r}")
        params = _clip_text_config(params, where, base_dir)
    component = {"kind": kind, "params": params}
    return ml_collections.ConfigDict(to_plain_dict(component))


def _clip_text_config(params: Mapping, where: str, base_dir: pathlib.Path | None) -> dict:
    if "text_config" in params:  # written by `to_reference_document`: the architecture inline
        return dict(params["text_config"])
    version = params.get("version", "openai/clip-vit-large-patch14")
    if version in _KNOWN_CLIP_VERSIONS:
        return zoo.clip_vit_l14()["params"]
    candidates = [pathlib.Path(version) / "config.json"]
    if base_dir is not None:
        candidates += [base_dir / version / "config.json", base_dir / "clip_text_config.json"]
    for candidate in candidates:
        try:
            if candidate.is_file():
                document = json.loads(candidate.read_text())
                return document.get("text_config", document)
        except (OSError, ValueError):
            continue
    raise ReferenceConfigError(
        f"{where}.params.version: unknown CLIP text model {version!r}; expected one of "
        f"{', '.join(_KNOWN_CLIP_VERSIONS)}, a folder holding its transformers config.json, or a "
        f"clip_text_config.json beside the YAML (looked for {', '.join(map(str, candidates))})")


def to_reference_document(config: ml_collections.ConfigDict) -> dict:
    """The reference YAML document of our config (the inverse of `config_from_reference`)."""
    components = {name: config.model[name] for name in _COMPONENT_CONFIGS.values() if name in config.model}
    if "diffusion" not in config.model:
        (component,) = components.values()
        return {"model": _reference_component(component)}
    params = dict(config.model.diffusion.to_dict())
    cond_stage_source = params.pop("cond_stage_source")
    if params.get("conditioning_key") == "none":
        params["conditioning_key"] = None
    for config_key, name in _COMPONENT_CONFIGS.items():
        if name in components:
            params[config_key] = _reference_component(components[name])
    if cond_stage_source != "model":
        params["cond_stage_config"] = {"none": "__is_unconditional__", "first_stage": "__is_first_stage__",
                                       "identity": {"target": "torch.nn.Identity"}}[cond_stage_source]
    return {"model": {"target": "ldm.models.diffusion.ddpm.LatentDiffusion", "params": params}}


_TARGET_OF_KIND = {
    "autoencoder_kl": "ldm.models.autoencoder.AutoencoderKL",
    "vq": "ldm.models.autoencoder.VQModelInterface",
    "identity": "ldm.models.autoencoder.IdentityFirstStage",
    "unet": "ldm.modules.diffusionmodules.openaimodel.UNetModel",
    "bert_embedder": "ldm.modules.encoders.modules.BERTEmbedder",
    "clip_text": "ldm.modules.encoders.modules.FrozenCLIPEmbedder",
    "open_clip_text": "ldm.modules.encoders.modules.FrozenOpenCLIPEmbedder",
    "class_embedder": "ldm.modules.encoders.modules.ClassEmbedder",
    "spatial_rescaler": "ldm.modules.encoders.modules.SpatialRescaler",
}


def _reference_component(component: ml_collections.ConfigDict) -> dict:
    params = _lists(component.params.to_dict())
    if component.kind == "clip_text":
        params = {"version": "openai/clip-vit-large-patch14", "max_length": 77, "text_config": params}
    return {"target": _TARGET_OF_KIND[component.kind], "params": params}


def _lists(value: Any) -> Any:
    """Tuples back to lists, as YAML writes them."""
    if isinstance(value, Mapping):
        return {k: _lists(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_lists(v) for v in value]
    return value
