"""The stand-in for a UNet that sampler parity tests (and the reference fixture generator) share, our
run of it (the timesteps the model is called at, its input latents at every step, and the result) and
the comparison of such a trajectory with a reference's."""
import jax
import jax.numpy as jnp
import numpy as np

from ldm_jax.diffusion import sampling
from ldm_jax.diffusion.schedule import DiffusionSchedule

# Stable Diffusion's schedule (scaled_linear 0.00085 -> 0.012 over 1000 steps).
SCHEDULE = DiffusionSchedule.create("linear", 1000, 0.00085, 0.012)
SHAPE = (2, 4, 6, 6)


def model(x, t, xp):
    """Smooth, elementwise in x, defined at any real t (xp: jnp, np or torch)."""
    t = t.reshape(-1, *([1] * (x.ndim - 1)))
    return 0.8 * xp.tanh(x * (1 + 0.5 * xp.cos(t / 150))) + 0.3 * xp.sin(t / 97 + x)


def run_ours(sampler, steps, discretize, parameterization, x_T, *, eta=0.0, noise=None):
    """(timesteps, model inputs (steps, *x_T.shape), final latents) of our sampler on `model`."""
    times, inputs = [], []

    def record(t, x):
        times.append(float(t[0]))
        inputs.append(np.asarray(x))

    def model_fn(params, x, t, cond):
        jax.debug.callback(record, t, x, ordered=True)
        return model(x, t.astype(jnp.float32), jnp)

    run = sampling.LatentSampler(model_fn, SCHEDULE, parameterization=parameterization)
    out = run(None, jnp.asarray(x_T), None, sampler=sampler, steps=steps, discretize=discretize, eta=eta,
              noise=None if noise is None else jnp.asarray(noise[:steps]), progress=False)
    jax.effects_barrier()
    return np.asarray(times), np.stack(inputs), np.asarray(out)


def assert_same_trajectory(ours, reference):
    """(timesteps, model inputs, result) of ours against the reference's: timesteps to 1e-3, latents to
    1e-4 x max(1, max|reference|)."""
    (times, inputs, got), (want_times, want_inputs, want) = ours, reference
    np.testing.assert_allclose(times, want_times, rtol=0, atol=1e-3)
    bound = 1e-4 * max(1.0, float(np.abs(want).max()), float(np.abs(want_inputs).max()))
    np.testing.assert_allclose(inputs, want_inputs, rtol=0, atol=bound)
    np.testing.assert_allclose(got, want, rtol=0, atol=bound)
