"""Stage 2: training a latent diffusion model (the reference `LatentDiffusion.training_step`).

    stage = LatentDiffusionStage.from_config(config)      # config.model: first_stage, unet, cond_stage, diffusion
    state = stage.init_state(rng, batch)                  # random weights everywhere
    state = stage.with_variables(state, *stage.load_pretrained())  # the trained first stage (and more)
    state, metrics = stage.train_step(state, batch, rng)

One step: z = scale_factor * E(x) from the frozen first stage (a KL posterior sample drawn with the
step's rng, VQ's pre-quantisation latent, the image itself for the identity) or from a latent cache
(batch "mean" / "std" for KL, "latent" for VQ, as `ldm_jax.data.latent_cache` writes them); t ~
U{0..T-1}; x_t = q_sample(z, t, noise); the UNet, conditioned as `ldm_conditioning.ConditioningPlan`
says (each sample's conditioning replaced by the unconditional input with probability
`cond_drop_prob`), regresses eps / x0 / v; the loss is the reference `p_losses`
(`objectives.p_losses`). AdamW updates the UNet (and the cond stage when `cond_stage_trainable`, and
the per-timestep logvar with `learn_logvar`); the EMA follows every step.

State: params {"unet", "cond_stage"?, "logvar"?} (plain parameter trees); frozen {"first_stage",
"cond_stage"?} (variable dicts {"params": ...}); extras {"scale_factor", "scale_pending",
"ema_num_updates"} (the EMA's count, the reference checkpoint's `model_ema.num_updates`).
With `diffusion.scale_by_std` the first step of a fresh state (step 0, extras["scale_pending"])
sets scale_factor = 1 / std(z) of its batch (unbiased std of the posterior sample, as the
reference's `on_train_batch_start`); it lives in `extras`, so it is checkpointed and later steps
(and resumed runs) keep it.

Training fields (`default_ldm_train_config()`, merged into the experiment config by the loop):
  train.cond_drop_prob       probability of training a sample on the unconditional input (0: never)
  train.uncond_tokens        token ids of the empty prompt if the defaults (see
                             `ldm_conditioning.unconditional_tokens`) do not fit the tokenizer
  train.l_simple_weight, train.original_elbo_weight, train.learn_logvar, train.logvar_init
                             the reference p_losses weights (1, 0, off, 0)
  train.snr_gamma            > 0: Min-SNR-gamma loss weights (not in the reference; 0: off, as there)
  train.log_num_images, train.log_sample_steps, train.log_guidance_scale, train.log_eta
                             `log_images`: how many, DDIM steps, guidance (1: none) and eta
  optimizer.*                see `optimizers.default_optimizer_config`
  ema.use_ema (None: the model's diffusion.use_ema), ema.decay, ema.warmup
  precision.compute_dtype (float32 | bfloat16), precision.remat
  pretrained.model / .first_stage / .cond_stage   checkpoints to start from (see `load_pretrained`)
"""
import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from ldm_jax import compile_options
from ldm_jax.diffusion import objectives
from ldm_jax.diffusion.sampling import LatentSampler
from ldm_jax.ldm import LatentDiffusion
from ldm_jax.training import optimizers
from ldm_jax.training.ema import EmaSettings, ema_init, ema_update
from ldm_jax.training.ldm_conditioning import ConditioningPlan
from ldm_jax.training.train_state import Batch, Metrics, TrainState

# Independent random streams folded out of the step's rng.
_POSTERIOR, _TIMESTEPS, _NOISE, _DROP, _COND, _DROPOUT = range(6)


def default_ldm_train_config() -> ml_collections.ConfigDict:
    """The stage-2 training fields and their defaults (see the module docstring)."""
    placeholder = ml_collections.config_dict.placeholder
    return ml_collections.ConfigDict({
        "train": {
            "cond_drop_prob": 0.0,
            "uncond_tokens": placeholder(list),
            "l_simple_weight": 1.0,
            "original_elbo_weight": 0.0,
            "learn_logvar": False,
            "logvar_init": 0.0,
            "snr_gamma": 0.0,
            "log_num_images": 4,
            "log_sample_steps": 20,
            "log_guidance_scale": 1.0,
            "log_eta": 0.0,
        },
        "optimizer": optimizers.default_optimizer_config(),
        "ema": {"use_ema": placeholder(bool), "decay": 0.9999, "warmup": True},
        "precision": optimizers.default_precision_config(),
        "pretrained": {"model": "", "first_stage": "", "cond_stage": "", "use_ema": False},
    })


