"""Reading and writing CompVis-format checkpoint files: `.safetensors` and torch-zip `.ckpt`.

`.safetensors` never needs torch. A pickled `.ckpt` is opened with `torch.load(weights_only=True)`,
which unpickles tensors and plain containers only, so no CompVis code is imported or run.
"""
import os
import pathlib
import tempfile
from typing import Mapping

import numpy as np

TORCH_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")


class CheckpointFileError(ValueError):
    """A checkpoint file that cannot be read: truncated, corrupt, or of an unknown format."""


def read_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The flat state dict of a CompVis-format checkpoint, as numpy arrays keyed by reference name."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    if path.suffix == ".safetensors":
        return _read_safetensors(path)
    if path.suffix in TORCH_SUFFIXES:
        return _read_torch(path)
    raise CheckpointFileError(f"{path}: unknown checkpoint format {path.suffix!r}; "
                              f"expected .safetensors or one of {', '.join(TORCH_SUFFIXES)}")


def write_safetensors(state_dict: Mapping[str, np.ndarray], path: str | os.PathLike,
                      metadata: Mapping[str, str] | None = None) -> None:
    """Writes a `.safetensors` file atomically: a failed write leaves any previous file intact."""
    from safetensors.numpy import save_file

    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {key: np.ascontiguousarray(value) for key, value in state_dict.items()}
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        save_file(tensors, tmp, metadata=dict(metadata) if metadata else None)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _read_safetensors(path: pathlib.Path) -> dict[str, np.ndarray]:
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        return load_file(path)
    except (SafetensorError, ValueError, OSError) as error:
        raise CheckpointFileError(f"{path}: not a readable .safetensors file (truncated or corrupt?): "
                                  f"{error}") from error


def _read_torch(path: pathlib.Path) -> dict[str, np.ndarray]:
    try:
        import torch
    except ImportError as error:
        raise ImportError(f"reading {path.name} needs PyTorch, which the base install leaves out. Install "
                          "the extra with `pip install 'ldm-jax[torch]'` (torch==2.13.0, CPU), or convert "
                          "the checkpoint to .safetensors first.") from error
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises RuntimeError, EOFError, UnpicklingError, ... on bad files
        raise CheckpointFileError(f"{path}: not a readable torch checkpoint (truncated or corrupt?): "
                                  f"{type(error).__name__}: {error}") from error
    state_dict = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state_dict, dict):
        raise CheckpointFileError(f"{path}: expected a dict of tensors or a dict with a 'state_dict' entry, "
                                  f"found {type(checkpoint).__name__}")
    return {key: _to_numpy(value) for key, value in state_dict.items() if isinstance(value, torch.Tensor)}


def _to_numpy(tensor) -> np.ndarray:
    import torch

    tensor = tensor.detach().cpu()
    if tensor.dtype in (torch.bfloat16, torch.float16):
        tensor = tensor.float()  # numpy has no bfloat16; half-precision weights load as float32
    return tensor.numpy()
