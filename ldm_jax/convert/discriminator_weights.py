"""NLayerDiscriminator variables <-> the reference (taming) PyTorch state dict.

Keys are `main.N.*` as in taming's `nn.Sequential`, under a prefix inside a larger state dict
(a reference autoencoder checkpoint holds the discriminator as `loss.discriminator.*`):

    conv       main.N.weight (out, in, 4, 4), main.N.bias      <-> params kernel (4, 4, in, out), bias
    BatchNorm  main.N.weight, main.N.bias                      <-> params scale, bias
               main.N.running_mean / running_var / num_batches_tracked <-> batch_stats
    ActNorm    main.N.loc, main.N.scale (1, C, 1, 1)           <-> params loc, scale (C,)
               main.N.initialized (buffer)                     ignored: the Flax ActNorm is initialised
"""
from typing import Mapping

import flax
import numpy as np

from ldm_jax.convert.state_dict import CheckpointMismatchError, from_reference_layout, to_reference_layout
from ldm_jax.models.discriminator import BATCH_STATS

SOURCE = "discriminator state dict"


def _is_actnorm(flat_params: Mapping[tuple, object], module: tuple) -> bool:
    return module + ("loc",) in flat_params


def _torch_name(flat_params: Mapping[tuple, object], path: tuple[str, ...]) -> str:
    *module, leaf = path
    if leaf == "kernel" or (leaf == "scale" and not _is_actnorm(flat_params, tuple(module))):
        leaf = "weight"
    return ".".join([*(name.replace(":", ".") for name in module), leaf])


def _to_torch_array(flat_params, path, value: np.ndarray) -> np.ndarray:
    if path[-1] in ("loc", "scale") and _is_actnorm(flat_params, tuple(path[:-1])):
        return value.reshape(1, -1, 1, 1)
    return to_reference_layout(path, value)


def _from_torch_array(flat_params, path, value: np.ndarray) -> np.ndarray:
    if path[-1] in ("loc", "scale") and _is_actnorm(flat_params, tuple(path[:-1])):
        return value.reshape(-1)
    return from_reference_layout(path, value)


def discriminator_to_torch(variables: Mapping, prefix: str = "") -> dict[str, np.ndarray]:
    """The taming state dict of {"params", "batch_stats"} discriminator variables."""
    variables = flax.core.unfreeze(variables)
    params = flax.traverse_util.flatten_dict(variables["params"])
    out = {prefix + _torch_name(params, path): np.ascontiguousarray(_to_torch_array(params, path, np.asarray(value)))
           for path, value in params.items()}
    for path, value in flax.traverse_util.flatten_dict(variables.get(BATCH_STATS, {})).items():
        out[prefix + _torch_name({}, path)] = np.asarray(value)
    return out


def discriminator_from_torch(state_dict: Mapping[str, np.ndarray], variables_like: Mapping, prefix: str = "") -> dict:
    """{"params", "batch_stats"} shaped like `variables_like` (abstract is fine) from a taming state dict.

    Raises `CheckpointMismatchError` naming every missing, unexpected or misshapen key.
    """
    variables_like = flax.core.unfreeze(variables_like)
    selected = {key[len(prefix):]: value for key, value in state_dict.items() if key.startswith(prefix)}
    params_like = flax.traverse_util.flatten_dict(variables_like["params"])
    stats_like = flax.traverse_util.flatten_dict(variables_like.get(BATCH_STATS, {}))
    missing, misshapen, used = [], [], set()
    out = {"params": {}, BATCH_STATS: {}}
    entries = [("params", path, spec, params_like) for path, spec in params_like.items()]
    entries += [(BATCH_STATS, path, spec, {}) for path, spec in stats_like.items()]
    for collection, path, spec, flat in entries:
        key = _torch_name(flat, path)
        if key not in selected:
            missing.append(prefix + key)
            continue
        used.add(key)
        value = _from_torch_array(params_like, path, np.asarray(selected[key])) if collection == "params" \
            else np.asarray(selected[key])
        if value.shape != tuple(spec.shape):
            misshapen.append(f"{prefix + key}: {np.shape(selected[key])} does not fit {tuple(spec.shape)} "
                             "(Flax layout)")
            continue
        out[collection][path] = value.astype(spec.dtype)
    unexpected = sorted(prefix + key for key in set(selected) - used if not key.endswith(".initialized"))
    if missing or misshapen or unexpected:
        problems = [f"{len(keys)} {title}: {', '.join(keys[:10])}" for title, keys in
                    (("missing", missing), ("unexpected", unexpected), ("wrong shape", misshapen)) if keys]
        raise CheckpointMismatchError(f"{SOURCE} does not fit the discriminator: " + "; ".join(problems))
    result = {"params": flax.traverse_util.unflatten_dict(out["params"])}
    if stats_like:
        result[BATCH_STATS] = flax.traverse_util.unflatten_dict(out[BATCH_STATS])
    return result