@dataclasses.dataclass(frozen=True)
class LdmTrainSettings:
    """The `train` fields this stage reads (see `default_ldm_train_config`)."""
    cond_drop_prob: float = 0.0
    uncond_tokens: tuple[int, ...] = ()
    l_simple_weight: float = 1.0
    original_elbo_weight: float = 0.0
    learn_logvar: bool = False
    logvar_init: float = 0.0
    snr_gamma: float = 0.0
    log_num_images: int = 4
    log_sample_steps: int = 20
    log_guidance_scale: float = 1.0
    log_eta: float = 0.0

    def __post_init__(self):
        if not 0.0 <= self.cond_drop_prob <= 1.0:
            raise ValueError(f"train.cond_drop_prob must be in [0, 1], got {self.cond_drop_prob}")
        if self.snr_gamma < 0:
            raise ValueError(f"train.snr_gamma must be >= 0 (0: off), got {self.snr_gamma}")
        for name in ("log_num_images", "log_sample_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"train.{name} must be >= 1, got {getattr(self, name)}")

    @classmethod
    def from_config(cls, section) -> "LdmTrainSettings":
        section = section.to_dict() if hasattr(section, "to_dict") else dict(section or {})
        values = {f.name: section[f.name] for f in dataclasses.fields(cls) if section.get(f.name) is not None}
        if "uncond_tokens" in values:
            values["uncond_tokens"] = tuple(int(v) for v in values["uncond_tokens"])
        return cls(**values)


class LatentDiffusionStage:
    """`TrainStage` for any LDM config (see the module docstring). Pure methods; jit them."""

    def __init__(self, config: ml_collections.ConfigDict, *, learning_rate: float,
                 optimizer=None, ema: EmaSettings | None = None, precision: optimizers.Precision | None = None,
                 train: LdmTrainSettings | None = None, pretrained=None):
        self.precision = precision or optimizers.Precision()
        self.ldm = LatentDiffusion(config, remat=self.precision.remat, **self.precision.module_kwargs())
        self.config = config
        self.diffusion = config.model.diffusion
        self.train = train or LdmTrainSettings()
        self.ema = ema or EmaSettings(use_ema=bool(self.diffusion.use_ema))
        self.pretrained = dict(pretrained or {})
        self.learning_rate = float(learning_rate)
        self.tx = optimizers.make_optimizer(optimizer, self.learning_rate)
        self.plan = ConditioningPlan.of(self.ldm)
        self.unet, self.cond_stage, self.schedule = self.ldm.unet, self.ldm.cond_stage, self.ldm.schedule
        if self.diffusion.scale_by_std and float(self.diffusion.scale_factor) != 1.0:
            raise ValueError("diffusion.scale_by_std estimates the scale factor: diffusion.scale_factor must be 1 "
                             f"with it (the reference asserts the same), got {self.diffusion.scale_factor}")
        self.sampler = LatentSampler(self.ldm.apply_unet, self.schedule, self.diffusion.parameterization)
        self._log_images = jax.jit(self._log_images_impl, compiler_options=compile_options.forward_only())

    @classmethod
    def from_config(cls, config: ml_collections.ConfigDict) -> "LatentDiffusionStage":
        """From an experiment config: `model` plus the sections of `default_ldm_train_config` (defaults
        for any not given)."""
        defaults = default_ldm_train_config()
        section = lambda name: config[name] if name in config else defaults[name]  # noqa: E731
        optimizer = section("optimizer")
        learning_rate = optimizers.experiment_learning_rate(config, optimizer)
        ema = EmaSettings.from_config(section("ema"), use_ema_default=bool(config.model.diffusion.use_ema))
        return cls(config, learning_rate=learning_rate, optimizer=optimizer, ema=ema,
                   precision=optimizers.Precision.from_config(section("precision")),
                   train=LdmTrainSettings.from_config(section("train")), pretrained=section("pretrained"))

    # -- state ------------------------------------------------------------------------------------------

    def init_state(self, rng: jax.Array, batch: Batch | None = None) -> TrainState:
        """Random weights for every component (the frozen ones are meant to be replaced by `with_variables`).

        Parameters keep the modules' logical-axis boxes (`nn.LogicallyPartitioned`), so
        `nn.get_partition_spec(jax.eval_shape(stage.init_state, ...))` gives the state's shardings.
        """
        return self.state_from_variables(self.ldm.init_variables(rng))

    def state_from_variables(self, variables: dict, step: int = 0) -> TrainState:
        """A fresh state (optimizer and EMA initialised) from variables {"first_stage", "unet", "cond_stage"?},
        each {"params": ...} as `compvis.load_checkpoint` returns them."""
        missing = {"first_stage", "unet"} - set(variables)
        if self.cond_stage is not None and "cond_stage" not in variables:
            missing.add("cond_stage")
        if missing:
            raise ValueError(f"state_from_variables needs variables for {sorted(missing)}")
        params = {"unet": variables["unet"]["params"]}
        frozen = {"first_stage": variables["first_stage"]}
        if self.cond_stage is not None:
            if self.plan.cond_trainable:
                params["cond_stage"] = variables["cond_stage"]["params"]
            else:
                frozen["cond_stage"] = variables["cond_stage"]
        if self.train.learn_logvar:
            params["logvar"] = jnp.full((self.schedule.num_timesteps,), self.train.logvar_init, jnp.float32)
        params = jax.tree.map(lambda p: jnp.asarray(p, jnp.float32), params)  # float32 master weights
        extras = {"scale_factor": jnp.asarray(self.diffusion.scale_factor, jnp.float32),
                  # scale_by_std: the first step estimates the scale factor, then clears this.
                  "scale_pending": jnp.asarray(bool(self.diffusion.scale_by_std)),
                  "ema_num_updates": jnp.zeros((), jnp.int32)}
        return TrainState(step=jnp.asarray(step, jnp.int32), params=params, opt_state=self.tx.init(params),
                          ema_params=ema_init(params, self.ema), frozen=frozen, extras=extras)

    def variables(self, state: TrainState, use_ema: bool = False) -> dict:
        """{"first_stage", "unet", "cond_stage"?} variable dicts, for sampling or `compvis.save_checkpoint`."""
        params = state.ema_params if use_ema and state.ema_params is not None else state.params
        out = {"first_stage": state.frozen["first_stage"], "unet": {"params": params["unet"]}}
        if self.cond_stage is not None:
            out["cond_stage"] = ({"params": params["cond_stage"]} if self.plan.cond_trainable
                                 else state.frozen["cond_stage"])
        return out

    def with_variables(self, state: TrainState, variables: dict, scale_factor: float | None = None) -> TrainState:
        """`state` with the given sections replaced (pretrained weights); optimizer and EMA start afresh.

        A `scale_factor` (a pretrained model's) is kept as is: scale_by_std no longer re-estimates it,
        as the reference skips the estimate when restarted from a checkpoint.
        """
        unknown = set(variables) - {"first_stage", "unet", "cond_stage"}
        if unknown:
            raise ValueError(f"unknown sections {sorted(unknown)}; expected first_stage, unet, cond_stage")
        current = self.variables(state)
        merged = {**current, **{name: _boxed_like(current[name], value) for name, value in variables.items()}}
        fresh = self.state_from_variables(merged, step=0)
        extras = {**fresh.extras, "scale_factor": state.extras["scale_factor"],
                  "scale_pending": state.extras["scale_pending"]}
        if scale_factor is not None:
            extras.update(scale_factor=jnp.asarray(scale_factor, jnp.float32), scale_pending=jnp.asarray(False))
        if self.train.learn_logvar:
            fresh = fresh.replace(params={**fresh.params, "logvar": state.params["logvar"]})
        return fresh.replace(step=state.step, extras=extras)

    def load_pretrained(self) -> tuple[dict, float | None]:
        """(variables, scale_factor) read from the `pretrained` checkpoints (host side, not jittable);
        pass both to `with_variables`.

        `pretrained.model`: a whole LDM checkpoint in this config's architecture (every section it
        holds, the UNet from its EMA with `pretrained.use_ema`); `pretrained.first_stage`: an
        autoencoder (or any LDM) checkpoint holding the first stage; `pretrained.cond_stage`: one
        holding the cond stage (e.g. an SD checkpoint, or a transformers CLIP text model). The
        specific ones override the whole model's sections. The scale factor is the whole model's
        (its stored one when it was trained with scale_by_std), None without `pretrained.model`.
        Paths may be hf://org/repo/file references (fetched into the Hub cache, as for sampling).
        Returns ({}, None) when nothing is set.
        """
        from ldm_jax import hub
        from ldm_jax.convert import compvis

        model = self.config.model
        variables, scale_factor = {}, None
        if self.pretrained.get("model"):
            loaded_config, variables = compvis.load_checkpoint(
                hub.resolve(self.pretrained["model"]), config_path=ml_collections.ConfigDict({"model": model.to_dict()}),
                use_ema=bool(self.pretrained.get("use_ema", False)))
            scale_factor = float(loaded_config.model.diffusion.scale_factor)
        for section in ("first_stage", "cond_stage"):
            path = self.pretrained.get(section)
            if not path:
                continue
            if section not in model:
                raise ValueError(f"pretrained.{section} is set but config.model has no {section}")
            sub_config = ml_collections.ConfigDict({"model": {section: model[section].to_dict()}})
            _, loaded = compvis.load_checkpoint(hub.resolve(path), config_path=sub_config)  # a path or hf://
            variables[section] = loaded[section]
        return variables, scale_factor

    # -- the step ---------------------------------------------------------------------------------------

    def latents(self, frozen, batch: Batch, rng: jax.Array, sample: bool = True) -> jax.Array:
        """Unscaled latents (N, h, w, C) float32: from the batch's cache fields, else encoded from "image"."""
        if "mean" in batch and "std" in batch:  # a KL latent cache: z = mean + std * eps
            mean = jnp.asarray(batch["mean"], jnp.float32)
            if not sample:
                return mean
            return mean + jnp.asarray(batch["std"], jnp.float32) * jax.random.normal(rng, mean.shape, jnp.float32)
        if "latent" in batch:  # a VQ latent cache
            return jnp.asarray(batch["latent"], jnp.float32)
        if "image" not in batch:
            raise KeyError(f"the batch has neither 'image' nor cached latents ('mean' + 'std', or 'latent'); "
                           f"fields: {sorted(batch)}")
        images = jnp.asarray(batch["image"], jnp.float32)
        return self.ldm.first_stage.encoding(frozen["first_stage"], images, rng if sample else None)

    def _scale_factor(self, state: TrainState, z: jax.Array) -> jax.Array:
        """The configured scale factor, or with scale_by_std on the first step 1 / std(z) of its batch."""
        if not self.diffusion.scale_by_std:
            return state.extras["scale_factor"]
        estimate = 1.0 / jnp.std(z, ddof=1)  # torch's unbiased std, as the reference
        return jnp.where(state.extras["scale_pending"], estimate, state.extras["scale_factor"]).astype(jnp.float32)

    def _cond_variables(self, params, frozen):
        if self.cond_stage is None:
            return None
        return {"params": params["cond_stage"]} if self.plan.cond_trainable else frozen["cond_stage"]

    def conditioning(self, params, frozen, batch: Batch, latent_shape, scale_factor, drop, rng) -> dict:
        """The UNet conditioning of `batch` (see `ConditioningPlan.build`)."""
        cond_variables = self._cond_variables(params, frozen)
        encode_cond = None
        if self.cond_stage is not None:
            encode_cond = lambda inputs: self.cond_stage.apply(cond_variables, inputs)  # noqa: E731
        return self.plan.build(
            batch, encode_cond=encode_cond, latent_shape=latent_shape, scale_factor=scale_factor, drop=drop,
            rng=rng, uncond_tokens=self.train.uncond_tokens,
            encode_first_stage=lambda images, key, sample: self.ldm.first_stage.encoding(
                frozen["first_stage"], images, key if sample else None))

    def loss(self, params, frozen, batch: Batch, z0, t, noise, scale_factor, drop, rng) -> tuple[jax.Array, dict]:
        """The reference p_losses on latents z0 (already scaled) for timesteps t and noise."""
        cond = self.conditioning(params, frozen, batch, z0.shape, scale_factor, drop, jax.random.fold_in(rng, _COND))
        dropout_rng = jax.random.fold_in(rng, _DROPOUT)
        logvar = params.get("logvar")
        if logvar is None and self.train.logvar_init != 0.0:  # a fixed, non-zero logvar still weights the loss
            logvar = jnp.full((self.schedule.num_timesteps,), self.train.logvar_init, jnp.float32)
        loss, metrics = objectives.p_losses(
            lambda x_t, steps: self.ldm.apply_unet({"params": params["unet"]}, x_t, steps, cond, dropout_rng),
            self.schedule, z0, t, noise, parameterization=self.diffusion.parameterization,
            loss_type=self.diffusion.loss_type,
            l_simple_weight=self.train.l_simple_weight, original_elbo_weight=self.train.original_elbo_weight,
            logvar=logvar, snr_gamma=self.train.snr_gamma)
        if "logvar" in params:
            metrics["logvar"] = params["logvar"].mean()
        return loss, metrics

    def draw(self, rng: jax.Array, z0: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array | None]:
        """(t, noise, drop) of a step: uniform timesteps, Gaussian noise, the dropped-conditioning mask."""
        batch = z0.shape[0]
        t = jax.random.randint(jax.random.fold_in(rng, _TIMESTEPS), (batch,), 0, self.schedule.num_timesteps)
        noise = jax.random.normal(jax.random.fold_in(rng, _NOISE), z0.shape, jnp.float32)
        drop = None
        if self.train.cond_drop_prob > 0 and self.plan.key != "none":
            drop = jax.random.bernoulli(jax.random.fold_in(rng, _DROP), self.train.cond_drop_prob, (batch,))
        return t, noise, drop

    def train_step(self, state: TrainState, batch: Batch, rng: jax.Array) -> tuple[TrainState, Metrics]:
        """One optimizer update (or one accumulation step) on `batch`; `rng` already folded with the step."""
        z = self.latents(state.frozen, batch, jax.random.fold_in(rng, _POSTERIOR))
        scale_factor = self._scale_factor(state, z)
        z0 = scale_factor * z
        t, noise, drop = self.draw(rng, z0)
        grad_fn = jax.value_and_grad(self.loss, has_aux=True)
        (_, metrics), grads = grad_fn(state.params, state.frozen, batch, z0, t, noise, scale_factor, drop, rng)
        updates, opt_state = self.tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        extras = {**state.extras, "scale_factor": scale_factor, "scale_pending": jnp.zeros_like(
            state.extras["scale_pending"])}
        ema = state.ema_params
        if ema is not None:
            ema, extras["ema_num_updates"] = ema_update(ema, params, state.extras["ema_num_updates"],
                                                        self.ema.decay, self.ema.warmup)
        metrics.update(grad_norm=optax.tree.norm(grads),
                       learning_rate=optimizers.current_learning_rate(opt_state), scale_factor=scale_factor)
        new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state, ema_params=ema,
                                  extras=extras)
        return new_state, metrics

    # -- images -----------------------------------------------------------------------------------------

    def log_images(self, state: TrainState, batch: Batch, rng: jax.Array) -> dict[str, jax.Array]:
        """"inputs" (the batch images), "reconstructions" (decode(E(x))) and "samples": DDIM
        (train.log_sample_steps steps) from the EMA weights (the raw ones without EMA), decoded; NHWC in [-1, 1]."""
        count = min(self.train.log_num_images, _batch_length(batch))
        small = {k: jnp.asarray(v)[:count] for k, v in batch.items() if _is_numeric(v)}
        return self._log_images(state, small, rng)

    def _log_images_impl(self, state, batch, rng):
        first_stage = state.frozen["first_stage"]
        z = self.latents(state.frozen, batch, rng, sample=False)
        scale_factor = state.extras["scale_factor"]
        params = state.ema_params if state.ema_params is not None else state.params
        cond_rng = jax.random.fold_in(rng, _COND)
        cond = self.conditioning(params, state.frozen, batch, z.shape, scale_factor, None, cond_rng)
        uncond = None
        if self.train.log_guidance_scale != 1.0 and self.plan.key != "none":
            dropped = jnp.ones((z.shape[0],), bool)
            uncond = self.conditioning(params, state.frozen, batch, z.shape, scale_factor, dropped, cond_rng)
        x_T = jax.random.normal(jax.random.fold_in(rng, _NOISE), z.shape, jnp.float32)
        latents = self.sampler({"params": params["unet"]}, x_T, cond, uncond, sampler="ddim",
                               steps=self.train.log_sample_steps, guidance_scale=self.train.log_guidance_scale,
                               eta=self.train.log_eta, rng=jax.random.fold_in(rng, _TIMESTEPS), progress=False)
        decode = lambda latent: jnp.clip(  # noqa: E731
            self.ldm.first_stage.decode(first_stage, latent).astype(jnp.float32), -1.0, 1.0)
        images = {"reconstructions": decode(z), "samples": decode(latents / scale_factor)}
        if "image" in batch:
            images["inputs"] = jnp.clip(batch["image"].astype(jnp.float32), -1.0, 1.0)
        return images


def _boxed_like(template, values):
    """`values` wrapped in the logical-axis boxes `template` has (none if it has none): loaded weights
    then shard like the ones they replace."""
    is_box = lambda x: isinstance(x, nn.meta.AxisMetadata)  # noqa: E731
    return jax.tree.map(lambda box, value: box.replace_boxed(value) if is_box(box) else value,
                        template, nn.meta.unbox(values), is_leaf=is_box)


def _is_numeric(value) -> bool:
    return isinstance(value, jax.Array) or (hasattr(value, "dtype") and getattr(value.dtype, "kind", "O") in "biuf")


def _batch_length(batch: Batch) -> int:
    for value in batch.values():
        if _is_numeric(value) and getattr(value, "ndim", 0) >= 1:
            return int(value.shape[0])
    raise ValueError(f"the batch holds no array (fields: {sorted(batch)})")
