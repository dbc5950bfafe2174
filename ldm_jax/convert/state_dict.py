"""Flax parameters <-> reference PyTorch state dicts, by one naming rule and one layout rule.

Naming: every Flax module is named after the reference attribute, a list index written
`name:i` (see `ldm_jax.models.layers.indexed`). The reference key is the Flax path joined by
'.', with ':' read as '.', and the leaf `kernel` / `scale` / `embedding` read as `weight`.
Layout: a kernel's two feature axes are last in Flax (..., in, out) and first in torch
(out, in, ...); every other tensor is stored as is.
"""
from typing import Callable, Iterable, Iterator, Mapping

import flax
import flax.linen as nn
import jax.numpy as jnp
import numpy as np

_WEIGHT_LEAVES = ("kernel", "scale", "embedding")


class CheckpointMismatchError(ValueError):
    """A state dict does not fit the model: missing, unexpected or wrongly shaped tensors."""


class KeyView(Mapping):
    """The tensors of `state_dict` under new keys (`names`: new key -> stored key), looked up only when
    indexed, so a lazily read checkpoint (`checkpoint_files.SafetensorsFile`) stays unread."""

    def __init__(self, state_dict: Mapping[str, np.ndarray], names: Mapping[str, str]):
        self._state_dict, self._names = state_dict, dict(names)

    def __getitem__(self, key: str) -> np.ndarray:
        return self._state_dict[self._names[key]]

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


def reference_key(path: tuple[str, ...]) -> str:
    """The reference state-dict key of the Flax parameter at `path` (inside `params`)."""
    *modules, leaf = path
    leaf = "weight" if leaf in _WEIGHT_LEAVES else leaf
    return ".".join([*(m.replace(":", ".") for m in modules), leaf])


def to_reference_layout(path: tuple[str, ...], array: np.ndarray) -> np.ndarray:
    if path[-1] != "kernel":
        return array
    n = array.ndim
    return np.transpose(array, (n - 1, n - 2, *range(n - 2)))


def from_reference_layout(path: tuple[str, ...], array: np.ndarray) -> np.ndarray:
    if path[-1] != "kernel":
        return array
    n = array.ndim
    return np.transpose(array, (*range(2, n), 1, 0))


def _reference_shape(path, shape) -> tuple[int, ...]:
    if path[-1] != "kernel":
        return tuple(shape)
    return (shape[-1], shape[-2], *shape[:-2])


def expected_keys(params_like: Mapping) -> list[str]:
    """The reference keys a state dict must hold for these (abstract) parameters."""
    return [reference_key(path) for path in flax.traverse_util.flatten_dict(params_like)]


def load_params(params_like: Mapping, state_dict: Mapping[str, np.ndarray], *,
                ignored: Iterable[str] = (), source: str = "state dict",
                lookup: Callable[[str], str] = lambda key: key) -> dict:
    """Builds Flax params shaped like `params_like` from a reference state dict.

    `lookup` turns a reference key into the key actually stored (e.g. the EMA naming).
    Keys in `ignored` (buffers and heads with no Flax parameter) may be absent or present.
    Raises CheckpointMismatchError naming every missing, unexpected or misshapen tensor. Each tensor is
    read once and placed on the default device as it is converted, so the host holds one at a time.
    """
    flat = flax.traverse_util.flatten_dict(params_like)
    missing, misshapen, used, out = [], [], set(ignored), {}
    for path, spec in flat.items():
        key = lookup(reference_key(path))
        if key not in state_dict:
            missing.append(key)
            continue
        used.add(key)
        value = np.asarray(state_dict[key])
        expected = _reference_shape(path, spec.shape)
        if value.shape != expected:
            misshapen.append(f"{key}: {source} has shape {value.shape}, the model expects {expected}")
            continue
        out[path] = jnp.asarray(from_reference_layout(path, value).astype(spec.dtype, copy=False))
    unexpected = sorted(set(state_dict) - used)
    if missing or misshapen or unexpected:
        raise CheckpointMismatchError(_mismatch_message(source, len(flat), missing, unexpected, misshapen))
    return flax.traverse_util.unflatten_dict(out)


def to_state_dict(params: Mapping) -> dict[str, np.ndarray]:
    """The reference state dict of Flax `params` (the inverse of `load_params`)."""
    flat = flax.traverse_util.flatten_dict(nn.unbox(params))
    return {reference_key(path): np.ascontiguousarray(to_reference_layout(path, np.asarray(value)))
            for path, value in flat.items()}


def _mismatch_message(source, num_expected, missing, unexpected, misshapen, shown=10) -> str:
    lines = [f"{source} does not fit the model ({num_expected} tensors expected):"]
    for title, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", misshapen)):
        if keys:
            listed = ", ".join(keys[:shown]) + (f", ... ({len(keys) - shown} more)" if len(keys) > shown else "")
            lines.append(f"  {len(keys)} {title}: {listed}")
    if len(missing) + len(misshapen) > num_expected // 2:
        lines.append("  Most expected tensors are missing or misshapen: is this a checkpoint of another model, "
                     "or is the config wrong?")
    return "\n".join(lines)
