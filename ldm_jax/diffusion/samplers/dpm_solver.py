"""DPM-Solver++(2M) (Lu et al. 2022): multistep second order, data (x0) prediction, deterministic.

In log-SNR time lambda = log(sqrt(a) / sqrt(1 - a)) with h = lambda_next - lambda:
x_next = (sigma_next / sigma) x - alpha_next (exp(-h) - 1) D, where D = x0 on the first step and
D = (1 + 1/(2r)) x0 - 1/(2r) x0_prev afterwards (r = h_prev / h). It walks the DDIM grid.
"""
import flax
import jax
import jax.numpy as jnp

from ldm_jax.diffusion.samplers import SamplerSpec
from ldm_jax.diffusion.timesteps import SamplingGrid, ddim_grid


@flax.struct.dataclass
class DPMSolverState:
    prev_x0: jnp.ndarray   # the data prediction of the previous step
    prev_h: jnp.ndarray    # the previous step's log-SNR increment
    count: jnp.ndarray     # steps taken so far


def init_state(x) -> DPMSolverState:
    return DPMSolverState(prev_x0=jnp.zeros_like(x), prev_h=jnp.ones((), jnp.float32),
                          count=jnp.zeros((), jnp.int32))


def _log_snr(alpha_bar):
    return 0.5 * (jnp.log(alpha_bar) - jnp.log1p(-alpha_bar))


def step(state: DPMSolverState, x, i, denoise, grid: SamplingGrid, eta, noise):
    del eta, noise
    _, x0 = denoise(x, i)
    a_t, a_next = grid.alphas[i], grid.alphas_prev[i]
    h = _log_snr(a_next) - _log_snr(a_t)
    r = state.prev_h / h
    second_order = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * state.prev_x0
    d = jax.lax.select(state.count > 0, second_order, x0)
    x_next = jnp.sqrt((1 - a_next) / (1 - a_t)) * x - jnp.sqrt(a_next) * jnp.expm1(-h) * d
    return DPMSolverState(prev_x0=x0, prev_h=h, count=state.count + 1), x_next, x0


SAMPLER = SamplerSpec("dpm_solver", ddim_grid, init_state, step, stochastic=False)
