"""One entry point for every model component a config names as `{"kind": ..., "params": ...}`.

`params` are the reference construction params (see `ldm_jax.zoo`); `build` hands them to the
kind's `*_from_reference` builder. `example_inputs` gives the small inputs whose `init` creates every
parameter, and `count_params` sizes a component without allocating it (`jax.eval_shape`).
"""
from typing import Callable, Mapping

import flax.linen as nn
import jax
import numpy as np

from ldm_jax.config_checks import to_plain_dict
from ldm_jax.models import autoencoder, bert_embedder, clip_text, conditioners, open_clip_text, unet
from ldm_jax.models.abstract import abstract_module_params

Builder = Callable[..., nn.Module]
ExampleInputs = Callable[[nn.Module], tuple]

# kind -> (builder from the reference params, example inputs for init)
KINDS: dict[str, tuple[Builder, ExampleInputs]] = {
    "autoencoder_kl": (autoencoder.autoencoder_kl_from_reference, autoencoder.example_inputs),
    "vq": (autoencoder.vq_from_reference, autoencoder.example_inputs),
    "identity": (autoencoder.identity_first_stage_from_reference, autoencoder.example_inputs),
    "unet": (unet.unet_from_reference, unet.example_inputs),
    "clip_text": (clip_text.clip_text_from_reference, clip_text.example_inputs),
    "open_clip_text": (open_clip_text.open_clip_text_from_reference, open_clip_text.example_inputs),
    "bert_embedder": (bert_embedder.bert_embedder_from_reference, bert_embedder.example_inputs),
    "class_embedder": (conditioners.class_embedder_from_reference, conditioners.class_embedder_example_inputs),
    "spatial_rescaler": (conditioners.spatial_rescaler_from_reference,
                         conditioners.spatial_rescaler_example_inputs),
}


def _entry(kind: str) -> tuple[Builder, ExampleInputs]:
    if kind not in KINDS:
        raise ValueError(f"unknown component kind {kind!r}; expected one of {sorted(KINDS)}")
    return KINDS[kind]


def _unpack(component: Mapping) -> tuple[str, dict]:
    if not isinstance(component, Mapping) and not hasattr(component, "to_dict"):
        raise TypeError(f"a component is a mapping {{kind, params}}, got {type(component).__name__}")
    component = to_plain_dict(component)  # builders expect plain reference mappings
    missing = {"kind", "params"} - set(component)
    extra = set(component) - {"kind", "params"}
    if missing or extra:
        raise ValueError(f"a component has exactly the keys 'kind' and 'params'; "
                         f"missing {sorted(missing)}, unexpected {sorted(extra)}")
    return component["kind"], component["params"]


def build(component: Mapping, **module_kwargs) -> nn.Module:
    """The Flax module of `component` ({kind, params}); `module_kwargs` (dtype, param_dtype, ...) pass through."""
    kind, params = _unpack(component)
    builder, _ = _entry(kind)
    try:
        return builder(params, **module_kwargs)
    except ValueError as error:
        raise ValueError(f"{kind}: {error}") from error


def example_inputs(kind: str, module: nn.Module) -> tuple:
    """Small inputs whose `module.init(rng, *inputs)` creates every parameter of a `kind` module."""
    return _entry(kind)[1](module)


def abstract_params(component: Mapping, **module_kwargs) -> dict:
    """The parameter tree of `component` as ShapeDtypeStructs (nothing allocated)."""
    kind, _ = _unpack(component)
    module = build(component, **module_kwargs)
    return abstract_module_params(module, *example_inputs(kind, module))


def count_params(component: Mapping) -> int:
    """How many parameters `component` has, computed abstractly with `jax.eval_shape`."""
    leaves = jax.tree_util.tree_leaves(abstract_params(component))
    return int(sum(int(np.prod(leaf.shape)) for leaf in leaves))
