"""FID Inception-v3 weights from the PyTorch file the user supplies, and back.

pytorch-fid's `pt_inception-2015-12-05-6726825d.pth` and torch-fidelity's
`weights-inception-2015-12-05-6726825d.pth` are the same port of the TensorFlow graph, saved as
the state dict of torchvision's `Inception3(num_classes=1008, aux_logits=False)` with the FID
blocks; the layouts do not differ. Keys and shapes:

    Conv2d_1a_3x3.conv.weight (32, 3, 3, 3)        <-> Conv2d_1a_3x3/conv/kernel (3, 3, 3, 32)
    Conv2d_1a_3x3.bn.weight / .bias                <-> Conv2d_1a_3x3/bn/scale / bias
    Conv2d_1a_3x3.bn.running_mean / .running_var   <-> Conv2d_1a_3x3/bn/running_mean / running_var
    Conv2d_1a_3x3.bn.num_batches_tracked           ignored (absent from older files)
    Mixed_5b.branch1x1.conv.weight ...             the same rules inside every Mixed block
    fc.weight (1008, 2048), fc.bias (1008,)        <-> fc/kernel (2048, 1008), fc/bias

so the rename and the NCHW -> HWIO transpose are `ldm_jax.convert.state_dict`'s generic rules.
"""
import os
from typing import Mapping

import flax
import numpy as np

from ldm_jax.convert import checkpoint_files, state_dict
from ldm_jax.models import inception
from ldm_jax.models.abstract import abstract_module_params

SOURCE = "FID Inception-v3 state dict"
_IGNORED_SUFFIX = ".num_batches_tracked"


def abstract_inception_params(module: inception.FIDInceptionV3 | None = None) -> dict:
    """The FID Inception parameter tree as ShapeDtypeStructs (nothing allocated)."""
    return abstract_module_params(module or inception.FIDInceptionV3(), *inception.example_inputs())


def inception_params_from_torch(torch_state_dict: Mapping[str, np.ndarray], params_like: Mapping | None = None) -> dict:
    """FID Inception params from a pytorch-fid / torch-fidelity state dict (numpy arrays or tensors).

    Raises `CheckpointMismatchError` naming every missing, unexpected or misshapen key.
    """
    arrays = {key: _numpy(value) for key, value in torch_state_dict.items()}
    ignored = [key for key in arrays if key.endswith(_IGNORED_SUFFIX)]
    return state_dict.load_params(params_like or abstract_inception_params(), arrays, ignored=ignored, source=SOURCE)


def inception_params_to_torch(params: Mapping) -> dict[str, np.ndarray]:
    """The pytorch-fid / torch-fidelity state dict of FID Inception params (BatchNorm counters included)."""
    out = state_dict.to_state_dict(flax.core.unfreeze(params))
    for key in [key for key in out if key.endswith(".bn.running_mean")]:
        out[key[:-len(".running_mean")] + _IGNORED_SUFFIX] = np.zeros((), np.int64)
    return out


def load_inception_params(path: str | os.PathLike) -> dict:
    """FID Inception params from `pt_inception-2015-12-05-6726825d.pth` (or its `.safetensors` copy)."""
    weights = checkpoint_files.read_state_dict(path)
    try:
        return inception_params_from_torch(weights)
    except state_dict.CheckpointMismatchError as error:
        raise state_dict.CheckpointMismatchError(f"FID Inception weights {path}: {error}") from error


def _numpy(value) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor, straight from `torch.load` or a module's state_dict()
        return value.detach().cpu().numpy()
    return np.asarray(value)
