import numpy as np
import pytest

from ldm_jax.diffusion import schedule as schedule_lib


@pytest.fixture(scope="module")
def reference(compvis_fixtures):
    return np.load(compvis_fixtures / "schedule.npz")


def test_linear_betas_match_reference_float64(reference):
    betas = schedule_lib.make_beta_schedule("linear", 1000, 0.00085, 0.012)
    np.testing.assert_allclose(betas, reference["betas_f64"], rtol=1e-12)


def test_buffers_match_reference(reference, compvis_fixtures):
    from safetensors.numpy import load_file

    schedule = schedule_lib.DiffusionSchedule.create("linear", 1000, 0.00085, 0.012)
    stored = load_file(compvis_fixtures / "schedule.safetensors")
    assert set(stored) == set(schedule_lib.CHECKPOINT_BUFFERS)
    for name, value in schedule.checkpoint_buffers().items():
        np.testing.assert_allclose(value, reference[name], rtol=1e-6, err_msg=name)
        np.testing.assert_allclose(value, stored[name], rtol=1e-6, err_msg=name)
    np.testing.assert_allclose(schedule.lvlb_weights, reference["lvlb_weights"], rtol=1e-5)


@pytest.mark.parametrize("kind", ["linear", "cosine", "sqrt_linear", "sqrt"])
def test_every_schedule_is_a_valid_noise_schedule(kind):
    schedule = schedule_lib.DiffusionSchedule.create(kind, 200, 1e-4, 2e-2)
    betas = np.asarray(schedule.betas)
    assert betas.shape == (200,) and np.all(betas > 0) and np.all(betas < 1)
    assert np.all(np.diff(np.asarray(schedule.alphas_cumprod)) < 0)
    assert schedule.num_timesteps == 200


def test_unknown_schedule_is_named():
    with pytest.raises(ValueError, match="quadratic"):
        schedule_lib.make_beta_schedule("quadratic", 10)
