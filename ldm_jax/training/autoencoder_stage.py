"""Stage 1: training a first-stage autoencoder (the reference `AutoencoderKL` / `VQModel.training_step`).

    stage = AutoencoderStage.from_config(config)          # config.model.first_stage (with its lossconfig)
    state = stage.init_state(rng, batch)
    state, metrics = stage.train_step(state, batch, rng)

One step, in one jitted function, does what Lightning does with the reference's two optimizers on
one batch: the generator update (optimizer_idx 0: encoder, decoder, quant convs, the codebook for
VQ, and the loss's `logvar` when the model's `learn_logvar` is on) and then the discriminator
update (optimizer_idx 1). As in the reference, the second pass re-runs the autoencoder with the
updated weights (a fresh posterior sample for KL) and the discriminator sees real and
reconstructed images in two separate BatchNorm batches. The loss is `autoencoder_loss`.

State: params {"autoencoder", "discriminator", "logvar"? (KL with learn_logvar)}; opt_state
{"generator", "discriminator"} (two Adam, betas (0.5, 0.9), as the reference); frozen {"lpips"?
(absent when perceptual_weight is 0), "discriminator_batch_stats", "logvar"? (KL without
learn_logvar: the reference never trains it)}; ema_params None (the reference stage 1 keeps none).
The loss's `global_step` (disc_start) counts optimizer updates: state.step // accumulate_grad_batches.

Metrics: "loss" (what the loop watches: the generator's total loss), the reference log keys of
both passes (`autoencoder_loss`), grad_norm/{autoencoder,discriminator},
learning_rate/{generator,discriminator} and, for VQ, "perplexity" and "codebook_usage" (the
fraction of the codebook used in the batch).

Learning rate: the reference sets learning_rate = base_learning_rate * global batch *
accumulate_grad_batches (`main.py` with scale_lr); the stage takes that already resolved rate
(`optimizers.resolved_learning_rate` computes it from the optimizer section). The discriminator
uses it; the generator uses lr_g_factor * it (a VQModel param, 1 by default).

Training fields (`default_autoencoder_train_config()`, merged into the experiment config by the loop):
  train.lpips_vgg16_weights, train.lpips_linear_weights
                             torchvision's VGG16 state dict and lpips v0.1 `vgg.pth` (the heads)
  train.lpips_module_weights, train.lpips_module_prefix
                             or one LPIPS module state dict, e.g. a reference autoencoder checkpoint
                             with prefix "loss.perceptual_loss."
  train.random_lpips         random LPIPS weights: smoke tests only, the perceptual term is then noise
  train.lpips_dropout        the heads' Dropout(0.5) in training (Lightning's train() switches it on
                             in the reference; off by default: LPIPS as the metric defines it)
  train.log_num_images       how many images `log_images` returns
  optimizer.*                see `optimizers.default_optimizer_config` (here: adam, b1 0.5, b2 0.9,
                             base_learning_rate 4.5e-6 as every released first-stage config)
  precision.compute_dtype, precision.remat
"""
import dataclasses
from typing import Mapping

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from ldm_jax import compile_options
from ldm_jax.config_checks import to_plain_dict
from ldm_jax.models import components, layers
from ldm_jax.models.abstract import abstract_module_params
from ldm_jax.models.lpips import LPIPS, example_inputs as lpips_example_inputs
from ldm_jax.training import optimizers
from ldm_jax.training.autoencoder_loss import LPIPSWithDiscriminator, VQLPIPSWithDiscriminator, loss_from_reference
from ldm_jax.training.train_state import Batch, Metrics, TrainState

# Independent random streams folded out of the step's rng.
_SAMPLE, _DROPOUT, _REMAP, _LPIPS, _SECOND_PASS, _LOG_NOISE = range(6)
_LAST_INPUT = "conv_out_input"
# Model params the reference uses only for things this stage does differently or not at all.
_UNSUPPORTED = {"use_ema": False, "ema_decay": None, "scheduler_config": None, "batch_resize_range": None,
                "ckpt_path": None, "colorize_nlabels": None}


