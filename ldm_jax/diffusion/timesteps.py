"""The timestep grids samplers walk, with the reference's DDIM schedule arithmetic.

`make_ddim_timesteps` / `make_ddim_sampling_parameters` reproduce the reference functions bit for
bit (including the uniform spacing's `range(0, T, T // S) + 1`, which yields MORE than S steps when
T % S != 0). `SamplingGrid` packs what a sampler needs per step, in sampling order (noisiest first).
"""
from typing import Literal

import flax
import jax.numpy as jnp
import numpy as np

Discretization = Literal["uniform", "quad"]


def make_ddim_timesteps(discretize: Discretization, num_ddim_timesteps: int,
                        num_ddpm_timesteps: int) -> np.ndarray:
    """Ascending int64 DDIM timesteps, shifted by one as the reference does (alphas at t=0 are dropped)."""
    if num_ddim_timesteps < 1 or num_ddim_timesteps > num_ddpm_timesteps:
        raise ValueError(f"number of DDIM steps must be in [1, {num_ddpm_timesteps}], got {num_ddim_timesteps}")
    if discretize == "uniform":
        steps = np.asarray(list(range(0, num_ddpm_timesteps, num_ddpm_timesteps // num_ddim_timesteps)))
    elif discretize == "quad":
        steps = (np.linspace(0, np.sqrt(num_ddpm_timesteps * 0.8), num_ddim_timesteps) ** 2).astype(int)
    else:
        raise ValueError(f"unknown DDIM discretization {discretize!r}; expected 'uniform' or 'quad'")
    steps = steps.astype(np.int64) + 1
    if steps[-1] >= num_ddpm_timesteps:  # S == T: the +1 shift would index past the schedule
        raise ValueError(f"{num_ddim_timesteps} {discretize} DDIM steps reach timestep {steps[-1]} >= "
                         f"{num_ddpm_timesteps}; use fewer steps (or the ddpm sampler for all of them)")
    return steps


def make_ddim_sampling_parameters(alphas_cumprod, ddim_timesteps: np.ndarray, eta: float
                                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(sigmas float64, alphas float32, alphas_prev float64) as the reference computes them.

    `alphas` index the float32 schedule; `alphas_prev` and `sigmas` are float64 math on those
    float32 values (the reference casts each per-step scalar to float32 only when it uses it).
    """
    alphacums = np.asarray(alphas_cumprod, np.float32)
    alphas = alphacums[ddim_timesteps]
    alphas_prev = np.asarray([alphacums[0]] + alphacums[ddim_timesteps[:-1]].tolist(), np.float64)
    # The reference divides a float64 numpy array by a float32 tensor, which torch evaluates as
    # reciprocal(1 - alphas) in float32 times the float64 numerator; reproduce that rounding.
    reciprocal = (np.float32(1) / (np.float32(1) - alphas)).astype(np.float64)
    sigmas = eta * np.sqrt((1 - alphas_prev) * reciprocal * (1 - alphas.astype(np.float64) / alphas_prev))
    return sigmas, alphas, alphas_prev


def make_ddpm_timesteps(num_steps: int, num_ddpm_timesteps: int) -> np.ndarray:
    """Ascending timesteps for ancestral DDPM: all of 0..T-1 when num_steps == T, else an even subset."""
    if num_steps < 1 or num_steps > num_ddpm_timesteps:
        raise ValueError(f"number of DDPM steps must be in [1, {num_ddpm_timesteps}], got {num_steps}")
    return np.unique(np.round(np.linspace(0, num_ddpm_timesteps - 1, num_steps)).astype(np.int64))


@flax.struct.dataclass
class SamplingGrid:
    """Per-step float32 coefficients in sampling order: step i goes from `timesteps[i]` to the previous level.

    `sigma_unit` is the DDIM sigma for eta=1; a run with eta uses eta * sigma_unit (eta stays traced).
    """
    timesteps: jnp.ndarray          # (S,) int32, descending
    alphas: jnp.ndarray             # alpha_bar at timesteps[i]
    alphas_prev: jnp.ndarray        # alpha_bar of the level step i lands on
    sqrt_one_minus_alphas: jnp.ndarray
    sigma_unit: jnp.ndarray

    @property
    def num_steps(self) -> int:
        return self.timesteps.shape[0]


def ddim_grid(alphas_cumprod, num_steps: int, discretize: Discretization = "uniform") -> SamplingGrid:
    """The DDIM / PLMS grid of the reference (its number of entries may exceed `num_steps`)."""
    alphacums = np.asarray(alphas_cumprod, np.float32)
    timesteps = make_ddim_timesteps(discretize, num_steps, alphacums.shape[0])
    sigma_unit, alphas, alphas_prev = make_ddim_sampling_parameters(alphacums, timesteps, 1.0)
    return _grid(timesteps, alphas, alphas_prev, sigma_unit)


def ddpm_grid(alphas_cumprod, num_steps: int) -> SamplingGrid:
    """The ancestral grid: from t to the previous grid point, the first step landing on alpha_bar=1."""
    alphacums = np.asarray(alphas_cumprod, np.float32)
    timesteps = make_ddpm_timesteps(num_steps, alphacums.shape[0])
    alphas = alphacums[timesteps]
    alphas_prev = np.concatenate([[1.0], alphacums[timesteps[:-1]].astype(np.float64)])
    a = alphas.astype(np.float64)
    sigma_unit = np.sqrt((1 - alphas_prev) / (1 - a) * (1 - a / alphas_prev))
    return _grid(timesteps, alphas, alphas_prev, sigma_unit)


def _grid(timesteps, alphas, alphas_prev, sigma_unit) -> SamplingGrid:
    order = slice(None, None, -1)  # sampling runs from the noisiest timestep down
    alphas = np.asarray(alphas, np.float32)
    return SamplingGrid(
        timesteps=jnp.asarray(timesteps[order], jnp.int32),
        alphas=jnp.asarray(alphas[order]),
        alphas_prev=jnp.asarray(np.asarray(alphas_prev, np.float64)[order].astype(np.float32)),
        # The reference takes sqrt(1 - a) of the float32 alphas in float32.
        sqrt_one_minus_alphas=jnp.asarray(np.sqrt(np.float32(1) - alphas)[order]),
        sigma_unit=jnp.asarray(np.asarray(sigma_unit, np.float64)[order].astype(np.float32)))
