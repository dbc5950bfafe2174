"""Parameterisations, q_sample and the training losses."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ldm_jax.diffusion import objectives
from ldm_jax.diffusion.schedule import DiffusionSchedule


@pytest.fixture(scope="module")
def setup():
    schedule = DiffusionSchedule.create("linear", 1000, 0.00085, 0.012)
    k1, k2 = jax.random.split(jax.random.PRNGKey(0))
    x0 = jax.random.normal(k1, (3, 4, 4, 2))
    noise = jax.random.normal(k2, x0.shape)
    t = jnp.array([0, 500, 999])
    return schedule, x0, noise, t


def test_q_sample_matches_the_formula(setup):
    schedule, x0, noise, t = setup
    acp = np.asarray(schedule.alphas_cumprod)[np.asarray(t)][:, None, None, None]
    expected = np.sqrt(acp) * np.asarray(x0) + np.sqrt(1 - acp) * np.asarray(noise)
    np.testing.assert_allclose(objectives.q_sample(schedule, x0, t, noise), expected, rtol=1e-5, atol=1e-6)


def test_conversions_invert_each_other(setup):
    schedule, x0, noise, t = setup
    x_t = objectives.q_sample(schedule, x0, t, noise)
    np.testing.assert_allclose(objectives.predict_start_from_noise(schedule, x_t, t, noise), x0, atol=2e-3)
    v = objectives.get_v(schedule, x0, noise, t)
    np.testing.assert_allclose(objectives.predict_start_from_z_and_v(schedule, x_t, t, v), x0, atol=1e-5)
    np.testing.assert_allclose(objectives.predict_eps_from_z_and_v(schedule, x_t, t, v), noise, atol=1e-5)
    # eps from x0 is ill-conditioned at t=0 (sqrt(1/a - 1) ~ 0.03); check it where it is not.
    eps = objectives.predict_eps_from_start(schedule, x_t[1:], t[1:], x0[1:])
    np.testing.assert_allclose(eps, noise[1:], atol=1e-4)


def test_training_targets(setup):
    schedule, x0, noise, t = setup
    assert objectives.training_target("eps", schedule, x0, noise, t) is noise
    assert objectives.training_target("x0", schedule, x0, noise, t) is x0
    np.testing.assert_allclose(objectives.training_target("v", schedule, x0, noise, t),
                               objectives.get_v(schedule, x0, noise, t))
    with pytest.raises(ValueError, match="parameterization"):
        objectives.training_target("score", schedule, x0, noise, t)


def test_loss_combines_simple_and_vlb_terms(setup):
    schedule, x0, noise, t = setup
    prediction = noise + 0.5
    loss, metrics = objectives.diffusion_loss(schedule, prediction, noise, t, loss_type="l2")
    np.testing.assert_allclose(loss, 0.25, rtol=1e-6)
    np.testing.assert_allclose(metrics["loss_simple"], 0.25, rtol=1e-6)
    loss_l1, _ = objectives.diffusion_loss(schedule, prediction, noise, t, loss_type="l1")
    np.testing.assert_allclose(loss_l1, 0.5, rtol=1e-6)
    weights = np.asarray(schedule.lvlb_weights)[np.asarray(t)]
    loss, metrics = objectives.diffusion_loss(schedule, prediction, noise, t, l_simple_weight=2.0,
                                              original_elbo_weight=0.1)
    np.testing.assert_allclose(metrics["loss_vlb"], 0.25 * weights.mean(), rtol=1e-5)
    np.testing.assert_allclose(loss, 2 * 0.25 + 0.1 * 0.25 * weights.mean(), rtol=1e-5)
    logvar = jnp.full((1000,), 1.0)
    loss, metrics = objectives.diffusion_loss(schedule, prediction, noise, t, logvar=logvar)
    np.testing.assert_allclose(loss, 0.25 / np.e + 1.0, rtol=1e-5)


def test_p_losses_is_zero_for_a_perfect_model(setup):
    schedule, x0, noise, t = setup
    for parameterization in ("eps", "x0", "v"):
        target = objectives.training_target(parameterization, schedule, x0, noise, t)
        loss, _ = objectives.p_losses(lambda x_t, tt: target, schedule, x0, t, noise,
                                      parameterization=parameterization)
        assert float(loss) == 0.0
        loss, _ = objectives.p_losses(lambda x_t, tt: x_t, schedule, x0, t, noise, parameterization=parameterization)
        assert float(loss) > 0.01


def test_min_snr_weights_equalise_the_three_targets(setup):
    """min(SNR, gamma) per x0 error: eps and v weights divide by SNR and SNR + 1; p_losses applies them."""
    schedule = setup[0]
    t = jnp.array([0, 10, 500, 999])
    alpha_bar = np.asarray(schedule.alphas_cumprod)[np.asarray(t)]
    snr = alpha_bar / (1 - alpha_bar)
    expected_x0 = np.minimum(snr, 5.0)
    np.testing.assert_allclose(objectives.min_snr_weights(schedule, t, 5.0, "x0"), expected_x0, rtol=1e-5)
    np.testing.assert_allclose(objectives.min_snr_weights(schedule, t, 5.0, "eps"), expected_x0 / snr, rtol=1e-5)
    np.testing.assert_allclose(objectives.min_snr_weights(schedule, t, 5.0, "v"), expected_x0 / (snr + 1), rtol=1e-5)
    assert float(objectives.min_snr_weights(schedule, t, 5.0)[-1]) == pytest.approx(1.0)  # noisy steps keep weight 1
    x0 = jax.random.normal(jax.random.key(0), (4, 4, 4, 3))
    noise = jax.random.normal(jax.random.key(1), x0.shape)
    zeros = lambda x_t, steps: jnp.zeros_like(x_t)  # noqa: E731  (error = the noise itself)
    plain, _ = objectives.p_losses(zeros, schedule, x0, t, noise)
    weighted, _ = objectives.p_losses(zeros, schedule, x0, t, noise, snr_gamma=5.0)
    per_sample = np.mean(np.square(np.asarray(noise)).reshape(4, -1), axis=1)
    assert float(plain) == pytest.approx(per_sample.mean(), rel=1e-5)
    assert float(weighted) == pytest.approx(np.mean(per_sample * expected_x0 / snr), rel=1e-5)


def test_min_snr_weights_combine_with_a_logvar_table(setup):
    """With a logvar table the weighted loss_simple (not the plain one) is what exp(-logvar) scales."""
    schedule, x0, noise, t = setup
    logvar = jnp.full((schedule.num_timesteps,), 0.5)
    zeros = lambda x_t, steps: jnp.zeros_like(x_t)  # noqa: E731
    loss, _ = objectives.p_losses(zeros, schedule, x0, t, noise, logvar=logvar, snr_gamma=5.0)
    per_sample = np.mean(np.square(np.asarray(noise)).reshape(len(t), -1), axis=1)
    weights = np.asarray(objectives.min_snr_weights(schedule, t, 5.0))
    assert float(loss) == pytest.approx(np.mean(per_sample * weights / np.exp(0.5) + 0.5), rel=1e-5)
