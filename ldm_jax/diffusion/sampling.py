"""The single sampling entry point: any sampler, guidance, img2img strength and latent-blend inpainting
inside one `jax.lax.scan`, compiled once per (shapes, sampler, number of steps).

    sampler = LatentSampler(model_fn, schedule, parameterization="eps")
    latents = sampler(params, x_T, cond, uncond, sampler="ddim", steps=50, guidance_scale=7.5, rng=key)

Traced (changing them never recompiles): params, x_T, cond/uncond, guidance_scale, eta, rng,
noise, init_latents, strength, mask. Static: sampler, steps, discretize, return_intermediates, progress
(and whether noise / init_latents / mask / uncond are given at all).

Whom each sampler matches by default (`discretize=None`): `ddim` and `plms` the CompVis reference
(`DDIMSampler`, `PLMSSampler`, uniform spacing); `ddpm`, `dpm_solver++` and `euler` (eta 0; eta 1 is
Euler ancestral) diffusers' `DDPMScheduler`, `DPMSolverMultistepScheduler` and `EulerDiscreteScheduler` /
`EulerAncestralDiscreteScheduler` as made `from_config` of Stable Diffusion's scheduler config.
`discretize` picks another spacing for any sampler: "uniform" / "quad" (the reference's) or
"leading" / "trailing" / "linspace" (diffusers', exactly `steps` steps for any count); for euler and
dpm_solver++ also "k-diffusion" (k-diffusion's `sample_euler` / `sample_euler_ancestral` /
`sample_dpmpp_2m` over a `CompVisDenoiser`), for dpm_solver++ "time_uniform" (SD 2's own
`DPMSolverSampler`); see `timesteps`.

img2img keeps `strength` traced by scanning over every step of the grid and skipping, with
`lax.cond`, the steps before t_enc = floor(strength * S): the compiled program is the full
sampling loop, and a skipped step costs a branch, not a UNet call.
"""
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ldm_jax.diffusion import guidance, objectives
from ldm_jax.diffusion.progress import ScanProgressBar
from ldm_jax.diffusion.samplers import SamplerSpec, ddim, ddpm, dpm_solver, euler, plms
from ldm_jax.diffusion.schedule import DiffusionSchedule, Parameterization
from ldm_jax.diffusion.timesteps import SamplingGrid

SAMPLERS: dict[str, SamplerSpec] = {spec.name: spec for spec in (
    ddim.SAMPLER, plms.SAMPLER, ddpm.SAMPLER, dpm_solver.SAMPLER, euler.SAMPLER)}
# Streams folded out of the run's key, so each use of randomness is independent.
_STEP_NOISE, _BLEND_NOISE = 0, 1


def sampler_spec(name: str) -> SamplerSpec:
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; expected one of {sorted(SAMPLERS)}")
    return SAMPLERS[name]


def sampling_grid(schedule: DiffusionSchedule, sampler: str, steps: int, discretize: str | None = None
                  ) -> SamplingGrid:
    """The grid a sampler walks (the model is called at `grid.timesteps`, in that order); `discretize`
    None is the sampler's default spacing."""
    spec = sampler_spec(sampler)
    return spec.make_grid(np.asarray(schedule.alphas_cumprod), steps, discretize or spec.default_spacing)


def img2img_start(grid: SamplingGrid, init_latents, x_T, strength):
    """(start latent, first active step) for img2img, as the reference `stochastic_encode` + `decode`.

    t_enc = floor(strength * S) steps run; the input is noised with x_T to the DDIM level
    alphas[t_enc] (ascending order). strength 0 returns `init_latents` untouched, strength 1 starts
    from x_T itself (plain sampling).
    """
    num = grid.num_steps
    t_enc = jnp.clip(jnp.floor(jnp.asarray(strength, jnp.float32) * num).astype(jnp.int32), 0, num)
    level = jnp.clip(num - 1 - t_enc, 0, num - 1)  # ascending index t_enc, in sampling order
    noised = jnp.sqrt(grid.alphas[level]) * init_latents + grid.sqrt_one_minus_alphas[level] * x_T
    start = jnp.where(t_enc == 0, init_latents, jnp.where(t_enc == num, x_T, noised))
    return start.astype(x_T.dtype), num - t_enc


