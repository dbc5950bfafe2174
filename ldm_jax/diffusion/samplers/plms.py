"""PLMS (pseudo linear multistep, Liu et al. 2022) as the reference `PLMSSampler.p_sample_plms`.

The first step is a pseudo improved Euler step that calls the model twice (at t and at the next
timestep); later steps combine up to four past eps with Adams-Bashforth weights. Deterministic.
"""
import flax
import jax
import jax.numpy as jnp

from ldm_jax.diffusion.samplers import SamplerSpec
from ldm_jax.diffusion.samplers.ddim import ddim_update
from ldm_jax.diffusion.timesteps import SamplingGrid, ddim_grid


@flax.struct.dataclass
class PLMSState:
    old_eps: jnp.ndarray   # (3, *x.shape): the last three eps, most recent first
    count: jnp.ndarray     # how many of them are valid (0..3)


def init_state(x) -> PLMSState:
    return PLMSState(old_eps=jnp.zeros((3, *x.shape), x.dtype), count=jnp.zeros((), jnp.int32))


def step(state: PLMSState, x, i, denoise, grid: SamplingGrid, eta, noise):
    del eta, noise  # the reference PLMS only supports eta = 0
    alpha_prev = grid.alphas_prev[i]

    def x_prev_and_x0(eps):
        x0 = (x - grid.sqrt_one_minus_alphas[i] * eps) / jnp.sqrt(grid.alphas[i])
        return ddim_update(x0, eps, alpha_prev, 0.0, 0.0), x0

    eps, _ = denoise(x, i)
    e1, e2, e3 = state.old_eps[0], state.old_eps[1], state.old_eps[2]

    def first(_):  # pseudo improved Euler: a second model call at the next timestep
        x_prev, _ = x_prev_and_x0(eps)
        eps_next, _ = denoise(x_prev, jnp.minimum(i + 1, grid.num_steps - 1))
        return (eps + eps_next) / 2

    def multistep(_):
        return jax.lax.switch(state.count - 1, [
            lambda: (3 * eps - e1) / 2,
            lambda: (23 * eps - 16 * e1 + 5 * e2) / 12,
            lambda: (55 * eps - 59 * e1 + 37 * e2 - 9 * e3) / 24])

    eps_prime = jax.lax.cond(state.count == 0, first, multistep, None)
    x_prev, x0 = x_prev_and_x0(eps_prime)
    old_eps = jnp.stack([eps, e1, e2])
    return PLMSState(old_eps=old_eps, count=jnp.minimum(state.count + 1, 3)), x_prev, x0


SAMPLER = SamplerSpec("plms", ddim_grid, init_state, step, stochastic=False, default_spacing="uniform")
