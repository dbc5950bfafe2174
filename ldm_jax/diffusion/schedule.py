"""Noise schedules and the DDPM buffers derived from them, as the reference `register_schedule`.

Everything is computed in float64 numpy and stored in float32, exactly like the reference's
buffers (the 12 persistent ones appear in every CompVis checkpoint under the same names).
"""
import math
from typing import Literal

import flax
import jax.numpy as jnp
import numpy as np

BetaSchedule = Literal["linear", "cosine", "sqrt_linear", "sqrt"]
Parameterization = Literal["eps", "x0", "v"]

# The persistent buffers, by their checkpoint key names.
CHECKPOINT_BUFFERS = (
    "betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod",
    "sqrt_one_minus_alphas_cumprod", "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod",
    "sqrt_recipm1_alphas_cumprod", "posterior_variance", "posterior_log_variance_clipped",
    "posterior_mean_coef1", "posterior_mean_coef2",
)


def make_beta_schedule(schedule: BetaSchedule, num_timesteps: int, linear_start: float = 1e-4,
                       linear_end: float = 2e-2, cosine_s: float = 8e-3) -> np.ndarray:
    """The float64 betas of the reference `make_beta_schedule`."""
    if schedule == "linear":  # LDM's "linear" is linear in sqrt(beta)
        return _torch_linspace(linear_start ** 0.5, linear_end ** 0.5, num_timesteps) ** 2
    if schedule == "cosine":
        steps = np.arange(num_timesteps + 1, dtype=np.float64) / num_timesteps + cosine_s
        alphas = np.cos(steps / (1 + cosine_s) * math.pi / 2) ** 2
        alphas = alphas / alphas[0]
        return np.clip(1 - alphas[1:] / alphas[:-1], 0, 0.999)
    if schedule == "sqrt_linear":
        return _torch_linspace(linear_start, linear_end, num_timesteps)
    if schedule == "sqrt":
        return _torch_linspace(linear_start, linear_end, num_timesteps) ** 0.5
    raise ValueError(f"unknown beta_schedule {schedule!r}; expected linear, cosine, sqrt_linear or sqrt")


def _torch_linspace(start: float, end: float, num: int) -> np.ndarray:
    """torch.linspace in float64: the first half steps up from `start`, the second down from `end`."""
    if num == 1:
        return np.array([start], np.float64)
    step = (end - start) / (num - 1)
    index = np.arange(num, dtype=np.float64)
    halfway = num // 2
    return np.where(index < halfway, start + step * index, end - step * (num - 1 - index))


@flax.struct.dataclass
class DiffusionSchedule:
    """The DDPM buffers, float32 arrays of length `num_timesteps`, indexable by timestep."""

    betas: jnp.ndarray
    alphas_cumprod: jnp.ndarray
    alphas_cumprod_prev: jnp.ndarray
    sqrt_alphas_cumprod: jnp.ndarray
    sqrt_one_minus_alphas_cumprod: jnp.ndarray
    log_one_minus_alphas_cumprod: jnp.ndarray
    sqrt_recip_alphas_cumprod: jnp.ndarray
    sqrt_recipm1_alphas_cumprod: jnp.ndarray
    posterior_variance: jnp.ndarray
    posterior_log_variance_clipped: jnp.ndarray
    posterior_mean_coef1: jnp.ndarray
    posterior_mean_coef2: jnp.ndarray
    lvlb_weights: jnp.ndarray

    @property
    def num_timesteps(self) -> int:
        return self.betas.shape[0]

    @classmethod
    def create(cls, beta_schedule: BetaSchedule = "linear", timesteps: int = 1000,
               linear_start: float = 1e-4, linear_end: float = 2e-2, cosine_s: float = 8e-3,
               v_posterior: float = 0.0, parameterization: Parameterization = "eps",
               given_betas: np.ndarray | None = None) -> "DiffusionSchedule":
        """The reference `DDPM.register_schedule` with the same arguments."""
        if given_betas is not None:
            betas = np.asarray(given_betas, np.float64)
        else:
            betas = make_beta_schedule(beta_schedule, timesteps, linear_start, linear_end, cosine_s)
        alphas = 1.0 - betas
        acp = np.cumprod(alphas)
        acp_prev = np.append(1.0, acp[:-1])
        posterior_variance = (1 - v_posterior) * betas * (1 - acp_prev) / (1 - acp) + v_posterior * betas
        buffers = dict(
            betas=betas, alphas_cumprod=acp, alphas_cumprod_prev=acp_prev,
            sqrt_alphas_cumprod=np.sqrt(acp), sqrt_one_minus_alphas_cumprod=np.sqrt(1 - acp),
            log_one_minus_alphas_cumprod=np.log(1 - acp), sqrt_recip_alphas_cumprod=np.sqrt(1 / acp),
            sqrt_recipm1_alphas_cumprod=np.sqrt(1 / acp - 1), posterior_variance=posterior_variance,
            posterior_log_variance_clipped=np.log(np.maximum(posterior_variance, 1e-20)),
            posterior_mean_coef1=betas * np.sqrt(acp_prev) / (1 - acp),
            posterior_mean_coef2=(1 - acp_prev) * np.sqrt(alphas) / (1 - acp),
        )
        buffers = {name: value.astype(np.float32) for name, value in buffers.items()}
        lvlb = _lvlb_weights(buffers, alphas.astype(np.float32), parameterization)
        return cls(**{name: jnp.asarray(value) for name, value in buffers.items()},
                   lvlb_weights=jnp.asarray(lvlb))

    @classmethod
    def from_config(cls, diffusion) -> "DiffusionSchedule":
        """The schedule of a model config's `diffusion` section (every field the reference reads)."""
        return cls.create(diffusion.beta_schedule, diffusion.timesteps, diffusion.linear_start,
                          diffusion.linear_end, diffusion.cosine_s, v_posterior=diffusion.v_posterior,
                          parameterization=diffusion.parameterization)

    def checkpoint_buffers(self) -> dict[str, np.ndarray]:
        """The persistent buffers under their checkpoint key names."""
        return {name: np.asarray(getattr(self, name)) for name in CHECKPOINT_BUFFERS}


def _lvlb_weights(buffers: dict, alphas: np.ndarray, parameterization: Parameterization) -> np.ndarray:
    # The reference computes these from its float32 buffers, so float32 math here too.
    acp = buffers["alphas_cumprod"]
    if parameterization == "eps":
        with np.errstate(divide="ignore"):  # posterior_variance[0] is 0; entry 0 is replaced below
            weights = buffers["betas"] ** 2 / (2 * buffers["posterior_variance"] * alphas * (1 - acp))
    elif parameterization == "x0":
        weights = 0.5 * np.sqrt(acp) / (2.0 * 1 - acp)  # sic: the reference's "2. * 1 - acp"
    elif parameterization == "v":
        weights = np.ones_like(acp)
    else:
        raise ValueError(f"unknown parameterization {parameterization!r}; expected eps, x0 or v")
    weights = weights.astype(np.float32)
    weights[0] = weights[1]
    return weights
