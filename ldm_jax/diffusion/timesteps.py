"""The timestep grids samplers walk: the CompVis reference's, diffusers', k-diffusion's and DPM-Solver's spacings.

The spacing is chosen with a sampler's `discretize` argument:
- the reference's (`"uniform"`, `"quad"`): `make_ddim_timesteps` / `make_ddim_sampling_parameters`
  reproduce `ldm.modules.diffusionmodules.util` bit for bit, including the uniform spacing's
  `range(0, T, T // S) + 1`, which gives MORE than S steps when T % S != 0 (30 -> 31) and cannot do
  some S at all (9 reaches t = T);
- diffusers' `timestep_spacing` (`"leading"`, `"trailing"`, `"linspace"`), exactly S steps for any
  S <= T, laid out as each diffusers scheduler lays them out from Stable Diffusion's scheduler config
  (`steps_offset=1`): `DDIMScheduler` / `DDPMScheduler`, `DPMSolverMultistepScheduler` (S + 1 points,
  the last dropped) and `EulerDiscreteScheduler` (fractional linspace timesteps, sigma interpolated);
- `"k-diffusion"` (euler and dpm_solver++ only): k-diffusion's `CompVisDenoiser.get_sigmas(S)`, the
  grid of its `sample_euler`, `sample_euler_ancestral` and `sample_dpmpp_2m`;
- `"time_uniform"` (dpm_solver++ only): the DPM-Solver reference's `skip_type="time_uniform"`, the grid
  of Stable Diffusion 2's own `DPMSolverSampler`.
`SamplingGrid` packs what a sampler needs per step, in sampling order (noisiest first).
"""
from typing import Any, Literal

import flax
import jax.numpy as jnp
import numpy as np

Discretization = Literal["uniform", "quad", "leading", "trailing", "linspace", "k-diffusion", "time_uniform"]
REFERENCE_SPACINGS = ("uniform", "quad")
DIFFUSERS_SPACINGS = ("leading", "trailing", "linspace")
# Spacings of one solver family, and the samplers that take them.
SOLVER_SPACINGS = {"k-diffusion": ("euler", "dpm_solver++"), "time_uniform": ("dpm_solver++",)}
STEPS_OFFSET = 1  # Stable Diffusion's scheduler config (applies to "leading")


