"""`dpm_solver++` on `discretize="time_uniform"` against Stable Diffusion 2's own `DPMSolverSampler`
(DPM-Solver++(2M), `skip_type="time_uniform"`, `lower_order_final`), eps and v-prediction.

The reference's trajectories were written by `tests/reference/generate_sampler_fixtures.py` from the
original code on the analytic model; compared: the (fractional) timesteps the model is called at, its
input at every step and the result, to 1e-4 x max(1, max|reference|).
"""
import pytest

from ldm_jax.diffusion import sampling
from tests.diffusion.analytic_model import SCHEDULE, assert_same_trajectory, run_ours
from tests.reference import fixture


@pytest.mark.parametrize("steps, parameterization", [(7, "eps"), (20, "eps"), (12, "v")])
def test_time_uniform_grid_follows_sd2_dpm_solver_sampler(steps, parameterization):
    reference = fixture("sd2_dpm_solver.npz")
    key = f"{parameterization}_{steps}"
    assert_same_trajectory(run_ours("dpm_solver++", steps, "time_uniform", parameterization, reference[f"{key}/x_T"]),
                           tuple(reference[f"{key}/{name}"] for name in ("times", "inputs", "out")))


def test_solver_spacings_are_refused_by_other_samplers_by_name():
    with pytest.raises(ValueError, match=r"'time_uniform' is for dpm_solver\+\+ only"):
        sampling.sampling_grid(SCHEDULE, "ddim", 9, "time_uniform")
    with pytest.raises(ValueError, match=r"'k-diffusion' is for euler and dpm_solver\+\+ only"):
        sampling.sampling_grid(SCHEDULE, "ddpm", 9, "k-diffusion")
