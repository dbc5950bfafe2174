"""DDIM timestep grids and sampling parameters against the reference (schedule.npz)."""
import numpy as np
import pytest

from ldm_jax.diffusion import timesteps
from ldm_jax.diffusion.schedule import DiffusionSchedule

SETTINGS = [(10, 0.0), (25, 1.0), (30, 0.0)]


def _prefix(steps, eta):
    return f"ddim_S{steps}_eta{str(eta).replace('.', 'p')}_"


@pytest.fixture(scope="module")
def reference(compvis_fixtures):
    return dict(np.load(compvis_fixtures / "schedule.npz"))


@pytest.mark.parametrize("steps, eta", SETTINGS)
def test_ddim_parameters_match_reference(reference, steps, eta):
    p = _prefix(steps, eta)
    ts = timesteps.make_ddim_timesteps("uniform", steps, 1000)
    assert ts.dtype == np.int64 and np.array_equal(ts, reference[p + "timesteps"])
    sigmas, alphas, alphas_prev = timesteps.make_ddim_sampling_parameters(reference["alphas_cumprod"], ts, eta)
    assert alphas.dtype == np.float32 and np.array_equal(alphas, reference[p + "alphas"])
    np.testing.assert_array_equal(alphas_prev, reference[p + "alphas_prev_f64"])
    np.testing.assert_array_equal(sigmas, reference[p + "sigmas_f64"])
    np.testing.assert_array_equal(alphas_prev.astype(np.float32), reference[p + "alphas_prev"])
    np.testing.assert_array_equal(sigmas.astype(np.float32), reference[p + "sigmas"])


@pytest.mark.parametrize("steps, eta", SETTINGS)
def test_sampling_grid_matches_reference_in_sampling_order(reference, steps, eta):
    p = _prefix(steps, eta)
    schedule = DiffusionSchedule.create("linear", 1000, 0.00085, 0.012)
    grid = timesteps.ddim_grid(schedule.alphas_cumprod, steps)
    flip = lambda a: np.asarray(a)[::-1]  # noqa: E731
    np.testing.assert_array_equal(flip(grid.timesteps), reference[p + "timesteps"])
    np.testing.assert_allclose(flip(grid.alphas), reference[p + "alphas"], rtol=1e-6)
    np.testing.assert_allclose(flip(grid.alphas_prev), reference[p + "alphas_prev"], rtol=1e-6)
    np.testing.assert_allclose(flip(grid.sqrt_one_minus_alphas), reference[p + "sqrt_one_minus_alphas"], rtol=1e-6)
    np.testing.assert_allclose(eta * flip(grid.sigma_unit), reference[p + "sigmas"], rtol=1e-6)


def test_uniform_spacing_keeps_the_reference_off_by_one():
    ts = timesteps.make_ddim_timesteps("uniform", 30, 1000)
    assert len(ts) == 31 and ts[0] == 1 and ts[1] == 34 and ts[-1] == 991
    assert list(timesteps.make_ddim_timesteps("uniform", 10, 1000)) == list(range(1, 1000, 100))


def test_quad_spacing():
    ts = timesteps.make_ddim_timesteps("quad", 10, 1000)
    expected = (np.linspace(0, np.sqrt(800), 10) ** 2).astype(int) + 1
    np.testing.assert_array_equal(ts, expected)
    assert np.all(np.diff(ts) > 0) and np.all(np.diff(np.diff(ts)) > 0)  # quadratically spaced


def test_bad_step_counts_are_rejected():
    with pytest.raises(ValueError, match="reach timestep"):
        timesteps.make_ddim_timesteps("uniform", 1000, 1000)
    with pytest.raises(ValueError, match="discretization"):
        timesteps.make_ddim_timesteps("cubic", 10, 1000)


def test_ddpm_grid_covers_every_timestep():
    schedule = DiffusionSchedule.create("linear", 1000, 0.00085, 0.012)
    grid = timesteps.ddpm_grid(schedule.alphas_cumprod, 1000)
    np.testing.assert_array_equal(np.asarray(grid.timesteps), np.arange(999, -1, -1))
    np.testing.assert_allclose(np.asarray(grid.alphas_prev)[:-1], np.asarray(schedule.alphas_cumprod)[998::-1])
    assert float(grid.alphas_prev[-1]) == 1.0 and float(grid.sigma_unit[-1]) == 0.0
    # Between neighbouring timesteps the step variance is the reference posterior variance.
    np.testing.assert_allclose(np.asarray(grid.sigma_unit)[:-1] ** 2,
                               np.asarray(schedule.posterior_variance)[:0:-1], rtol=1e-4)
