"""CompVis / Stable Diffusion checkpoints <-> Flax modules and variables: the public API.

    from ldm_jax.convert import compvis
    module, variables = compvis.convert_module(kind, state_dict, params)
    config, variables = compvis.load_checkpoint(path, config_path=None, use_ema=False)
    compvis.save_checkpoint(path, config, variables)   # a .safetensors the reference loads
    compvis.save_checkpoint(path, config, variables, ema=ema_unet_variables)   # + model_ema.*
"""
import dataclasses
import os
import pathlib
import re
from typing import Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import yaml

from ldm_jax import config_files
from ldm_jax.convert import checkpoint_files, reference_config
from ldm_jax.convert.state_dict import CheckpointMismatchError, KeyView, load_params, to_state_dict
from ldm_jax.diffusion.schedule import CHECKPOINT_BUFFERS, DiffusionSchedule
from ldm_jax.models import components
from ldm_jax.models.abstract import abstract_module_params


@dataclasses.dataclass(frozen=True)
class KeyLayout:
    """Where a kind's tensors sit in a checkpoint, and which of its keys hold no Flax parameter."""

    prefixes: tuple[str, ...]          # tried in order; the first present is stripped
    ignored: tuple[str, ...] = ()      # regular expressions of buffers / unused heads
    # False for a kind no checkpoint holds alone (it has no tensors): only prefixed keys are its own.
    standalone: bool = True


KEY_LAYOUTS = {
    # First-stage checkpoints also hold the training loss (LPIPS, discriminator) and EMA copies.
    "autoencoder_kl": KeyLayout(("first_stage_model.",), ignored=(r"loss\..*", r"model_ema\..*")),
    "vq": KeyLayout(("first_stage_model.",),
                    ignored=(r"loss\..*", r"model_ema\..*", r"quantize\.used", r"colorize")),
    # The pixel-space "first stage" has no tensors; a LatentDiffusion checkpoint holds none under its prefix.
    "identity": KeyLayout(("first_stage_model.",), standalone=False),
    "unet": KeyLayout(("model.diffusion_model.",)),
    "bert_embedder": KeyLayout(("cond_stage_model.",), ignored=(r"transformer\.to_logits\..*",)),
    # transformers 4 stores CLIP under `text_model.`, transformers 5 without it.
    "clip_text": KeyLayout(("cond_stage_model.transformer.text_model.", "cond_stage_model.transformer.",
                            "text_model."), ignored=(r"embeddings\.position_ids",)),
    # The image tower and the logit scale are not part of the text encoder.
    "open_clip_text": KeyLayout(("cond_stage_model.model.",),
                                ignored=(r"logit_scale", r"attn_mask", r"visual\..*")),
    "class_embedder": KeyLayout(("cond_stage_model.",)),
    "spatial_rescaler": KeyLayout(("cond_stage_model.",)),
}
# Checkpoint sections, in the order a LatentDiffusion checkpoint holds them.
SECTIONS = ("first_stage", "unet", "cond_stage")
_EMA_PREFIX = "model_ema."
_EMA_BOOKKEEPING = ("model_ema.decay", "model_ema.num_updates")


def component_state_dict(kind: str, state_dict: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]:
    """The tensors of one component, under the module's own key names, minus ignored buffers (a view:
    nothing is read until it is indexed)."""
    layout = _layout(kind)
    prefix = next((p for p in layout.prefixes if any(key.startswith(p) for key in state_dict)), None)
    if prefix is not None:
        names = {k[len(prefix):]: k for k in state_dict if k.startswith(prefix)}
    else:
        names = {k: k for k in state_dict} if layout.standalone else {}
    ignored = re.compile("|".join(layout.ignored)) if layout.ignored else None
    return KeyView(state_dict, {k: v for k, v in names.items() if not (ignored and ignored.fullmatch(k))})


