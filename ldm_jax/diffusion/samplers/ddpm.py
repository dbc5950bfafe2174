"""Ancestral DDPM sampling (Ho et al. 2020): x_prev ~ q(x_prev | x_t, x0 = pred_x0).

The posterior is taken between consecutive grid points, the last step landing on the data without
noise. By default the grid is diffusers' `DDPMScheduler`'s (leading spacing, steps_offset 1, as made
from Stable Diffusion's scheduler config); with discretize="uniform" and num_steps == T it walks every
timestep T-1..0 like the reference `p_sample_loop` (clip_denoised=False, as LatentDiffusion samples).
"""
import flax
import jax.numpy as jnp

from ldm_jax.diffusion.samplers import SamplerSpec
from ldm_jax.diffusion.timesteps import SamplingGrid, ddpm_grid


@flax.struct.dataclass
class DDPMState:
    """Ancestral sampling keeps no history."""


def init_state(x) -> DDPMState:
    return DDPMState()


def step(state: DDPMState, x, i, denoise, grid: SamplingGrid, eta, noise):
    del eta
    _, x0 = denoise(x, i)
    a_t, a_prev = grid.alphas[i], grid.alphas_prev[i]
    alpha_step = a_t / a_prev                    # 1 - beta between the two grid points
    coef_x0 = jnp.sqrt(a_prev) * (1.0 - alpha_step) / (1.0 - a_t)
    coef_xt = jnp.sqrt(alpha_step) * (1.0 - a_prev) / (1.0 - a_t)
    mean = coef_x0 * x0 + coef_xt * x
    return state, mean + grid.sigma_unit[i] * noise, x0


SAMPLER = SamplerSpec("ddpm", ddpm_grid, init_state, step, stochastic=True, default_spacing="leading")