def sample(model_fn: guidance.ModelFn, params, x_T, cond, uncond=None, *, schedule: DiffusionSchedule,
           parameterization: Parameterization = "eps", sampler: str = "ddim", steps: int = 50,
           discretize: str | None = None, guidance_scale=1.0, eta=0.0, rng=None, noise=None,
           init_latents=None, strength=1.0, mask=None, return_intermediates: bool = False,
           progress: ScanProgressBar | None = None):
    """Samples latents from x_T (NHWC). Pure: call it under `jax.jit` with the static knobs static.

    `noise` (num_steps, *x_T.shape) replays a stochastic run (step i uses noise[i], scaled by the
    sampler); otherwise draws come from `rng`. `init_latents` + `strength` give img2img; `mask`
    (1 = generate, 0 = keep `init_latents`, broadcastable to x_T) gives latent-blending inpainting.
    Returns latents, or (latents, {"x_inter", "pred_x0"}) each (steps + 1, ...) with the start first.
    """
    spec = sampler_spec(sampler)
    grid = sampling_grid(schedule, sampler, steps, discretize)
    num = grid.num_steps
    if noise is not None and noise.shape != (num, *x_T.shape):
        raise ValueError(f"noise must have shape {(num, *x_T.shape)} (one draw per step of the {num}-step "
                         f"{sampler} grid), got {noise.shape}")
    if mask is not None and init_latents is None:
        raise ValueError("mask needs init_latents (the known latents to keep where mask == 0)")
    rng = jax.random.PRNGKey(0) if rng is None else rng
    guidance_scale = jnp.asarray(guidance_scale, jnp.float32)
    eta = jnp.asarray(eta, jnp.float32)

    if init_latents is not None:
        init_latents = init_latents.astype(x_T.dtype)
        x_start, first_active = img2img_start(grid, init_latents, x_T, strength)
    else:  # Euler on diffusers' grid starts from its initial noise sigma
        x_start, first_active = (x_T * grid.start_scale).astype(x_T.dtype), jnp.zeros((), jnp.int32)
    keep = None if mask is None else (1.0 - mask).astype(x_T.dtype)

    def denoise(x, j):
        return guidance.guided_eps_and_x0(
            model_fn, params, x, grid.timesteps[j], cond, uncond, guidance_scale,
            parameterization=parameterization, schedule=schedule, alpha=grid.alphas[j],
            sqrt_one_minus_alpha=grid.sqrt_one_minus_alphas[j])

    def active_step(carry, i):
        state, x = carry
        if keep is not None:  # the reference blends the known region in before every step
            blend_noise = jax.random.normal(jax.random.fold_in(jax.random.fold_in(rng, _BLEND_NOISE), i), x.shape)
            if grid.fractional:  # no schedule entry at a fractional timestep: the grid's own level
                known = jnp.sqrt(grid.alphas[i]) * init_latents + grid.sqrt_one_minus_alphas[i] * blend_noise
            else:
                t = jnp.broadcast_to(grid.timesteps[i], (x.shape[0],))
                known = objectives.q_sample(schedule, init_latents, t, blend_noise.astype(x.dtype))
            x = known * keep + (1.0 - keep) * x
        if not spec.stochastic:
            step_noise = jnp.zeros_like(x)
        elif noise is not None:
            step_noise = noise[i].astype(x.dtype)
        else:
            step_noise = jax.random.normal(jax.random.fold_in(jax.random.fold_in(rng, _STEP_NOISE), i), x.shape,
                                           x.dtype)
        state, x_next, x0 = spec.step(state, x, i, denoise, grid, eta, step_noise)
        return state, x_next.astype(x.dtype), x0.astype(x.dtype)

    def body(carry, i):
        state, x = carry
        if progress is not None:  # at most ~20 host callbacks per run keeps the bar's cost negligible
            every = max(1, num // 20)
            jax.lax.cond((i % every == every - 1) | (i == num - 1),
                         lambda: jax.debug.callback(progress.update, i, num), lambda: None)
        if init_latents is None:  # every step runs: no conditional around the model in the loop
            state, x_next, x0 = active_step(carry, i)
        else:
            state, x_next, x0 = jax.lax.cond(i >= first_active, active_step, lambda c, _: (c[0], c[1], c[1]),
                                             carry, i)
        outputs = (x_next, x0) if return_intermediates else None
        return (state, x_next), outputs

    (_, x), outputs = jax.lax.scan(body, (spec.init_state(x_start), x_start), jnp.arange(num))
    if keep is not None:  # outside the mask the result is exactly the known latents
        x = init_latents * keep + (1.0 - keep) * x
    if not return_intermediates:
        return x
    x_inter, pred_x0 = outputs
    return x, {"x_inter": jnp.concatenate([x_start[None], x_inter]),
               "pred_x0": jnp.concatenate([x_start[None], pred_x0])}


class LatentSampler:
    """A compiled `sample` for one model: built once, reused for every call (no global caches).

    `model_fn(params, x, t, cond)`; `params` stay a traced argument, never baked into the program.
    `jit_kwargs` go to `jax.jit`: the pipeline passes the forward-only compiler options
    (`ldm_jax.compile_options`), which jax takes only while the sampler is not called inside another jit.
    """

    STATIC = ("sampler", "steps", "discretize", "return_intermediates", "progress")

    def __init__(self, model_fn: guidance.ModelFn, schedule: DiffusionSchedule,
                 parameterization: Parameterization = "eps", jit_kwargs: dict | None = None):
        self.model_fn = model_fn
        self.schedule = schedule
        self.parameterization = parameterization
        self.progress_bar = ScanProgressBar()
        self.trace_count = 0  # how many times the sampling program was traced (tests check it)

        def run(params, x_T, cond, uncond, guidance_scale, eta, rng, noise, init_latents, strength, mask, *,
                sampler, steps, discretize, return_intermediates, progress):
            self.trace_count += 1
            return sample(self.model_fn, params, x_T, cond, uncond, schedule=self.schedule,
                          parameterization=self.parameterization, sampler=sampler, steps=steps,
                          discretize=discretize, guidance_scale=guidance_scale, eta=eta, rng=rng, noise=noise,
                          init_latents=init_latents, strength=strength, mask=mask,
                          return_intermediates=return_intermediates,
                          progress=self.progress_bar if progress else None)

        self._run = jax.jit(run, static_argnames=self.STATIC, **(jit_kwargs or {}))

    def __call__(self, params, x_T, cond, uncond=None, *, sampler: str = "ddim", steps: int = 50,
                 discretize: str | None = None, guidance_scale: float = 1.0, eta: float = 0.0, rng=None,
                 seed: int | None = None, noise=None, init_latents=None, strength: float = 1.0, mask=None,
                 return_intermediates: bool = False, progress: bool = True) -> Any:
        """See `sample`. `seed` (traced) is an alternative to `rng`."""
        sampler_spec(sampler)
        if rng is None:
            rng = jax.random.PRNGKey(jnp.asarray(0 if seed is None else seed, jnp.uint32))
        as_f32 = lambda v: jnp.asarray(v, jnp.float32)  # noqa: E731  (python floats would be weakly typed)
        return self._run(params, x_T, cond, uncond, as_f32(guidance_scale), as_f32(eta), rng, noise,
                         init_latents, as_f32(strength), mask, sampler=sampler, steps=steps, discretize=discretize,
                         return_intermediates=return_intermediates, progress=bool(progress))