def convert_module(kind: str, state_dict: Mapping[str, np.ndarray], params: Mapping,
                   dtype=jnp.float32, param_dtype=jnp.float32) -> tuple[nn.Module, dict]:
    """The Flax module of `kind` built from the reference `params`, and its variables from `state_dict`.

    `kind` is "autoencoder_kl", "vq", "identity", "unet", "bert_embedder", "clip_text", "open_clip_text",
    "class_embedder" or "spatial_rescaler"; keys may carry their checkpoint prefix or not.
    """
    tensors = component_state_dict(kind, state_dict)
    module = components.build({"kind": kind, "params": params}, dtype=dtype, param_dtype=param_dtype)
    params = load_params(_abstract(kind, module), tensors, source=f"{kind} state dict")
    return module, {"params": jax.tree.map(jnp.asarray, params)}


def to_reference_state_dict(kind: str, variables: Mapping, prefix: bool = True) -> dict[str, np.ndarray]:
    """The inverse of `convert_module`: reference keys (with the checkpoint prefix) and torch layouts."""
    head = _layout(kind).prefixes[0] if prefix else ""
    return {head + key: value for key, value in to_state_dict(variables["params"]).items()}


def load_checkpoint(path: str | os.PathLike, config_path: str | os.PathLike | None = None,
                    use_ema: bool = False) -> tuple[ml_collections.ConfigDict, dict]:
    """Our config and the variables of every component of a CompVis-format checkpoint.

    `config_path` is the reference YAML (e.g. `v1-inference.yaml`), one of our `configs/*.py` files
    (`"configs/sd_v1.py"`, or `"configs/sd_v2.py:2.1"` for a variant), or a ConfigDict; by default
    `<checkpoint>.yaml` beside the checkpoint. `use_ema` takes the UNet weights from `model_ema.*`. Returns
    `(config, {"first_stage": ..., "unet": ..., "cond_stage": ...})` for the sections it has.
    """
    path = pathlib.Path(path)
    if not path.is_file():  # before the config, whose default location is beside it
        raise FileNotFoundError(f"checkpoint {path} does not exist" if not path.exists() else
                                f"checkpoint {path} is not a file")
    config = _read_config(path, config_path)
    state_dict = checkpoint_files.read_state_dict(path)
    _check_schedule(config, state_dict, path)
    if "scale_factor" in state_dict and "diffusion" in config.model:
        # With scale_by_std the reference estimates the latent scale once and keeps it as a buffer.
        config.model.diffusion.scale_factor = float(np.ravel(state_dict["scale_factor"])[0])
    variables = {}
    for section in SECTIONS:
        component = config.model.get(section)
        if component is None:
            continue
        abstract = _abstract(component.kind, components.build(component.to_dict()))
        source = f"{path.name} [{section}]"
        if section == "unet" and use_ema:
            params = _ema_params(abstract, state_dict, source)
        else:
            params = load_params(abstract, component_state_dict(component.kind, state_dict), source=source)
        variables[section] = {"params": jax.tree.map(jnp.asarray, params)}
    return config, variables


def save_checkpoint(path: str | os.PathLike, config: ml_collections.ConfigDict, variables: Mapping,
                    ema: Mapping | None = None, ema_decay: float = 0.9999, ema_num_updates: int = 0) -> None:
    """Writes `variables` as a CompVis-format `.safetensors` (the reference loads it), atomically,
    and the reference YAML of `config` beside it, so `load_checkpoint(path)` finds it.

    `ema` (the UNet's EMA variables) adds `model_ema.*` as the reference's LitEma stores them, with its
    `decay` / `num_updates` buffers: a `use_ema: True` reference model then loads the file strictly, and
    `load_checkpoint(path, use_ema=True)` reads them back.
    """
    path = pathlib.Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"{path}: checkpoints are written as .safetensors; use that suffix")
    state_dict = {}
    for section, section_variables in variables.items():
        state_dict.update(to_reference_state_dict(config.model[section].kind, section_variables))
    if ema is not None:
        state_dict.update(_ema_state_dict(ema, ema_decay, ema_num_updates))
    if "diffusion" in config.model:
        state_dict.update(DiffusionSchedule.from_config(config.model.diffusion).checkpoint_buffers())
        if config.model.diffusion.scale_by_std:
            state_dict["scale_factor"] = np.asarray(config.model.diffusion.scale_factor, np.float32)
    checkpoint_files.write_safetensors(state_dict, path, metadata={"format": "pt", "written_by": "ldm-jax"})
    document = yaml.safe_dump(reference_config.to_reference_document(config), sort_keys=False)
    _write_atomically(path.with_suffix(".yaml"), document)


