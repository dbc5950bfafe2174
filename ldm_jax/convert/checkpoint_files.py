"""Reading and writing CompVis-format checkpoint files: `.safetensors` and torch-zip `.ckpt`.

`.safetensors` never needs torch. A pickled `.ckpt` is opened with `torch.load(weights_only=True)`,
which unpickles tensors and plain containers only, so no CompVis code is imported or run.
"""
import json
import os
import pathlib
import tempfile
from typing import Iterator, Mapping

import ml_dtypes
import numpy as np

TORCH_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")


class CheckpointFileError(ValueError):
    """A checkpoint file that cannot be read: truncated, corrupt, or of an unknown format."""


def read_state_dict(path: str | os.PathLike) -> Mapping[str, np.ndarray]:
    """The flat state dict of a CompVis-format checkpoint, as numpy arrays keyed by reference name.

    A `.safetensors` file is read tensor by tensor as the mapping is indexed (see `SafetensorsFile`).
    """
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


def _read_safetensors(path: pathlib.Path) -> "SafetensorsFile":
    return SafetensorsFile(path)


_SAFETENSORS_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16,
                       "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8,
                       "BOOL": np.bool_}


class SafetensorsFile(Mapping):
    """The tensors of a `.safetensors` file, each read from disk when looked up and not kept.

    Converting a checkpoint then holds one host tensor at a time instead of the whole file: a 4 GB SD
    checkpoint loads at about the size of its parameters. Plain reads, not mmap, whose touched pages
    would stay resident (and counted) until the file is closed. The header is checked on opening, so a
    truncated file fails before any tensor is read.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = pathlib.Path(path)
        size = self.path.stat().st_size
        try:
            with open(self.path, "rb") as file:
                header_bytes = int.from_bytes(file.read(8), "little")
                if not 0 < header_bytes <= size - 8:
                    raise ValueError(f"header length {header_bytes} does not fit a {size}-byte file")
                header = json.loads(file.read(header_bytes))
            header.pop("__metadata__", None)
            self._data_start = 8 + header_bytes
            self._entries = {key: (np.dtype(_SAFETENSORS_DTYPES[entry["dtype"]]), tuple(entry["shape"]),
                                   tuple(entry["data_offsets"])) for key, entry in header.items()}
        except (ValueError, KeyError, TypeError) as error:  # JSONDecodeError is a ValueError
            raise CheckpointFileError(f"{self.path}: not a readable .safetensors file (truncated or corrupt?): "
                                      f"{type(error).__name__}: {error}") from error
        for key, (dtype, shape, (begin, end)) in self._entries.items():
            if end - begin != dtype.itemsize * int(np.prod(shape)) or self._data_start + end > size:
                raise CheckpointFileError(f"{self.path}: not a readable .safetensors file (truncated or corrupt?): "
                                          f"tensor {key!r} {dtype}{list(shape)} at bytes {begin}-{end} of the "
                                          f"data does not fit the {size - self._data_start} data bytes")

    def __getitem__(self, key: str) -> np.ndarray:
        dtype, shape, (begin, _) = self._entries[key]
        tensor = np.empty(shape, dtype)
        with open(self.path, "rb") as file:
            file.seek(self._data_start + begin)
            file.readinto(tensor.reshape(-1).view(np.uint8))
        return tensor

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)


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
