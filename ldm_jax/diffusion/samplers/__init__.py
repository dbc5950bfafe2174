"""Samplers as pure step functions over a `SamplingGrid`, run by `ldm_jax.diffusion.sampling`.

Each module exposes `SAMPLER`, a `SamplerSpec`: how to build its grid, its initial state (a
flax.struct.dataclass), and `step(state, x, i, denoise, grid, eta, noise) -> (state, x_next, pred_x0)`
where `denoise(x, j) -> (eps, pred_x0)` runs the guided model at grid position j and `noise` is
this step's N(0, 1) draw (scaled by the sampler itself).
"""
from typing import Any, Callable, NamedTuple


class SamplerSpec(NamedTuple):
    name: str
    make_grid: Callable[..., Any]       # (alphas_cumprod, num_steps, discretize) -> SamplingGrid
    init_state: Callable[[Any], Any]    # x -> state
    step: Callable[..., Any]
    stochastic: bool                    # draws noise (with eta > 0 for DDIM / Euler)
    default_spacing: str                # `discretize` when none is given: whom it matches by default
