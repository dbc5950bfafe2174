"""Our samplers against diffusers' schedulers made `from_config` of Stable Diffusion v1.5's scheduler config.

The same model (an analytic function of x and t that takes fractional timesteps), the same initial
noise and, for the stochastic samplers, the same per-step noise (diffusers' `randn_tensor` replaced
by a replay of ours). Compared: the timesteps the model is called at, the model input of every step
(diffusers' `scale_model_input` output, which is our latent) and the final latents, to
1e-4 x max(1, max|diffusers|).
"""
import importlib

import numpy as np
import pytest

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

from ldm_jax.diffusion import sampling  # noqa: E402
from tests.diffusion.analytic_model import SCHEDULE, SHAPE, assert_same_trajectory, model, run_ours  # noqa: E402

# runwayml/stable-diffusion-v1-5 scheduler/scheduler_config.json (a PNDMScheduler's).
SD15_SCHEDULER_CONFIG = {"beta_end": 0.012, "beta_schedule": "scaled_linear", "beta_start": 0.00085,
                         "num_train_timesteps": 1000, "set_alpha_to_one": False, "skip_prk_steps": True,
                         "steps_offset": 1, "trained_betas": None, "clip_sample": False}
# (our sampler, our eta, diffusers' scheduler class, the module whose randn_tensor draws its noise)
SAMPLERS = {
    "ddpm": ("ddpm", 0.0, "DDPMScheduler", "scheduling_ddpm"),
    "dpm_solver++": ("dpm_solver++", 0.0, "DPMSolverMultistepScheduler", None),
    "euler": ("euler", 0.0, "EulerDiscreteScheduler", None),
    "euler_ancestral": ("euler", 1.0, "EulerAncestralDiscreteScheduler", "scheduling_euler_ancestral_discrete"),
    "ddim_eta1": ("ddim", 1.0, "DDIMScheduler", "scheduling_ddim"),
    "plms": ("plms", 0.0, "PNDMScheduler", None),  # skip_prk_steps: the reference's PLMS on diffusers' grid
}
# Samplers whose default follows the CompVis reference (tested against it elsewhere): here on a diffusers spacing.
REFERENCE_DEFAULT = {"ddim_eta1": "leading", "plms": "leading"}


def diffusers_run(name, steps, spacing, prediction_type, x_T, noise, monkeypatch):
    _, eta, class_name, noise_module = SAMPLERS[name]
    config = dict(SD15_SCHEDULER_CONFIG, trained_betas=np.asarray(SCHEDULE.betas).tolist(),
                  prediction_type=prediction_type)
    if spacing is not None:
        config["timestep_spacing"] = spacing
    scheduler = getattr(diffusers, class_name).from_config(config)
    if noise_module is not None:  # replay our per-step noise in the order the scheduler draws it
        draws = iter(torch.from_numpy(noise))
        module = importlib.import_module(f"diffusers.schedulers.{noise_module}")
        monkeypatch.setattr(module, "randn_tensor", lambda *args, **kwargs: next(draws))
    scheduler.set_timesteps(steps)
    latents = torch.from_numpy(x_T) * scheduler.init_noise_sigma
    times, inputs = [], []
    for t in scheduler.timesteps:
        model_input = scheduler.scale_model_input(latents, t)
        times.append(float(t))
        inputs.append(model_input.numpy())
        output = model(model_input, torch.full((x_T.shape[0],), float(t)), torch)
        step_kwargs = {"eta": eta} if class_name == "DDIMScheduler" else {}
        latents = scheduler.step(output, t, latents, **step_kwargs).prev_sample
    return np.asarray(times), np.stack(inputs), latents.numpy()


def ours_run(name, steps, spacing, parameterization, x_T, noise):
    sampler_name, eta, _, noise_module = SAMPLERS[name]
    return run_ours(sampler_name, steps, spacing, parameterization, x_T, eta=eta,
                    noise=None if noise_module is None else noise)


def check_against_diffusers(name, steps, spacing, monkeypatch, parameterization="eps"):
    rng = np.random.default_rng(steps)
    x_T = rng.standard_normal(SHAPE).astype(np.float32)
    noise = rng.standard_normal((steps + 1, *SHAPE)).astype(np.float32)
    prediction_type = {"eps": "epsilon", "v": "v_prediction"}[parameterization]
    assert_same_trajectory(ours_run(name, steps, spacing, parameterization, x_T, noise),
                           diffusers_run(name, steps, spacing, prediction_type, x_T, noise, monkeypatch))


@pytest.mark.parametrize("name", sorted(SAMPLERS))
@pytest.mark.parametrize("steps", [7, 20])
def test_defaults_follow_diffusers(name, steps, monkeypatch):
    """No `discretize`: each sampler walks its diffusers counterpart's default grid."""
    check_against_diffusers(name, steps, REFERENCE_DEFAULT.get(name), monkeypatch)


# PNDM's second call of its first step goes back to t_next + T // S, which is the grid's first
# timestep only on the leading and trailing grids; the reference PLMS (ours) goes back to that timestep.
@pytest.mark.parametrize("name, spacing", [(name, spacing) for name in sorted(SAMPLERS)
                                           for spacing in ("leading", "trailing", "linspace")
                                           if (name, spacing) != ("plms", "linspace")])
def test_every_spacing_follows_diffusers(name, spacing, monkeypatch):
    check_against_diffusers(name, 9, spacing, monkeypatch)  # 9: a count the reference's spacing cannot do


# PNDM averages two raw v outputs before converting them to eps; the reference PLMS (ours) converts each.
@pytest.mark.parametrize("name", sorted(set(SAMPLERS) - {"plms"}))
def test_v_prediction_follows_diffusers(name, monkeypatch):
    check_against_diffusers(name, 12, REFERENCE_DEFAULT.get(name), monkeypatch, "v")


def test_reference_spacing_error_names_the_diffusers_spacings():
    with pytest.raises(ValueError, match="discretize='leading', 'trailing' or 'linspace'"):
        sampling.sampling_grid(SCHEDULE, "ddim", 9, "uniform")
    assert sampling.sampling_grid(SCHEDULE, "ddim", 9, "trailing").num_steps == 9


def test_documented_sampler_names():
    assert sorted(sampling.SAMPLERS) == ["ddim", "ddpm", "dpm_solver++", "euler", "plms"]
