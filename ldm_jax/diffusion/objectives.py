"""Parameterisations (eps, x0, v), the forward process `q_sample`, and the training losses.

Schedule buffers are indexed by integer timesteps `t` of shape (N,) and broadcast over the
remaining (NHWC) axes, like the reference `extract_into_tensor`.
"""
from typing import Literal

import jax
import jax.numpy as jnp

from ldm_jax.diffusion.schedule import DiffusionSchedule, Parameterization

LossType = Literal["l1", "l2"]


def extract(buffer: jax.Array, t: jax.Array, ndim: int) -> jax.Array:
    """buffer[t] shaped (N, 1, ..., 1) to broadcast against an (N, ...) array of rank `ndim`."""
    values = jnp.take(buffer, jnp.asarray(t, jnp.int32))
    return values.reshape(values.shape + (1,) * (ndim - values.ndim))


def q_sample(schedule: DiffusionSchedule, x0: jax.Array, t: jax.Array, noise: jax.Array) -> jax.Array:
    """x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) noise."""
    return (extract(schedule.sqrt_alphas_cumprod, t, x0.ndim) * x0
            + extract(schedule.sqrt_one_minus_alphas_cumprod, t, x0.ndim) * noise)


def predict_start_from_noise(schedule: DiffusionSchedule, x_t, t, noise):
    """x0 from x_t and eps."""
    return (extract(schedule.sqrt_recip_alphas_cumprod, t, x_t.ndim) * x_t
            - extract(schedule.sqrt_recipm1_alphas_cumprod, t, x_t.ndim) * noise)


def predict_eps_from_start(schedule: DiffusionSchedule, x_t, t, x0):
    """eps from x_t and x0 (the inverse of predict_start_from_noise)."""
    return ((extract(schedule.sqrt_recip_alphas_cumprod, t, x_t.ndim) * x_t - x0)
            / extract(schedule.sqrt_recipm1_alphas_cumprod, t, x_t.ndim))


def predict_start_from_z_and_v(schedule: DiffusionSchedule, x_t, t, v):
    """x0 = sqrt(a) x_t - sqrt(1 - a) v."""
    return (extract(schedule.sqrt_alphas_cumprod, t, x_t.ndim) * x_t
            - extract(schedule.sqrt_one_minus_alphas_cumprod, t, x_t.ndim) * v)


def predict_eps_from_z_and_v(schedule: DiffusionSchedule, x_t, t, v):
    """eps = sqrt(a) v + sqrt(1 - a) x_t."""
    return (extract(schedule.sqrt_alphas_cumprod, t, x_t.ndim) * v
            + extract(schedule.sqrt_one_minus_alphas_cumprod, t, x_t.ndim) * x_t)


def get_v(schedule: DiffusionSchedule, x0, noise, t):
    """The v target: sqrt(a) eps - sqrt(1 - a) x0."""
    return (extract(schedule.sqrt_alphas_cumprod, t, x0.ndim) * noise
            - extract(schedule.sqrt_one_minus_alphas_cumprod, t, x0.ndim) * x0)


def training_target(parameterization: Parameterization, schedule: DiffusionSchedule, x0, noise, t):
    """What the network regresses: the noise, the clean latent, or v."""
    if parameterization == "eps":
        return noise
    if parameterization == "x0":
        return x0
    if parameterization == "v":
        return get_v(schedule, x0, noise, t)
    raise ValueError(f"unknown parameterization {parameterization!r}; expected eps, x0 or v")


def elementwise_loss(prediction, target, loss_type: LossType = "l2"):
    """|p - t| or (p - t)^2 per element (the reference `get_loss` with mean=False)."""
    if loss_type == "l1":
        return jnp.abs(prediction - target)
    if loss_type == "l2":
        return jnp.square(prediction - target)
    raise ValueError(f"unknown loss_type {loss_type!r}; expected 'l1' or 'l2'")