def _write_atomically(path: pathlib.Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _abstract(kind: str, module: nn.Module) -> dict:
    return abstract_module_params(module, *components.example_inputs(kind, module))


def _ema_state_dict(ema: Mapping, decay: float, num_updates: int) -> dict[str, np.ndarray]:
    """LitEma's buffers: each UNet parameter under its DiffusionWrapper path with the dots removed."""
    weights = to_reference_state_dict("unet", ema, prefix=False)
    state_dict = {_EMA_PREFIX + ("diffusion_model." + key).replace(".", ""): value for key, value in weights.items()}
    state_dict[_EMA_BOOKKEEPING[0]] = np.asarray(decay, np.float32)
    state_dict[_EMA_BOOKKEEPING[1]] = np.asarray(num_updates, np.int32)  # torch.int, as LitEma registers it
    return state_dict


def _ema_params(abstract, state_dict, source):
    ema = KeyView(state_dict, {k: k for k in state_dict if k.startswith(_EMA_PREFIX) and k not in _EMA_BOOKKEEPING})
    if not ema:
        raise CheckpointMismatchError(f"{source}: use_ema=True but the checkpoint holds no EMA weights "
                                      f"(no {_EMA_PREFIX}* keys); load it with use_ema=False")
    # The reference EMA names a parameter by its path under DiffusionWrapper with every '.' removed.
    return load_params(abstract, ema, source=f"{source} (EMA)",
                       lookup=lambda key: _EMA_PREFIX + ("diffusion_model." + key).replace(".", ""))


def _check_schedule(config, state_dict, path):
    """A checkpoint's stored schedule must be the one its config describes."""
    if "diffusion" not in config.model or "betas" not in state_dict:
        return
    expected = DiffusionSchedule.from_config(config.model.diffusion).checkpoint_buffers()
    for name in CHECKPOINT_BUFFERS:
        stored = state_dict.get(name)
        if stored is not None and (stored.shape != expected[name].shape
                                   or not np.allclose(stored, expected[name], rtol=1e-5, atol=1e-8)):
            raise CheckpointMismatchError(
                f"{path.name}: the stored diffusion buffer {name!r} differs from the schedule of the config "
                f"(beta_schedule={config.model.diffusion.beta_schedule}, timesteps="
                f"{config.model.diffusion.timesteps}, linear_start={config.model.diffusion.linear_start}, "
                f"linear_end={config.model.diffusion.linear_end}): is the config for another model?")


def _read_config(path: pathlib.Path, config_path) -> ml_collections.ConfigDict:
    if isinstance(config_path, ml_collections.ConfigDict):
        return ml_collections.ConfigDict(config_path.to_dict())  # a copy: loading may set scale_factor
    if config_path is not None and (str(config_path).endswith(".py") or ".py:" in str(config_path)):
        return config_files.load_config(config_path)
    return reference_config.read_reference_yaml(_config_path(path, config_path))


def _config_path(path: pathlib.Path, config_path) -> pathlib.Path:
    if config_path is not None:
        return pathlib.Path(config_path)
    beside = path.with_suffix(".yaml")
    if beside.is_file():
        return beside
    raise FileNotFoundError(f"no config for {path}: pass config_path= (the reference inference YAML, e.g. "
                            f"v1-inference.yaml) or put {beside.name} beside the checkpoint")


def _layout(kind: str) -> KeyLayout:
    if kind not in KEY_LAYOUTS:
        raise ValueError(f"unknown kind {kind!r}; expected one of {', '.join(KEY_LAYOUTS)}")
    return KEY_LAYOUTS[kind]
