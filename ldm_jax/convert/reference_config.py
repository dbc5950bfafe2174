"""The reference YAML configs (`model.target` / `model.params`) read into our ml_collections configs.

A component keeps the reference construction params unchanged, under the kind of module that
builds it: `config.model.unet = {"kind": "unet", "params": unet_config.params}`. The diffusion
settings of `LatentDiffusion` go to `config.model.diffusion`.
"""
import json
import os
import pathlib
from typing import Any, Mapping

import ml_collections
import yaml

# Reference classes by name (the module path differs between the CompVis / Stability repos).
KIND_OF_CLASS = {
    "AutoencoderKL": "autoencoder_kl",
    "VQModel": "vq",
    "VQModelInterface": "vq",
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
_DIFFUSION_DEFAULTS = dict(timesteps=1000, beta_schedule="linear", linear_start=1e-4, linear_end=2e-2,
                           cosine_s=8e-3, parameterization="eps", scale_factor=1.0,
                           conditioning_key="none", use_ema=True)
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
    if class_name in ("LatentDiffusion", "LatentInpaintDiffusion", "LatentUpscaleDiffusion",
                      "LatentFinetuneDiffusion", "ImageEmbeddingConditionedLatentDiffusion"):
        for config_key, name in _COMPONENT_CONFIGS.items():
            if config_key not in params:
                raise ReferenceConfigError(f"{source}: model.params.{config_key} is missing")
            component = _component(params.pop(config_key), f"{source}: model.params.{config_key}", base_dir)
            if component is not None:
                config.model[name] = component
        diffusion = {**_DIFFUSION_DEFAULTS, **{k: v for k, v in params.items() if not isinstance(v, Mapping)}}
        if diffusion["conditioning_key"] is None:
            diffusion["conditioning_key"] = "none"
        config.model.diffusion = _plain(diffusion)
    else:
        component = _component(model, f"{source}: model", base_dir)
        name = "unet" if component.kind == "unet" else "first_stage"
        if component.kind not in ("unet", "autoencoder_kl", "vq"):
            name = "cond_stage"
        config.model[name] = component
    return config


def _component(entry: Any, where: str, base_dir: pathlib.Path | None) -> ml_collections.ConfigDict | None:
    if entry in ("__is_unconditional__", "__is_first_stage__"):
        # No separate conditioner: unconditional, or conditioned on the first stage's own latent.
        return None if entry == "__is_unconditional__" else ml_collections.ConfigDict({"kind": "first_stage"})
    if not isinstance(entry, Mapping) or "target" not in entry:
        raise ReferenceConfigError(f"{where}: expected a mapping with `target` and `params`")
    class_name = entry["target"].rsplit(".", 1)[-1]
    kind = KIND_OF_CLASS.get(class_name)
    if kind is None:
        raise ReferenceConfigError(f"{where}.target: {entry['target']} is not a model this library builds; "
                                   f"expected one of {', '.join(sorted(KIND_OF_CLASS))}")
    params = dict(entry.get("params") or {})
    component = {"kind": kind, "params": params}
    if kind == "clip_text":
        # FrozenCLIPEmbedder names a hub model; its architecture is the transformers config.
        component = {"kind": kind, "params": _clip_text_config(params, where, base_dir),
                     "max_length": params.get("max_length", 77), "layer": params.get("layer", "last")}
    return ml_collections.ConfigDict(_plain(component))


def _clip_text_config(params: Mapping, where: str, base_dir: pathlib.Path | None) -> dict:
    if "text_config" in params:  # written by `to_reference_document`: the architecture inline
        return dict(params["text_config"])
    version = params.get("version", "openai/clip-vit-large-patch14")
    if version in _KNOWN_CLIP_VERSIONS:
        from ldm_jax import zoo

        return zoo.clip_vit_l14()
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
    if params.get("conditioning_key") == "none":
        params["conditioning_key"] = None
    for config_key, name in _COMPONENT_CONFIGS.items():
        component = components.get(name)
        if component is None:
            params[config_key] = "__is_unconditional__"
        elif component.kind == "first_stage":
            params[config_key] = "__is_first_stage__"
        else:
            params[config_key] = _reference_component(component)
    return {"model": {"target": "ldm.models.diffusion.ddpm.LatentDiffusion", "params": params}}


_TARGET_OF_KIND = {
    "autoencoder_kl": "ldm.models.autoencoder.AutoencoderKL",
    "vq": "ldm.models.autoencoder.VQModelInterface",
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
        params = {"version": "openai/clip-vit-large-patch14", "max_length": component.get("max_length", 77),
                  "layer": component.get("layer", "last"), "text_config": params}
    return {"target": _TARGET_OF_KIND[component.kind], "params": params}


def _lists(value: Any) -> Any:
    """Tuples back to lists, as YAML writes them."""
    if isinstance(value, Mapping):
        return {k: _lists(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_lists(v) for v in value]
    return value


def _plain(value: Any) -> Any:
    """YAML values as ConfigDict-friendly plain types (lists become tuples)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return tuple(_plain(v) for v in value)
    return value