def min_snr_weights(schedule: DiffusionSchedule, t, gamma: float, parameterization: Parameterization = "eps"):
    """Min-SNR-gamma loss weights (Hang et al., 2023) of timesteps `t`: min(SNR_t, gamma) as an x0 loss.

    SNR_t = alpha_bar_t / (1 - alpha_bar_t); the x0 error is the eps error times 1 / SNR_t and the v
    error times 1 / (SNR_t + 1), so the weights of those targets are divided accordingly. Clamping
    at gamma stops the nearly noise-free steps from dominating: training spends its effort on the
    noisy steps that decide the layout and the colours.
    """
    alpha_bar = jnp.take(schedule.alphas_cumprod, jnp.asarray(t, jnp.int32))
    snr = alpha_bar / (1.0 - alpha_bar)
    clamped = jnp.minimum(snr, gamma)
    divisors = {"eps": snr, "x0": jnp.ones_like(snr), "v": snr + 1.0}
    if parameterization not in divisors:
        raise ValueError(f"unknown parameterization {parameterization!r}; expected eps, x0 or v")
    return clamped / divisors[parameterization]


def diffusion_loss(schedule: DiffusionSchedule, model_output, target, t, *, loss_type: LossType = "l2",
                   l_simple_weight: float = 1.0, original_elbo_weight: float = 0.0,
                   logvar: jax.Array | None = None, snr_weights: jax.Array | None = None) -> tuple[jax.Array, dict]:
    """The reference `LatentDiffusion.p_losses` combination, as (loss, metrics).

    loss_simple = mean over non-batch axes; with a learned/fixed `logvar` table (per timestep) it is
    loss_simple / exp(logvar_t) + logvar_t. loss = l_simple_weight * mean(loss_simple)
    + original_elbo_weight * mean(lvlb_weights[t] * loss_simple_unweighted) (the VLB term).
    `snr_weights` (N,) (not in the reference; see `min_snr_weights`) scale each sample's loss_simple.
    """
    per_sample = elementwise_loss(model_output, target, loss_type)
    loss_simple = per_sample.reshape(per_sample.shape[0], -1).mean(axis=1)
    metrics = {"loss_simple": loss_simple.mean()}
    loss_gamma = loss_simple if snr_weights is None else loss_simple * snr_weights
    if logvar is not None:
        logvar_t = jnp.take(logvar, t)
        loss_gamma = loss_gamma / jnp.exp(logvar_t) + logvar_t  # on top of the Min-SNR weights, if any
        metrics["loss_gamma"] = loss_gamma.mean()
    loss = l_simple_weight * loss_gamma.mean()
    loss_vlb = (jnp.take(schedule.lvlb_weights, t) * loss_simple).mean()
    metrics["loss_vlb"] = loss_vlb
    loss = loss + original_elbo_weight * loss_vlb
    metrics["loss"] = loss
    return loss, metrics


def p_losses(apply_fn, schedule: DiffusionSchedule, x0, t, noise, *, parameterization: Parameterization = "eps",
             loss_type: LossType = "l2", l_simple_weight: float = 1.0, original_elbo_weight: float = 0.0,
             logvar: jax.Array | None = None, snr_gamma: float = 0.0) -> tuple[jax.Array, dict]:
    """Noises x0 to x_t, runs `apply_fn(x_t, t)` and returns `diffusion_loss` against the right target;
    `snr_gamma` > 0 weights it by `min_snr_weights`."""
    x_t = q_sample(schedule, x0, t, noise)
    target = training_target(parameterization, schedule, x0, noise, t)
    weights = min_snr_weights(schedule, t, snr_gamma, parameterization) if snr_gamma > 0 else None
    return diffusion_loss(schedule, apply_fn(x_t, t), target, t, loss_type=loss_type,
                          l_simple_weight=l_simple_weight, original_elbo_weight=original_elbo_weight,
                          logvar=logvar, snr_weights=weights)