def make_ddim_timesteps(discretize: Discretization, num_ddim_timesteps: int,
                        num_ddpm_timesteps: int) -> np.ndarray:
    """Ascending int64 DDIM timesteps, shifted by one as the reference does (alphas at t=0 are dropped)."""
    _check_steps(num_ddim_timesteps, num_ddpm_timesteps)
    if discretize == "uniform":
        steps = np.asarray(list(range(0, num_ddpm_timesteps, num_ddpm_timesteps // num_ddim_timesteps)))
    elif discretize == "quad":
        steps = (np.linspace(0, np.sqrt(num_ddpm_timesteps * 0.8), num_ddim_timesteps) ** 2).astype(int)
    else:
        raise ValueError(f"unknown DDIM discretization {discretize!r}; expected one of "
                         f"{REFERENCE_SPACINGS + DIFFUSERS_SPACINGS}{_solver_spacings_note()}")
    steps = steps.astype(np.int64) + 1
    if steps[-1] >= num_ddpm_timesteps:  # e.g. S = 9 of T = 1000: the +1 shift indexes past the schedule
        raise ValueError(f"{num_ddim_timesteps} {discretize} DDIM steps reach timestep {steps[-1]} >= "
                         f"{num_ddpm_timesteps}, which the reference's spacing cannot do; use "
                         f"discretize='leading', 'trailing' or 'linspace' (diffusers' spacings, exactly "
                         f"{num_ddim_timesteps} steps)")
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
    _check_steps(num_steps, num_ddpm_timesteps)
    return np.unique(np.round(np.linspace(0, num_ddpm_timesteps - 1, num_steps)).astype(np.int64))


def diffusers_timesteps(spacing: str, num_steps: int, num_train: int, *, extra_point: bool = False,
                        fractional: bool = False) -> np.ndarray:
    """Descending timesteps of a diffusers scheduler with `timestep_spacing=spacing` (float64 values).

    `extra_point`: lay S + 1 points and drop the last, as `DPMSolverMultistepScheduler` does;
    `fractional`: keep linspace's fractional values, as `EulerDiscreteScheduler` does.
    """
    _check_steps(num_steps, num_train)
    points = num_steps + 1 if extra_point else num_steps
    if spacing == "linspace":
        times = np.linspace(0, num_train - 1, points, dtype=np.float32 if fractional else np.float64)
        times = times.astype(np.float64) if fractional else times.round()
        times = times[::-1]
    elif spacing == "leading":
        times = (np.arange(points) * (num_train // points)).round()[::-1] + STEPS_OFFSET
    elif spacing == "trailing":
        times = np.arange(num_train, 0, -num_train / num_steps).round() - 1
    else:
        raise ValueError(f"unknown timestep spacing {spacing!r}; expected one of {DIFFUSERS_SPACINGS}")
    times = times[:num_steps]
    if times[0] >= num_train:
        raise ValueError(f"{num_steps} {spacing} steps reach timestep {times[0]:g} >= {num_train} (the offset "
                         f"of {STEPS_OFFSET}); use discretize='trailing' or 'linspace', or fewer steps")
    return times


def _check_steps(num_steps: int, num_train: int) -> None:
    if num_steps < 1 or num_steps > num_train:
        raise ValueError(f"number of sampling steps must be in [1, {num_train}], got {num_steps}")


@flax.struct.dataclass
class SamplingGrid:
    """Per-step float32 coefficients in sampling order: step i goes from `timesteps[i]` to the previous level.

    `sigma_unit` is the DDIM sigma for eta=1; a run with eta uses eta * sigma_unit (eta stays traced).
    """
    timesteps: jnp.ndarray          # (S,) descending: int32, or float32 on a fractional grid
    alphas: jnp.ndarray             # alpha_bar at timesteps[i]
    alphas_prev: jnp.ndarray        # alpha_bar of the level step i lands on (1 = the data)
    sqrt_one_minus_alphas: jnp.ndarray
    sigma_unit: jnp.ndarray
    start_scale: Any = 1.0          # x_T is scaled by this when sampling starts from noise
    fractional: bool = flax.struct.field(pytree_node=False, default=False)  # float timesteps

    @property
    def num_steps(self) -> int:
        return self.timesteps.shape[0]


def ddim_grid(alphas_cumprod, num_steps: int, discretize: Discretization = "uniform") -> SamplingGrid:
    """The DDIM / PLMS grid: the reference's (whose number of entries may exceed `num_steps`), or
    diffusers' `DDIMScheduler`'s, which steps from t to t - T // S (to alpha_bar[0] below 0)."""
    alphacums = np.asarray(alphas_cumprod, np.float32)
    if discretize in DIFFUSERS_SPACINGS:
        times = diffusers_timesteps(discretize, num_steps, alphacums.shape[0]).astype(np.int64)
        previous = times - alphacums.shape[0] // num_steps
        alphas = alphacums[times]
        alphas_prev = np.where(previous >= 0, alphacums[np.maximum(previous, 0)], alphacums[0])
        return _descending_grid(times, alphas, alphas_prev)
    timesteps = make_ddim_timesteps(discretize, num_steps, alphacums.shape[0])
    sigma_unit, alphas, alphas_prev = make_ddim_sampling_parameters(alphacums, timesteps, 1.0)
    descending = slice(None, None, -1)
    return _grid(timesteps[descending], alphas[descending], alphas_prev[descending], sigma_unit[descending])


def ddpm_grid(alphas_cumprod, num_steps: int, discretize: Discretization = "uniform") -> SamplingGrid:
    """The ancestral grid, from t to the next grid point and to alpha_bar = 1 at the end: every
    timestep of the reference `p_sample_loop` (or an even subset) for "uniform", diffusers'
    `DDPMScheduler` for its spacings."""
    alphacums = np.asarray(alphas_cumprod, np.float32)
    if discretize in DIFFUSERS_SPACINGS:
        times = diffusers_timesteps(discretize, num_steps, alphacums.shape[0]).astype(np.int64)
    elif discretize == "uniform":
        times = make_ddpm_timesteps(num_steps, alphacums.shape[0])[::-1]
    else:
        raise ValueError(f"the ddpm sampler takes discretize 'uniform' or one of {DIFFUSERS_SPACINGS}, "
                         f"got {discretize!r}{_solver_spacings_note()}")
    return _chain_grid(times, alphacums[times])


def dpm_solver_grid(alphas_cumprod, num_steps: int, discretize: Discretization = "linspace") -> SamplingGrid:
    """DPM-Solver++'s grid: diffusers' `DPMSolverMultistepScheduler` (ending at sigma = 0, i.e.
    alpha_bar = 1) for its spacings, k-diffusion's or DPM-Solver's `time_uniform` grid, the DDIM grid for
    the reference's."""
    if discretize == "k-diffusion":
        return kdiffusion_grid(alphas_cumprod, num_steps)
    if discretize == "time_uniform":
        return time_uniform_grid(alphas_cumprod, num_steps)
    if discretize not in DIFFUSERS_SPACINGS:
        return ddim_grid(alphas_cumprod, num_steps, discretize)
    alphacums = np.asarray(alphas_cumprod, np.float32)
    times = diffusers_timesteps(discretize, num_steps, alphacums.shape[0], extra_point=True).astype(np.int64)
    return _chain_grid(times, alphacums[times])


def euler_grid(alphas_cumprod, num_steps: int, discretize: Discretization = "linspace") -> SamplingGrid:
    """Euler's grid: diffusers' `EulerDiscreteScheduler` for its spacings (sigma = sqrt((1 - a) / a)
    interpolated linearly at fractional timesteps, ending at sigma = 0, and its initial noise sigma:
    sigma_max for linspace / trailing, sqrt(sigma_max^2 + 1) for leading); k-diffusion's; the DDIM grid
    otherwise."""
    if discretize == "k-diffusion":
        return kdiffusion_grid(alphas_cumprod, num_steps)
    if discretize not in DIFFUSERS_SPACINGS:
        return ddim_grid(alphas_cumprod, num_steps, discretize)
    alphacums = np.asarray(alphas_cumprod, np.float32)
    times = diffusers_timesteps(discretize, num_steps, alphacums.shape[0], fractional=True)
    sigma_table = np.sqrt((1 - alphacums) / alphacums)
    sigmas = np.interp(times, np.arange(alphacums.shape[0]), sigma_table).astype(np.float32)
    alphas = 1 / (1 + sigmas.astype(np.float64) ** 2)
    # x_T ~ N(0, 1) stands for diffusers' noise * init_noise_sigma in sigma space: x = x_sigma sqrt(a).
    start_scale = np.sqrt(1 - alphas[0]) if discretize in ("linspace", "trailing") else 1.0
    return _chain_grid(times, alphas, start_scale=start_scale, fractional=discretize == "linspace")


def kdiffusion_grid(alphas_cumprod, num_steps: int) -> SamplingGrid:
    """k-diffusion's `DiscreteSchedule.get_sigmas(S)` over a `CompVisDenoiser`: S fractional timesteps
    linspace(T - 1, 0), sigma interpolated linearly in log sigma between the discrete levels (diffusers'
    Euler interpolates sigma itself), then sigma = 0; x_T ~ N(0, sigma_max^2) in sigma space."""
    alphacums = np.asarray(alphas_cumprod, np.float32)
    _check_steps(num_steps, alphacums.shape[0])
    times = np.linspace(alphacums.shape[0] - 1, 0, num_steps, dtype=np.float32)
    log_sigmas = np.log(np.sqrt((1 - alphacums) / alphacums))
    low, high = np.floor(times).astype(np.int64), np.ceil(times).astype(np.int64)
    weight = times - low
    sigmas = np.exp((1 - weight) * log_sigmas[low] + weight * log_sigmas[high]).astype(np.float64)
    alphas = 1 / (1 + sigmas ** 2)
    return _chain_grid(times, alphas, start_scale=np.sqrt(1 - alphas[0]), fractional=True)


def time_uniform_grid(alphas_cumprod, num_steps: int) -> SamplingGrid:
    """DPM-Solver's `time_uniform` steps of a discrete schedule, as SD 2's `DPMSolverSampler` takes them:
    S + 1 continuous times linspace(1, 1/T), the model called at T (t - 1/T) (fractional, T - 1 down to
    0), log sqrt(alpha_bar) interpolated linearly in t; the last step lands on alpha_bar[0], not the data."""
    alphacums = np.asarray(alphas_cumprod, np.float32)
    num_train = alphacums.shape[0]
    _check_steps(num_steps, num_train)
    continuous = np.linspace(1.0, 1.0 / num_train, num_steps + 1, dtype=np.float32)
    times = ((continuous - np.float32(1.0 / num_train)) * np.float32(num_train)).astype(np.float32)
    levels = np.linspace(0.0, 1.0, num_train + 1, dtype=np.float32)[1:]
    log_alphas = np.interp(continuous, levels, 0.5 * np.log(alphacums.astype(np.float64)))
    alphas = np.exp(2 * log_alphas)
    return _descending_grid(times[:-1], alphas[:-1], alphas[1:], fractional=True)


def _solver_spacings_note() -> str:
    return "".join(f"; {name!r} is for {' and '.join(samplers)} only" for name, samplers in SOLVER_SPACINGS.items())


def _chain_grid(times, alphas, start_scale=1.0, fractional=False) -> SamplingGrid:
    """A descending grid whose step i lands on grid point i + 1, and the last on the data (alpha_bar = 1)."""
    alphas = np.asarray(alphas, np.float64)
    return _descending_grid(times, alphas, np.concatenate([alphas[1:], [1.0]]), start_scale, fractional)


def _descending_grid(times, alphas, alphas_prev, start_scale=1.0, fractional=False) -> SamplingGrid:
    """The grid of descending timesteps, with the DDIM sigma (eta = 1) of each step."""
    alphas, alphas_prev = np.asarray(alphas, np.float64), np.asarray(alphas_prev, np.float64)
    sigma_unit = np.sqrt((1 - alphas_prev) / (1 - alphas) * (1 - alphas / alphas_prev))
    return _grid(times, alphas, alphas_prev, sigma_unit, start_scale, fractional)


def _grid(timesteps, alphas, alphas_prev, sigma_unit, start_scale=1.0, fractional=False) -> SamplingGrid:
    """Packs per-step arrays given in sampling order (noisiest first) as float32."""
    alphas = np.asarray(alphas, np.float32)
    return SamplingGrid(
        timesteps=jnp.asarray(np.asarray(timesteps), jnp.float32 if fractional else jnp.int32),
        alphas=jnp.asarray(alphas),
        alphas_prev=jnp.asarray(np.asarray(alphas_prev, np.float64).astype(np.float32)),
        # The reference takes sqrt(1 - a) of the float32 alphas in float32.
        sqrt_one_minus_alphas=jnp.asarray(np.sqrt(np.float32(1) - alphas)),
        sigma_unit=jnp.asarray(np.asarray(sigma_unit, np.float64).astype(np.float32)),
        start_scale=jnp.float32(start_scale), fractional=fractional)
