"""Euler (Karras et al. 2022 / k-diffusion) in sigma space, with ancestral noise when eta > 0.

With sigma = sqrt((1 - a) / a) and x~ = x / sqrt(a), the probability-flow ODE is dx~/dsigma = eps.
eta = 0 is the plain Euler step; eta > 0 is Euler ancestral: step down to sigma_down, then add
sigma_up * z (k-diffusion's get_ancestral_step; eta = 1 is diffusers' `EulerAncestralDiscreteScheduler`).
By default the grid is diffusers' `EulerDiscreteScheduler`'s as made from Stable Diffusion's scheduler
config (linspace: fractional timesteps, sigma interpolated, a last step to sigma 0, and x_T scaled to
its initial noise sigma); on the reference's DDIM grid ("uniform") sqrt(a_next) * sigma_up is exactly
DDIM's sigma for the same eta, so Euler and DDIM differ only by rounding there.
"""
import flax
import jax.numpy as jnp

from ldm_jax.diffusion.samplers import SamplerSpec
from ldm_jax.diffusion.timesteps import SamplingGrid, euler_grid


@flax.struct.dataclass
class EulerState:
    """Euler keeps no history."""


def init_state(x) -> EulerState:
    return EulerState()


def step(state: EulerState, x, i, denoise, grid: SamplingGrid, eta, noise):
    eps, x0 = denoise(x, i)
    a_t, a_next = grid.alphas[i], grid.alphas_prev[i]
    sigma = jnp.sqrt((1 - a_t) / a_t)
    sigma_next = jnp.sqrt((1 - a_next) / a_next)
    sigma_up = jnp.minimum(sigma_next, eta * jnp.sqrt(sigma_next ** 2 * (sigma ** 2 - sigma_next ** 2) / sigma ** 2))
    sigma_down = jnp.sqrt(sigma_next ** 2 - sigma_up ** 2)
    x_scaled = x / jnp.sqrt(a_t) + (sigma_down - sigma) * eps + sigma_up * noise
    return state, jnp.sqrt(a_next) * x_scaled, x0


SAMPLER = SamplerSpec("euler", euler_grid, init_state, step, stochastic=True, default_spacing="linspace")
