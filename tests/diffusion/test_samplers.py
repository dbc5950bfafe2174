"""Samplers on an analytic Gaussian data model, noise replay, img2img / inpainting semantics, and
that the traced knobs never recompile.

Data x0 ~ N(mu, s2) per element, so x_t ~ N(sqrt(a) mu, a s2 + 1 - a) and the optimal eps is
E[eps | x_t] = sqrt(1 - a) (x_t - sqrt(a) mu) / (a s2 + 1 - a): the exact model, in closed form.
The probability-flow ODE keeps z = (x_t - sqrt(a) mu) / sqrt(a s2 + 1 - a) constant.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ldm_jax.diffusion import sampling
from ldm_jax.diffusion.progress import ScanProgressBar
from ldm_jax.diffusion.schedule import DiffusionSchedule

SCHEDULE = DiffusionSchedule.create("linear", 1000, 0.00085, 0.012)
MU, S2 = 1.5, 0.25
SHAPE = (64, 8, 8, 4)  # 16384 samples


SIGMAS = np.sqrt((1 - np.asarray(SCHEDULE.alphas_cumprod, np.float64)) / np.asarray(SCHEDULE.alphas_cumprod))


def alpha_at(t):
    """alpha_bar at t, with sigma interpolated linearly between timesteps (as on Euler's fractional grid)."""
    sigma = jnp.interp(jnp.asarray(t, jnp.float32), jnp.arange(SIGMAS.shape[0], dtype=jnp.float32),
                       jnp.asarray(SIGMAS, jnp.float32))
    return 1 / (1 + sigma ** 2)


def gaussian_eps(params, x, t, cond):
    """The exact eps of N(mu + cond shift, s2) data; mu and s2 are traced params."""
    a = alpha_at(t).reshape(-1, 1, 1, 1)
    mu = params["mu"] + (cond["shift"].reshape(-1, 1, 1, 1) if cond else 0.0)
    return jnp.sqrt(1 - a) * (x - jnp.sqrt(a) * mu) / (a * params["s2"] + 1 - a)


PARAMS = {"mu": jnp.float32(MU), "s2": jnp.float32(S2)}


def marginal(a, mu=MU):
    return np.sqrt(a) * mu, np.sqrt(a * S2 + 1 - a)


def start_and_end(name, steps):
    grid = sampling.sampling_grid(SCHEDULE, name, steps)
    return float(grid.alphas[0]), float(grid.alphas_prev[-1])


@pytest.fixture(scope="module")
def sampler():
    return sampling.LatentSampler(gaussian_eps, SCHEDULE)


def exact_start(name, steps, key=0):
    """x_T such that the sampler starts (after its start scale) from the exact marginal at the first timestep."""
    grid = sampling.sampling_grid(SCHEDULE, name, steps)
    mean, std = marginal(float(grid.alphas[0]))
    x = mean + std * np.asarray(jax.random.normal(jax.random.PRNGKey(key), SHAPE))
    return jnp.asarray(x / float(grid.start_scale), jnp.float32)


def ode_solution(x_T, name, steps):
    a_start, a_end = start_and_end(name, steps)
    (m0, s0), (m1, s1) = marginal(a_start), marginal(a_end)
    x_start = np.asarray(x_T) * float(sampling.sampling_grid(SCHEDULE, name, steps).start_scale)
    return m1 + s1 * (x_start - m0) / s0


@pytest.mark.parametrize("name, tolerance", [("ddim", 0.06), ("plms", 0.005), ("dpm_solver++", 0.04), ("euler", 0.06)])
def test_deterministic_samplers_follow_the_probability_flow_ode(sampler, name, tolerance):
    x_T = exact_start(name, 100)
    out = sampler(PARAMS, x_T, None, sampler=name, steps=100, progress=False)
    error = np.abs(np.asarray(out) - ode_solution(x_T, name, 100)).max()
    assert error < tolerance, f"{name}: max error {error:.3g} against the exact ODE solution"


def _ode_error(sampler, name, steps, discretize=None):
    grid = sampling.sampling_grid(SCHEDULE, name, steps, discretize)
    (m0, s0), (m1, s1) = marginal(float(grid.alphas[0])), marginal(float(grid.alphas_prev[-1]))
    x_start = m0 + s0 * np.asarray(jax.random.normal(jax.random.PRNGKey(0), SHAPE))
    out = sampler(PARAMS, jnp.asarray(x_start / float(grid.start_scale), jnp.float32), None, sampler=name,
                  steps=steps, discretize=discretize, progress=False)
    return np.abs(np.asarray(out) - (m1 + s1 * (x_start - m0) / s0)).mean()


def test_dpm_solver_converges_faster_than_ddim(sampler):
    # On one grid (the reference's, which ends short of the data, so no final jump to sigma 0 blurs
    # the comparison), second order against first: doubling the steps cuts DPM-Solver++'s error by more.
    dpm_50, dpm_100 = (_ode_error(sampler, "dpm_solver++", steps, "uniform") for steps in (50, 100))
    ddim_50, ddim_100 = (_ode_error(sampler, "ddim", steps, "uniform") for steps in (50, 100))
    assert dpm_50 / dpm_100 > 2.5 and ddim_50 / ddim_100 < 2.2 and dpm_50 < ddim_50 / 1.25


# Ancestral sampling with the posterior mean of x0 (no x0 variance) slightly underestimates the
# variance on coarse grids (about 1-3% here), so these use many steps.
@pytest.mark.parametrize("name, steps, eta", [("ddim", 250, 1.0), ("ddpm", 500, 0.0), ("euler", 250, 1.0)])
def test_stochastic_samplers_reach_the_data_distribution(sampler, name, steps, eta):
    x_T = exact_start(name, steps)
    out = np.asarray(sampler(PARAMS, x_T, None, sampler=name, steps=steps, eta=eta, seed=3, progress=False))
    mean, std = marginal(start_and_end(name, steps)[1])
    assert abs(out.mean() - mean) < 0.02 and abs(out.std() - std) < 0.03, (out.mean(), mean, out.std(), std)
    # The noise really is ancestral: the result is not the deterministic ODE map.
    assert np.abs(out - ode_solution(x_T, name, steps)).max() > 0.1


def test_guidance_extrapolates_the_conditional_mean(sampler):
    cond, uncond = {"shift": jnp.full((SHAPE[0],), 0.2)}, {"shift": jnp.zeros((SHAPE[0],))}
    x_T = exact_start("ddim", 50)
    for scale in (1.0, 3.0):
        out = np.asarray(sampler(PARAMS, x_T, cond, uncond, steps=50, guidance_scale=scale, progress=False))
        expected = marginal(start_and_end("ddim", 50)[1], MU + scale * 0.2)[0]
        assert abs(out.mean() - expected) < 0.03, (scale, out.mean(), expected)


def test_noise_replay_and_seeds(sampler):
    x_T = exact_start("ddim", 10)
    noise = jax.random.normal(jax.random.PRNGKey(7), (10, *SHAPE))
    run = lambda **kw: np.asarray(sampler(PARAMS, x_T, None, steps=10, eta=1.0, progress=False, **kw))  # noqa: E731
    np.testing.assert_array_equal(run(noise=noise, seed=1), run(noise=noise, seed=2))  # noise wins over seed
    np.testing.assert_array_equal(run(seed=1), run(seed=1))
    assert np.abs(run(seed=1) - run(seed=2)).max() > 0.1
    assert np.abs(run(noise=noise) - run(noise=-noise)).max() > 0.1
    with pytest.raises(ValueError, match="noise must have shape"):
        run(noise=noise[:9])


def test_traced_knobs_do_not_recompile():
    sampler = sampling.LatentSampler(gaussian_eps, SCHEDULE)
    x_T = exact_start("ddim", 10)
    cond, uncond = {"shift": jnp.ones((SHAPE[0],))}, {"shift": jnp.zeros((SHAPE[0],))}
    init = jnp.zeros(SHAPE)
    for i, (scale, eta, strength) in enumerate([(1.0, 0.0, 1.0), (3.0, 1.0, 0.5), (7.5, 0.3, 0.0), (2, 0, 1)]):
        params = {"mu": jnp.float32(i), "s2": jnp.float32(0.1 + i)}
        sampler(params, x_T + i, cond, uncond, steps=10, guidance_scale=scale, eta=eta, seed=i,
                init_latents=init + i, strength=strength, progress=False)
    assert sampler.trace_count == 1
    sampler(PARAMS, x_T, cond, uncond, steps=11, progress=False)  # a new number of steps compiles once more
    assert sampler.trace_count == 2


def _count_model_calls(name, steps, **kwargs):
    calls = []

    def model_fn(params, x, t, cond):
        jax.debug.callback(lambda tt: calls.append(tt[0].item()), t, ordered=True)
        return gaussian_eps(params, x, t, cond)

    out = sampling.LatentSampler(model_fn, SCHEDULE)(PARAMS, exact_start(name, steps), None, sampler=name,
                                                    steps=steps, progress=False, **kwargs)
    jax.effects_barrier()
    return np.asarray(out), calls


def test_img2img_strength():
    init = jnp.asarray(np.random.default_rng(0).normal(MU, 0.5, SHAPE), jnp.float32)
    out, calls = _count_model_calls("ddim", 10, init_latents=init, strength=0.0)
    np.testing.assert_array_equal(out, init)
    assert calls == []
    out, calls = _count_model_calls("ddim", 10, init_latents=init, strength=0.5)
    assert calls == [401, 301, 201, 101, 1]  # t_enc = 5 steps, from ddim_timesteps[t_enc - 1] down
    corr = lambda a, b: np.corrcoef(np.ravel(a), np.ravel(b))[0, 1]  # noqa: E731
    assert corr(out, init) > 0.2 and np.abs(out - init).max() > 0.05  # keeps some of the input, yet changes it
    plain, _ = _count_model_calls("plms", 10)
    full, calls = _count_model_calls("plms", 10, init_latents=init, strength=1.0)
    np.testing.assert_array_equal(full, plain)
    assert abs(np.corrcoef(np.ravel(full), np.ravel(init))[0, 1]) < 0.1  # strength 1 ignores the input
    assert calls[:3] == [901, 801, 801]  # PLMS: two calls in its first step


def test_latent_blending_keeps_the_known_region():
    init = jnp.asarray(np.random.default_rng(1).normal(size=SHAPE), jnp.float32)
    mask = jnp.zeros(SHAPE[:3] + (1,)).at[:, 2:6, 2:6].set(1.0)  # 1 = generate
    sampler = sampling.LatentSampler(gaussian_eps, SCHEDULE)
    x_T = exact_start("ddim", 10)
    out, inter = sampler(PARAMS, x_T, None, steps=10, init_latents=init, mask=mask, seed=0,
                         return_intermediates=True, progress=False)
    out, keep = np.asarray(out), np.asarray(mask) == 0
    np.testing.assert_array_equal(np.where(keep, out, 0), np.where(keep, np.asarray(init), 0))
    moved = np.abs(out - np.asarray(init))[np.broadcast_to(~keep, SHAPE)]
    assert (moved > 1e-3).mean() > 0.99  # generated inside: (almost) every value there left the input
    inside = out[np.broadcast_to(~keep, SHAPE)]
    assert abs(inside.mean() - marginal(start_and_end("ddim", 10)[1])[0]) < 0.05
    assert inter["x_inter"].shape == (11, *SHAPE)
    again = sampler(PARAMS, x_T, None, steps=10, init_latents=init, mask=mask, seed=0, progress=False)
    np.testing.assert_array_equal(out, np.asarray(again))


def test_intermediates_start_with_x_T(sampler):
    x_T = exact_start("dpm_solver++", 10)
    out, inter = sampler(PARAMS, x_T, None, sampler="dpm_solver++", steps=10, return_intermediates=True,
                         progress=False)
    for key in ("x_inter", "pred_x0"):
        assert inter[key].shape == (11, *SHAPE)
        np.testing.assert_array_equal(inter[key][0], x_T)
    np.testing.assert_array_equal(inter["x_inter"][-1], out)


def test_progress_bar_reports_every_step(monkeypatch):
    seen = []
    sampler = sampling.LatentSampler(gaussian_eps, SCHEDULE)
    original = ScanProgressBar.update
    monkeypatch.setattr(ScanProgressBar, "update", lambda self, i, n: (seen.append(int(i)), original(self, i, n)))
    sampler(PARAMS, exact_start("ddim", 10), None, steps=10, progress=True)
    jax.effects_barrier()
    assert sorted(seen) == list(range(10))
    seen.clear()
    sampler(PARAMS, exact_start("ddim", 10), None, steps=10, progress=False)
    jax.effects_barrier()
    assert seen == []


def test_unknown_sampler():
    with pytest.raises(ValueError, match="unknown sampler"):
        sampling.LatentSampler(gaussian_eps, SCHEDULE)(PARAMS, jnp.zeros(SHAPE), None, sampler="heun")
