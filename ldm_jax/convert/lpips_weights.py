"""LPIPS (VGG16, v0.1) weights from their published PyTorch layouts, and back.

The weights are user-supplied; two layouts are read:

1. Two files, as the `lpips` package assembles them: torchvision's VGG16 state dict
   (`vgg16-397923af.pth`: `features.N.weight` / `features.N.bias`, the `classifier.*` head is
   ignored) and the lpips v0.1 linear heads (`lpips/weights/v0.1/vgg.pth`, shipped in the `lpips`
   wheel: `lin0.model.1.weight` (1, 64, 1, 1) ... `lin4.model.1.weight` (1, 512, 1, 1)).
2. One state dict of a whole `lpips.LPIPS` / taming `LPIPS` module (`net.slice1.0.weight`, ...,
   `lin0.model.1.weight`, the `scaling_layer` buffers ignored), optionally under a prefix: a
   reference autoencoder checkpoint holds it as `loss.perceptual_loss.*`.

Flax names mirror layout 1 (see `ldm_jax.models.lpips`), so the rename and the NCHW -> HWIO kernel
transpose are `ldm_jax.convert.state_dict`'s generic rules.
"""
import os
from typing import Mapping

import flax
import numpy as np

from ldm_jax.convert import checkpoint_files, state_dict
from ldm_jax.models import lpips
from ldm_jax.models.abstract import abstract_module_params

VGG16_SOURCE = "torchvision VGG16 state dict"
LINEAR_SOURCE = "lpips v0.1 linear-layer state dict"
MODULE_SOURCE = "LPIPS module state dict"
# Present in the PyTorch files, with no Flax parameter.
_VGG16_IGNORED_PREFIX = "classifier."
_MODULE_BUFFERS = ("scaling_layer.shift", "scaling_layer.scale")


def abstract_lpips_params(module: lpips.LPIPS | None = None) -> dict:
    """The LPIPS parameter tree as ShapeDtypeStructs (nothing allocated)."""
    module = module or lpips.LPIPS()
    return abstract_module_params(module, *lpips.example_inputs(module))


def _split(params_like: Mapping) -> tuple[dict, dict]:
    """(the VGG `features:N` part, the `linK` heads part) of an LPIPS parameter tree."""
    features = {name: value for name, value in params_like.items() if name.startswith("features:")}
    heads = {name: value for name, value in params_like.items() if name.startswith("lin")}
    other = sorted(set(params_like) - set(features) - set(heads))
    if other:
        raise ValueError(f"not an LPIPS parameter tree: unexpected top-level entries {other}")
    return features, heads


def lpips_params_from_torch(vgg16_state_dict: Mapping[str, np.ndarray], linear_state_dict: Mapping[str, np.ndarray],
                            params_like: Mapping | None = None) -> dict:
    """LPIPS params from torchvision's VGG16 state dict and the lpips v0.1 `vgg.pth` heads.

    Raises `CheckpointMismatchError` naming every missing, unexpected or misshapen key, and which of
    the two state dicts it belongs to.
    """
    features_like, heads_like = _split(params_like or abstract_lpips_params())
    ignored = [key for key in vgg16_state_dict if key.startswith(_VGG16_IGNORED_PREFIX)]
    features = state_dict.load_params(features_like, vgg16_state_dict, ignored=ignored, source=VGG16_SOURCE)
    heads = state_dict.load_params(heads_like, linear_state_dict, source=LINEAR_SOURCE)
    return {**features, **heads}


def module_key(key: str) -> str:
    """The key of a `features.N.*` / `linK.*` tensor in an lpips / taming `LPIPS` module state dict."""
    if not key.startswith("features."):
        return key
    index = int(key.split(".")[1])
    last_indices = [indices[-1] + 1 for indices in lpips.VGG16_CONV_INDICES]  # each slice ends with its ReLU
    slice_number = next(k for k, end in enumerate(last_indices, start=1) if index <= end)
    return f"net.slice{slice_number}.{key[len('features.'):]}"


def lpips_params_from_module(module_state_dict: Mapping[str, np.ndarray], prefix: str = "",
                             params_like: Mapping | None = None) -> dict:
    """LPIPS params from the state dict of a whole lpips / taming `LPIPS` module.

    `prefix` selects it inside a larger state dict, e.g. "loss.perceptual_loss." in a reference
    autoencoder checkpoint; keys outside the prefix are not looked at.
    """
    selected = {key[len(prefix):]: value for key, value in module_state_dict.items() if key.startswith(prefix)}
    if not selected:
        raise state_dict.CheckpointMismatchError(f"{MODULE_SOURCE} has no key starting with {prefix!r}")
    ignored = [key for key in _MODULE_BUFFERS if key in selected]
    source = f"{MODULE_SOURCE} (prefix {prefix!r})" if prefix else MODULE_SOURCE
    return state_dict.load_params(params_like or abstract_lpips_params(), selected, ignored=ignored, source=source,
                                  lookup=module_key)


def lpips_params_to_torch(params: Mapping) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(torchvision VGG16 `features` state dict, lpips linear-layer state dict) of LPIPS params."""
    features, heads = _split(flax.core.unfreeze(params))
    return state_dict.to_state_dict(features), state_dict.to_state_dict(heads)


def lpips_params_to_module(params: Mapping, prefix: str = "") -> dict[str, np.ndarray]:
    """The lpips / taming `LPIPS` module state dict of LPIPS params (with the ScalingLayer buffers)."""
    flat = state_dict.to_state_dict(params)
    out = {prefix + module_key(key): value for key, value in flat.items()}
    out[prefix + "scaling_layer.shift"] = lpips.SHIFT.reshape(1, 3, 1, 1)
    out[prefix + "scaling_layer.scale"] = lpips.SCALE.reshape(1, 3, 1, 1)
    return out


def load_lpips_params(vgg16_path: str | os.PathLike, linear_path: str | os.PathLike) -> dict:
    """LPIPS params from the two files of layout 1 (`.pth` / `.pt` via torch, or `.safetensors`)."""
    try:
        return lpips_params_from_torch(checkpoint_files.read_state_dict(vgg16_path),
                                       checkpoint_files.read_state_dict(linear_path))
    except state_dict.CheckpointMismatchError as error:
        raise state_dict.CheckpointMismatchError(f"LPIPS weights {vgg16_path} + {linear_path}: {error}") from error


def load_lpips_module_params(path: str | os.PathLike, prefix: str = "") -> dict:
    """LPIPS params from one file holding an LPIPS module state dict (layout 2) under `prefix`."""
    state = checkpoint_files.read_state_dict(path)
    try:
        return lpips_params_from_module(state, prefix)
    except state_dict.CheckpointMismatchError as error:
        raise state_dict.CheckpointMismatchError(f"LPIPS weights {path}: {error}") from error
