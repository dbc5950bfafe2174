"""`.safetensors` read lazily, tensor by tensor: the same tensors as safetensors' own reader."""
import ml_dtypes
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from ldm_jax.convert import checkpoint_files
from ldm_jax.convert.checkpoint_files import CheckpointFileError, SafetensorsFile


def test_reads_what_safetensors_wrote(tmp_path):
    rng = np.random.default_rng(0)
    tensors = {"a.weight": rng.standard_normal((3, 4, 2)).astype(np.float32),
               "a.bias": rng.standard_normal(5).astype(np.float16),
               "steps": np.asarray(7, np.int64), "empty": np.zeros((0, 3), np.float32),
               "mask": np.asarray([True, False])}
    path = tmp_path / "t.safetensors"
    save_file(tensors, path, metadata={"format": "pt"})
    lazy = checkpoint_files.read_state_dict(path)
    assert isinstance(lazy, SafetensorsFile) and set(lazy) == set(tensors) and len(lazy) == len(tensors)
    for key, want in load_file(path).items():
        assert lazy[key].dtype == want.dtype and lazy[key].shape == want.shape
        np.testing.assert_array_equal(lazy[key], want)
    with pytest.raises(KeyError):
        lazy["missing"]


def test_bfloat16(tmp_path):
    path = tmp_path / "bf16.safetensors"
    values = np.asarray([1.5, -2.0, 3.25], np.float32)
    header = b'{"w":{"dtype":"BF16","shape":[3],"data_offsets":[0,6]}}'
    path.write_bytes(len(header).to_bytes(8, "little") + header + values.astype(ml_dtypes.bfloat16).tobytes())
    np.testing.assert_array_equal(SafetensorsFile(path)["w"].astype(np.float32), values)


@pytest.mark.parametrize("damage", ["truncate", "header"])
def test_damaged_files_fail_on_opening(tmp_path, damage):
    path = tmp_path / "t.safetensors"
    save_file({"w": np.ones((64, 64), np.float32)}, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 100] if damage == "truncate" else data[:8] + b"{not json" + data[17:])
    with pytest.raises(CheckpointFileError, match="truncated or corrupt"):
        SafetensorsFile(path)
