"""DDIM (Song et al. 2021) as the reference `DDIMSampler.p_sample_ddim`; eta=1 is DDPM-like ancestral."""
import flax
import jax.numpy as jnp

from ldm_jax.diffusion.samplers import SamplerSpec
from ldm_jax.diffusion.timesteps import SamplingGrid, ddim_grid


@flax.struct.dataclass
class DDIMState:
    """DDIM keeps no history."""


def init_state(x) -> DDIMState:
    return DDIMState()


def ddim_update(x0, eps, alpha_prev, sigma, noise):
    """x_prev = sqrt(a_prev) x0 + sqrt(1 - a_prev - sigma^2) eps + sigma z, in the reference's order."""
    dir_xt = jnp.sqrt(1.0 - alpha_prev - sigma ** 2) * eps
    return jnp.sqrt(alpha_prev) * x0 + dir_xt + sigma * noise


def step(state: DDIMState, x, i, denoise, grid: SamplingGrid, eta, noise):
    eps, x0 = denoise(x, i)
    sigma = eta * grid.sigma_unit[i]
    return state, ddim_update(x0, eps, grid.alphas_prev[i], sigma, noise), x0


SAMPLER = SamplerSpec("ddim", ddim_grid, init_state, step, stochastic=True, default_spacing="uniform")