def default_autoencoder_train_config() -> ml_collections.ConfigDict:
    """The stage-1 training fields and their defaults (see the module docstring)."""
    optimizer = optimizers.default_optimizer_config()
    optimizer.update({"name": "adam", "b1": 0.5, "b2": 0.9, "base_learning_rate": 4.5e-6})
    return ml_collections.ConfigDict({
        "train": {
            "lpips_vgg16_weights": "",
            "lpips_linear_weights": "",
            "lpips_module_weights": "",
            "lpips_module_prefix": "",
            "random_lpips": False,
            "lpips_dropout": False,
            "log_num_images": 8,
        },
        "optimizer": optimizer,
        "precision": optimizers.default_precision_config(),
    })


@dataclasses.dataclass(frozen=True)
class AutoencoderTrainSettings:
    """The `train` fields this stage reads (see `default_autoencoder_train_config`)."""
    lpips_vgg16_weights: str = ""
    lpips_linear_weights: str = ""
    lpips_module_weights: str = ""
    lpips_module_prefix: str = ""
    random_lpips: bool = False
    lpips_dropout: bool = False
    log_num_images: int = 8

    @classmethod
    def from_config(cls, section) -> "AutoencoderTrainSettings":
        section = section.to_dict() if hasattr(section, "to_dict") else dict(section or {})
        return cls(**{f.name: section[f.name] for f in dataclasses.fields(cls) if section.get(f.name) is not None})

    def load_lpips(self) -> dict | None:
        """LPIPS params from the configured files (host side), or None when none is configured."""
        from ldm_jax.convert import lpips_weights

        if self.lpips_module_weights:
            return lpips_weights.load_lpips_module_params(self.lpips_module_weights, self.lpips_module_prefix)
        if self.lpips_vgg16_weights or self.lpips_linear_weights:
            if not (self.lpips_vgg16_weights and self.lpips_linear_weights):
                raise ValueError("train.lpips_vgg16_weights and train.lpips_linear_weights go together: set both")
            return lpips_weights.load_lpips_params(self.lpips_vgg16_weights, self.lpips_linear_weights)
        return None


