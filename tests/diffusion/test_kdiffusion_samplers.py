"""Our samplers on `discretize="k-diffusion"` against k-diffusion's `sample_euler`,
`sample_euler_ancestral` and `sample_dpmpp_2m` over a `CompVisDenoiser` (`CompVisVDenoiser` for
v-prediction) with the sigmas of its `get_sigmas(S)`, as SD web UIs run them.

The same analytic model, initial noise (x_T * sigma_max in k-diffusion's space) and ancestral noise
(its `noise_sampler` replays ours). Compared: the timesteps the model is called at, the model's input
at every step (k-diffusion's x * c_in, our latent) and the result, to 1e-4 x max(1, max|k-diffusion|).
"""
import importlib
import sys
import types
from unittest import mock

import numpy as np
import pytest

from tests.diffusion.analytic_model import SCHEDULE, SHAPE, assert_same_trajectory, model, run_ours

torch = pytest.importorskip("torch")
if importlib.util.find_spec("k_diffusion") is None:
    pytest.skip("k-diffusion is not installed (make .venv/.installed does)", allow_module_level=True)

# (our sampler, eta, k-diffusion's sampler)
SAMPLERS = {"euler": ("euler", 0.0, "sample_euler"), "euler_ancestral": ("euler", 1.0, "sample_euler_ancestral"),
            "dpmpp_2m": ("dpm_solver++", 0.0, "sample_dpmpp_2m")}


@pytest.fixture(scope="module")
def k_diffusion():
    """k-diffusion's `sampling` and `external` modules without its package `__init__`, which imports its
    training and evaluation code (torchvision, CLIP, ...). `torchsde` / `torchdiffeq` serve samplers not
    compared here; of its `utils` the two modules use `append_dims` only."""
    package = types.ModuleType("k_diffusion")
    package.__path__ = list(importlib.util.find_spec("k_diffusion").submodule_search_locations)
    utils = types.ModuleType("k_diffusion.utils")
    utils.append_dims = lambda x, dims: x[(...,) + (None,) * (dims - x.ndim)]
    torchdiffeq = types.ModuleType("torchdiffeq")
    torchdiffeq.odeint = None
    stubs = {"k_diffusion": package, "k_diffusion.utils": utils, "torchsde": types.ModuleType("torchsde"),
             "torchdiffeq": torchdiffeq}
    with mock.patch.dict(sys.modules, stubs):
        return importlib.import_module("k_diffusion.sampling"), importlib.import_module("k_diffusion.external")


class CompVisModel:
    """What `CompVisDenoiser` reads of a CompVis `LatentDiffusion`: alphas_cumprod and apply_model."""

    def __init__(self):
        self.alphas_cumprod = torch.from_numpy(np.array(SCHEDULE.alphas_cumprod, np.float32))
        self.times, self.inputs = [], []

    def apply_model(self, x, t, cond):
        self.times.append(float(t[0]))
        self.inputs.append(x.numpy())
        return model(x, t, torch)


def k_diffusion_run(modules, name, steps, parameterization, x_T, noise):
    sampling_module, external = modules
    _, eta, function = SAMPLERS[name]
    inner = CompVisModel()
    denoiser = {"eps": external.CompVisDenoiser, "v": external.CompVisVDenoiser}[parameterization](inner)
    sigmas = denoiser.get_sigmas(steps)
    draws = iter(torch.from_numpy(noise))
    kwargs = {"noise_sampler": lambda sigma, sigma_next: next(draws)} if eta else {}
    with torch.no_grad():
        out = getattr(sampling_module, function)(denoiser, torch.from_numpy(x_T) * sigmas[0], sigmas,
                                                 extra_args={"cond": None}, disable=True, **kwargs)
    # k-diffusion works in sigma space (x / sqrt(alpha_bar)); its final sigma is 0, where the two agree.
    return np.asarray(inner.times), np.stack(inner.inputs), out.numpy()


@pytest.mark.parametrize("name", sorted(SAMPLERS))
@pytest.mark.parametrize("steps, parameterization", [(7, "eps"), (20, "eps"), (12, "v")])
def test_k_diffusion_grid_follows_k_diffusion(k_diffusion, name, steps, parameterization):
    rng = np.random.default_rng(steps)
    x_T = rng.standard_normal(SHAPE).astype(np.float32)
    noise = rng.standard_normal((steps, *SHAPE)).astype(np.float32)
    sampler, eta, _ = SAMPLERS[name]
    assert_same_trajectory(run_ours(sampler, steps, "k-diffusion", parameterization, x_T, eta=eta, noise=noise),
                           k_diffusion_run(k_diffusion, name, steps, parameterization, x_T, noise))
