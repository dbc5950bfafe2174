"""DPM-Solver++(2M) (Lu et al. 2022): multistep second order, data (x0) prediction, deterministic.

In log-SNR time lambda = log(sqrt(a) / sqrt(1 - a)) with h = lambda_next - lambda:
x_next = (sigma_next / sigma) x - alpha_next (exp(-h) - 1) D, where D = (1 + 1/(2r)) x0 - 1/(2r) x0_prev
(r = h_prev / h, the "midpoint" form), or D = x0 on a first-order step. As diffusers'
`DPMSolverMultistepScheduler` (made from Stable Diffusion's scheduler config: dpmsolver++, order 2,
linspace spacing, final sigma 0, lower_order_final), the first step is first order, and so is the last
when it lands on the data (then on x0 itself) or when there are fewer than 15 steps.
"""
import flax
import jax
import jax.numpy as jnp

from ldm_jax.diffusion.samplers import SamplerSpec
from ldm_jax.diffusion.timesteps import SamplingGrid, dpm_solver_grid

# diffusers' lower_order_final: below this many steps the last step is first order.
LOWER_ORDER_FINAL_BELOW = 15


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
    h = _log_snr(a_next) - _log_snr(a_t)  # infinite on a last step to alpha_bar = 1
    r = state.prev_h / h
    second_order = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * state.prev_x0
    last = grid.num_steps - 1
    few = grid.num_steps < LOWER_ORDER_FINAL_BELOW
    first_order = (state.count == 0) | ((i == last) & ((a_next == 1) | few))
    d = jax.lax.select(first_order, x0, second_order)
    x_next = jnp.sqrt((1 - a_next) / (1 - a_t)) * x - jnp.sqrt(a_next) * jnp.expm1(-h) * d
    return DPMSolverState(prev_x0=x0, prev_h=h, count=state.count + 1), x_next, x0


SAMPLER = SamplerSpec("dpm_solver++", dpm_solver_grid, init_state, step, stochastic=False,
                      default_spacing="linspace")