class AutoencoderStage:
    """`TrainStage` for a KL or VQ first stage with its reference loss (see the module docstring)."""

    def __init__(self, model_config: Mapping, loss_config: Mapping | None = None, *, learning_rate: float,
                 optimizer=None, precision: optimizers.Precision | None = None,
                 train: AutoencoderTrainSettings | None = None, lpips_params: Mapping | None = None,
                 lpips_module: LPIPS | None = None):
        model_config = to_plain_dict(model_config)
        self.kind = model_config["kind"]
        if self.kind not in ("autoencoder_kl", "vq"):
            raise ValueError(f"model.first_stage.kind must be 'autoencoder_kl' or 'vq' to train it, got {self.kind!r}")
        params = dict(model_config["params"])
        for name, neutral in _UNSUPPORTED.items():
            if params.get(name, neutral) != neutral:
                hint = (" (load the weights with ldm_jax.convert.compvis.load_checkpoint and start from them with "
                        "state_from_variables)" if name == "ckpt_path" else " (leave it unset)")
                raise ValueError(f"model.first_stage.params.{name}={params[name]!r} is not supported by the "
                                 f"autoencoder stage{hint}")
        loss_config = to_plain_dict(loss_config) if loss_config is not None else params.get("lossconfig")
        if loss_config is None:
            raise ValueError("the autoencoder stage needs a loss: model.first_stage.params.lossconfig, or loss_config")
        self.loss = loss_from_reference(loss_config)
        expected = LPIPSWithDiscriminator if self.kind == "autoencoder_kl" else VQLPIPSWithDiscriminator
        if not isinstance(self.loss, expected):
            raise ValueError(f"a {self.kind} first stage trains with {expected.__name__}, "
                             f"lossconfig.target is {loss_config['target']!r}")
        self.image_key = params.get("image_key", "image")
        self.learn_logvar = bool(params.get("learn_logvar", False))
        self.lr_g_factor = float(params.get("lr_g_factor", 1.0))
        self.precision = precision or optimizers.Precision()
        self.train = train or AutoencoderTrainSettings()
        kw = self.precision.module_kwargs()
        self.autoencoder = components.build({"kind": self.kind, "params": params}, remat=self.precision.remat, **kw)
        self.discriminator = self.loss.discriminator(**kw)
        # A smaller perceptual network than LPIPS-VGG16 (`lpips_module`) is for tests only.
        self.lpips = (lpips_module or LPIPS(**kw)) if self.loss.perceptual_weight > 0 else None
        if self.lpips is not None and lpips_params is None and not self.train.random_lpips:
            raise ValueError("perceptual_weight > 0 needs LPIPS weights: set train.lpips_vgg16_weights + "
                             "train.lpips_linear_weights (or train.lpips_module_weights), pass lpips_params, or set "
                             "train.random_lpips for a smoke test")
        if self.lpips is not None and lpips_params is not None:
            _check_lpips_params(self.lpips, lpips_params)
        self.lpips_params = lpips_params
        optimizer = optimizer if optimizer is not None else default_autoencoder_train_config().optimizer
        self.accumulate = int(to_plain_dict(optimizer).get("accumulate_grad_batches") or 1)
        self.learning_rate = float(learning_rate)
        self.generator_tx = optimizers.make_optimizer(optimizer, self.lr_g_factor * self.learning_rate)
        self.discriminator_tx = optimizers.make_optimizer(optimizer, self.learning_rate)
        self._log_images = jax.jit(self._log_images_impl, compiler_options=compile_options.forward_only())

    @classmethod
    def from_config(cls, config: ml_collections.ConfigDict) -> "AutoencoderStage":
        """From an experiment config: `model.first_stage` (a zoo component with its lossconfig) plus the
        sections of `default_autoencoder_train_config` (defaults for any not given)."""
        if "model" not in config or "first_stage" not in config.model:
            raise ValueError("config.model.first_stage is missing: the autoencoder stage trains that component")
        defaults = default_autoencoder_train_config()
        section = lambda name: config[name] if name in config else defaults[name]  # noqa: E731
        optimizer = section("optimizer")
        learning_rate = optimizers.experiment_learning_rate(config, optimizer)
        train = AutoencoderTrainSettings.from_config(section("train"))
        return cls(config.model.first_stage.to_dict(), learning_rate=learning_rate, optimizer=optimizer,
                   precision=optimizers.Precision.from_config(section("precision")), train=train,
                   lpips_params=train.load_lpips())

    # -- state ------------------------------------------------------------------------------------------

    def init_state(self, rng: jax.Array, batch: Batch) -> TrainState:
        """Random autoencoder and discriminator, the given (or, with random_lpips, random) LPIPS."""
        keys = jax.random.split(rng, 4)
        ae_inputs = components.example_inputs(self.kind, self.autoencoder)
        autoencoder = self.autoencoder.init(keys[0], *ae_inputs)["params"]
        images = self._images(batch)
        if self.loss.use_actnorm:  # the reference initialises ActNorm on the first reconstructions
            images = jax.lax.stop_gradient(self.reconstruct(autoencoder, images, keys[3]))
        discriminator = self.discriminator.init(keys[1], images, train=True)
        variables = {"autoencoder": {"params": autoencoder}, "discriminator": dict(discriminator)}
        if self.lpips is not None:
            lpips_params = (self.lpips_params if self.lpips_params is not None else
                            self.lpips.init(keys[2], *lpips_example_inputs(self.lpips))["params"])
            variables["lpips"] = {"params": lpips_params}
        return self.state_from_variables(variables)

    def state_from_variables(self, variables: Mapping, step: int = 0) -> TrainState:
        """A fresh state (optimizers initialised) from {"autoencoder": {"params"}, "discriminator":
        {"params", "batch_stats"?}, "lpips": {"params"} (when perceptual_weight > 0), "logvar"? (a scalar)}."""
        required = {"autoencoder", "discriminator"} | ({"lpips"} if self.lpips is not None else set())
        missing = required - set(variables)
        if missing:
            raise ValueError(f"state_from_variables needs variables for {sorted(missing)}")
        as_f32 = lambda tree: jax.tree.map(lambda p: jnp.asarray(p, jnp.float32), tree)  # noqa: E731
        params = {"autoencoder": as_f32(variables["autoencoder"]["params"]),
                  "discriminator": as_f32(variables["discriminator"]["params"])}
        frozen = {"discriminator_batch_stats": jax.tree.map(jnp.asarray,
                                                            dict(variables["discriminator"].get("batch_stats", {})))}
        if self.lpips is not None:
            frozen["lpips"] = as_f32(variables["lpips"]["params"])
        if self.kind == "autoencoder_kl":
            logvar = jnp.asarray(variables.get("logvar", self.loss.logvar_init), jnp.float32).reshape(())
            (params if self.learn_logvar else frozen)["logvar"] = logvar
        opt_state = {"generator": self.generator_tx.init(self._generator_params(params)),
                     "discriminator": self.discriminator_tx.init(params["discriminator"])}
        return TrainState(step=jnp.asarray(step, jnp.int32), params=params, opt_state=opt_state, ema_params=None,
                          frozen=frozen, extras=None)

    def variables(self, state: TrainState) -> dict:
        """{"first_stage": {"params"}}: the trained autoencoder, for sampling or `compvis.save_checkpoint`."""
        return {"first_stage": {"params": state.params["autoencoder"]}}

    def _generator_params(self, params: Mapping) -> dict:
        return {name: params[name] for name in ("autoencoder", "logvar") if name in params}

    # -- the autoencoder --------------------------------------------------------------------------------

    def _images(self, batch: Batch) -> jax.Array:
        if self.image_key not in batch:
            raise KeyError(f"the batch has no {self.image_key!r} field (the model's image_key); "
                           f"fields: {sorted(batch)}")
        images = jnp.asarray(batch[self.image_key])
        if images.ndim == 3:  # a single-channel batch, as the reference's get_input expands it
            images = images[..., None]
        return images.astype(jnp.float32)

    def _apply_autoencoder(self, ae_params, images, rng, capture: bool = False):
        """The training forward: (reconstructions, posterior or codebook loss, QuantizerInfo or None);
        with `capture`, also the input of the decoder's last conv (`decoder.conv_out`)."""
        kwargs = dict(deterministic=False, rngs={"dropout": jax.random.fold_in(rng, _DROPOUT)})
        if capture:
            kwargs["mutable"] = ["intermediates"]
        if self.kind == "autoencoder_kl":  # the reference samples the posterior in training
            kwargs.update(sample_posterior=True, rng=jax.random.fold_in(rng, _SAMPLE))
        else:
            kwargs.update(rng=jax.random.fold_in(rng, _REMAP))
        outputs = self.autoencoder.apply({"params": ae_params}, images, **kwargs)
        outputs, state = outputs if capture else (outputs, None)
        if self.kind == "autoencoder_kl":
            outputs = (*outputs, None)
        if not capture:
            return outputs
        return (*outputs, state["intermediates"]["decoder"]["conv_out"][_LAST_INPUT][-1])

    def reconstruct(self, ae_params, images: jax.Array, rng: jax.Array) -> jax.Array:
        """Reconstructions as the training forward makes them (posterior sample for KL)."""
        return self._apply_autoencoder(ae_params, images, rng)[0]

    def _forward_with_last_input(self, ae_params, images, rng):
        """(reconstructions, regulariser, info, the input of `decoder.conv_out`), sown by an interceptor."""
        def capture(next_fun, args, kwargs, context):
            module = context.module
            if context.method_name == "__call__" and module.path == ("decoder", "conv_out"):
                module.sow("intermediates", _LAST_INPUT, args[0])
            return next_fun(*args, **kwargs)

        with nn.intercept_methods(capture):
            return self._apply_autoencoder(ae_params, images, rng, capture=True)

    def _decoder_head(self, features: jax.Array, kernel: jax.Array, bias: jax.Array) -> jax.Array:
        """The decoder's last layer as a function of its kernel: conv_out (then tanh with tanh_out)."""
        ddconfig = self.autoencoder.ddconfig
        conv = layers.conv(ddconfig.out_ch, 3, padding=1, **self.precision.module_kwargs())
        out = conv.apply({"params": {"kernel": kernel, "bias": bias}}, features)
        return jnp.tanh(out) if ddconfig.tanh_out else out

    # -- the step ---------------------------------------------------------------------------------------

    def _perceptual(self, frozen, rng):
        if self.lpips is None:
            return None
        dropout = self.train.lpips_dropout
        return lambda a, b: self.lpips.apply({"params": frozen["lpips"]}, a, b, deterministic=not dropout,
                                             rngs={"dropout": rng} if dropout else None)

    def _discriminate(self, disc_params, batch_stats):
        def discriminate(images):
            logits, mutated = self.discriminator.apply({"params": disc_params, "batch_stats": batch_stats}, images,
                                                       train=True, mutable=["batch_stats"])
            return logits, mutated.get("batch_stats", {})
        return discriminate

    def generator_loss(self, gen_params, state: TrainState, images, global_step, rng):
        """(loss, (logs, discriminator batch stats, QuantizerInfo or None)) of the generator pass."""
        ae_params = gen_params["autoencoder"]
        _, regulariser, info, features = self._forward_with_last_input(ae_params, images, rng)
        conv_out = ae_params["decoder"]["conv_out"]
        kernel, bias = nn.unbox(conv_out["kernel"]), nn.unbox(conv_out["bias"])
        common = dict(perceptual=self._perceptual(state.frozen, jax.random.fold_in(rng, _LPIPS)),
                      discriminate=self._discriminate(state.params["discriminator"],
                                                      state.frozen["discriminator_batch_stats"]),
                      global_step=global_step)
        reconstruct = lambda k: self._decoder_head(features, k, bias)  # noqa: E731
        if self.kind == "autoencoder_kl":
            logvar = gen_params["logvar"] if self.learn_logvar else state.frozen["logvar"]
            loss, logs, stats = self.loss.generator_loss(images, reconstruct, kernel, regulariser, logvar=logvar,
                                                         **common)
        else:
            loss, logs, stats = self.loss.generator_loss(images, reconstruct, kernel, regulariser, **common)
        return loss, (logs, stats, info)

    def discriminator_loss(self, disc_params, batch_stats, images, reconstructions, global_step):
        """(loss, (logs, batch stats)): D on real images, then on reconstructions, two BatchNorm batches."""
        logits_real, batch_stats = self._discriminate(disc_params, batch_stats)(images)
        logits_fake, batch_stats = self._discriminate(disc_params, batch_stats)(reconstructions)
        loss, logs = self.loss.discriminator_loss(logits_real, logits_fake, global_step)
        return loss, (logs, batch_stats)

    def train_step(self, state: TrainState, batch: Batch, rng: jax.Array) -> tuple[TrainState, Metrics]:
        """The generator update, then the discriminator update, on one batch; `rng` already folded with the step."""
        images = self._images(batch)
        global_step = state.step // self.accumulate
        gen_params = self._generator_params(state.params)
        grad_fn = jax.grad(self.generator_loss, has_aux=True)
        gen_grads, (logs, batch_stats, info) = grad_fn(gen_params, state, images, global_step, rng)
        updates, gen_opt = self.generator_tx.update(gen_grads, state.opt_state["generator"], gen_params)
        gen_params = optax.apply_updates(gen_params, updates)

        disc_params, disc_opt = state.params["discriminator"], state.opt_state["discriminator"]
        if batch_stats is None:  # disc_factor 0: no GAN term, so the discriminator is neither run nor trained
            batch_stats = state.frozen["discriminator_batch_stats"]
            disc_grads = jax.tree.map(jnp.zeros_like, disc_params)
            disc_logs = {"disc_loss": jnp.zeros((), jnp.float32), "logits_real": jnp.zeros((), jnp.float32),
                         "logits_fake": jnp.zeros((), jnp.float32)}
        else:
            second = jax.random.fold_in(rng, _SECOND_PASS)
            reconstructions = jax.lax.stop_gradient(self.reconstruct(gen_params["autoencoder"], images, second))
            disc_grads, (disc_logs, batch_stats) = jax.grad(self.discriminator_loss, has_aux=True)(
                disc_params, batch_stats, images, reconstructions, global_step)
            updates, disc_opt = self.discriminator_tx.update(disc_grads, disc_opt, disc_params)
            disc_params = optax.apply_updates(disc_params, updates)

        # "loss" is what the loop watches and shows: the generator's total loss (the reference's
        # `aeloss`), made non-finite when the discriminator's loss is, so a bad step is dropped whole.
        loss = jnp.where(jnp.isfinite(disc_logs["disc_loss"]), logs["total_loss"], jnp.nan)
        metrics = {"loss": loss, **logs, **disc_logs,
                   "grad_norm/autoencoder": optax.tree.norm(gen_grads["autoencoder"]),
                   "grad_norm/discriminator": optax.tree.norm(disc_grads),
                   "learning_rate/generator": optimizers.current_learning_rate(gen_opt),
                   "learning_rate/discriminator": optimizers.current_learning_rate(disc_opt)}
        if info is not None:
            metrics.update(perplexity=info.perplexity, codebook_usage=self._codebook_usage(info.indices))
        params = {**state.params, **gen_params, "discriminator": disc_params}
        new_state = state.replace(step=state.step + 1, params=params,
                                  opt_state={"generator": gen_opt, "discriminator": disc_opt},
                                  frozen={**state.frozen, "discriminator_batch_stats": batch_stats})
        return new_state, metrics

    def _codebook_usage(self, indices: jax.Array) -> jax.Array:
        """The fraction of the codebook's (remapped) index values used in this batch."""
        module = self.autoencoder
        size = module.n_embed if module.remap is None else len(module.remap) + int(module.unknown_index == "extra")
        counts = jnp.zeros((size,), jnp.int32).at[indices.reshape(-1)].add(1, mode="drop")
        return jnp.mean((counts > 0).astype(jnp.float32))

    # -- images -----------------------------------------------------------------------------------------

    def log_images(self, state: TrainState, batch: Batch, rng: jax.Array) -> dict[str, jax.Array]:
        """"inputs", "reconstructions" (the training forward, a posterior sample for KL) and, for KL,
        "samples" (decoded N(0, I) latents), as the reference; NHWC clipped to [-1, 1]."""
        images = self._images(batch)[: self.train.log_num_images]
        return self._log_images(state.params["autoencoder"], images, rng)

    def _log_images_impl(self, ae_params, images, rng):
        clip = lambda x: jnp.clip(x.astype(jnp.float32), -1.0, 1.0)  # noqa: E731
        recon, regulariser, _ = self._apply_autoencoder(ae_params, images, rng)
        out = {"inputs": clip(images), "reconstructions": clip(recon)}
        if self.kind == "autoencoder_kl":
            z = jax.random.normal(jax.random.fold_in(rng, _LOG_NOISE), regulariser.mean.shape, jnp.float32)
            out["samples"] = clip(self.autoencoder.apply({"params": ae_params}, z, method="decode"))
        return out


def _check_lpips_params(module: LPIPS, params: Mapping) -> None:
    """Raises ValueError naming each LPIPS parameter that is missing, unexpected or misshapen."""
    expected = flax.traverse_util.flatten_dict(abstract_module_params(module, *lpips_example_inputs(module)))
    given = flax.traverse_util.flatten_dict(nn.unbox(flax.core.unfreeze(params)))
    name = "/".join
    misshapen = [f"{name(path)} has shape {tuple(given[path].shape)}, expected {tuple(spec.shape)}"
                 for path, spec in expected.items() if path in given and tuple(given[path].shape) != tuple(spec.shape)]
    missing = [name(path) for path in expected if path not in given]
    unexpected = [name(path) for path in given if path not in expected]
    problems = misshapen + [f"{len(keys)} {title}: {', '.join(keys[:6])}"
                            for title, keys in (("missing", missing), ("unexpected", unexpected)) if keys]
    if problems:
        raise ValueError(f"lpips_params do not fit the LPIPS network: {'; '.join(problems)}")
