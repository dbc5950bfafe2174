"""Classifier-free guidance: one model call on the stacked [uncond; cond] batch, as the reference.

`model_fn(params, x, t, cond)` is the denoiser (UNet plus conditioning plumbing); `cond` and
`uncond` are pytrees with the same structure (e.g. {"context": ..., "y": ..., "concat": ...}).
"""
from typing import Any, Callable

import jax
import jax.numpy as jnp

from ldm_jax.diffusion import objectives
from ldm_jax.diffusion.schedule import DiffusionSchedule, Parameterization

ModelFn = Callable[[Any, jax.Array, jax.Array, Any], jax.Array]


def stack_conditioning(uncond, cond):
    """Every leaf of `uncond` then `cond`, concatenated along the batch axis (the reference order)."""
    if jax.tree.structure(uncond) != jax.tree.structure(cond):
        raise ValueError("cond and uncond must have the same structure, got "
                         f"{jax.tree.structure(cond)} and {jax.tree.structure(uncond)}")
    return jax.tree.map(lambda u, c: jnp.concatenate([u, c], axis=0), uncond, cond)


def guided_model_output(model_fn: ModelFn, params, x: jax.Array, t: jax.Array, cond, uncond,
                        guidance_scale) -> jax.Array:
    """The raw model output, guided: out_u + s (out_c - out_u) from one call on [uncond; cond].

    Without `uncond` the model runs once on the conditional batch and `guidance_scale` is unused.
    `t` is a scalar or (N,) timestep, broadcast over the batch: int32, or float32 on a fractional grid.
    """
    t = jnp.broadcast_to(_timestep(t), (x.shape[0],))
    if uncond is None:
        return model_fn(params, x, t, cond)
    out = model_fn(params, jnp.concatenate([x, x]), jnp.concatenate([t, t]), stack_conditioning(uncond, cond))
    out_uncond, out_cond = jnp.split(out, 2, axis=0)
    return out_uncond + guidance_scale * (out_cond - out_uncond)


def to_eps_and_x0(parameterization: Parameterization, schedule: DiffusionSchedule, x, t, model_output,
                  alpha, sqrt_one_minus_alpha) -> tuple[jax.Array, jax.Array]:
    """(eps, pred_x0) from a model output, as the reference DDIM sampler converts it.

    `alpha` / `sqrt_one_minus_alpha` are the sampler's float32 scalars for this step (the eps path
    uses them, as the reference does); v models use the schedule buffers at an integer `t`, as the
    reference does, and `alpha` at a fractional one, as diffusers' Euler does.
    """
    t = jnp.broadcast_to(_timestep(t), (x.shape[0],))
    if parameterization == "eps":
        eps = model_output
        return eps, (x - sqrt_one_minus_alpha * eps) / jnp.sqrt(alpha)
    if parameterization == "v" and jnp.issubdtype(t.dtype, jnp.floating):
        sqrt_alpha = jnp.sqrt(alpha)
        return (sqrt_alpha * model_output + sqrt_one_minus_alpha * x,
                sqrt_alpha * x - sqrt_one_minus_alpha * model_output)
    if parameterization == "v":
        return (objectives.predict_eps_from_z_and_v(schedule, x, t, model_output),
                objectives.predict_start_from_z_and_v(schedule, x, t, model_output))
    if parameterization == "x0":
        x0 = model_output
        return (x - jnp.sqrt(alpha) * x0) / sqrt_one_minus_alpha, x0
    raise ValueError(f"unknown parameterization {parameterization!r}; expected eps, x0 or v")


def _timestep(t) -> jax.Array:
    """Timesteps as int32, unless fractional (float32, from a diffusers-style interpolated grid)."""
    t = jnp.asarray(t)
    return t.astype(jnp.float32 if jnp.issubdtype(t.dtype, jnp.floating) else jnp.int32)


def guided_eps_and_x0(model_fn: ModelFn, params, x, t, cond, uncond, guidance_scale, *,
                      parameterization: Parameterization, schedule: DiffusionSchedule, alpha,
                      sqrt_one_minus_alpha) -> tuple[jax.Array, jax.Array]:
    """Guided model output converted to (eps, pred_x0)."""
    out = guided_model_output(model_fn, params, x, t, cond, uncond, guidance_scale)
    return to_eps_and_x0(parameterization, schedule, x, t, out, alpha, sqrt_one_minus_alpha)
