"""Optimizers, learning-rate schedules and the precision policy of the training stages.

    lr = resolved_learning_rate(config.optimizer, global_batch_size)
    tx = make_optimizer(config.optimizer, lr)          # an optax GradientTransformation
    current_learning_rate(opt_state)                   # the rate of the last update, for metrics

The reference LDM trains with `torch.optim.AdamW(lr=learning_rate)` (torch defaults: betas 0.9 /
0.999, eps 1e-8, weight_decay 0.01 on every parameter) where `main.py` sets, with `scale_lr`,
learning_rate = base_learning_rate * global batch size * accumulate_grad_batches, and optionally
multiplies it step by step with a `LambdaLinearScheduler` (`ldm/lr_scheduler.py`, stepped once per
optimizer update). Here:

- `schedule.kind`: "constant"; "linear_warmup" (0 -> lr over `warmup_steps`, then lr);
  "lambda_linear" (the reference LambdaLinearScheduler) or "lambda_warmup_cosine" (its cosine
  sibling LambdaWarmUpCosineScheduler2), both over cycles (`warm_up_steps`, `f_start`, `f_max`,
  `f_min`, `cycle_lengths`, one entry per cycle). Past the last cycle the reference fails; here the
  multiplier stays at the end-of-cycle value.
- `grad_clip_norm` > 0 clips the (accumulated) gradient to that global norm (Lightning's
  `gradient_clip_val`).
- `accumulate_grad_batches` = k > 1 wraps everything in `optax.MultiSteps`: k calls accumulate the
  mean gradient, the k-th applies one update (the schedule counts updates, not calls).

Precision: master weights are always float32 (`param_dtype`); `compute_dtype` bfloat16 runs the
modules' matmuls, convolutions and activations in bfloat16 (normalisations and softmax stay
float32 inside the layers). `remat` rematerialises the UNet's ResBlocks and attention blocks in
the backward pass (less activation memory, about a third more compute).
"""
import dataclasses
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from ldm_jax.config_checks import to_plain_dict

OPTIMIZERS = ("adamw", "adam")
SCHEDULES = ("constant", "linear_warmup", "lambda_linear", "lambda_warmup_cosine")
COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
_CYCLE_FIELDS = ("warm_up_steps", "f_start", "f_max", "f_min", "cycle_lengths")


def default_optimizer_config() -> ml_collections.ConfigDict:
    """`config.optimizer`: every field with its default (the reference AdamW, constant rate)."""
    return ml_collections.ConfigDict({
        "name": "adamw",                     # adamw | adam
        # The rate actually used; None: base_learning_rate, times batch * accumulation with scale_lr.
        "learning_rate": ml_collections.config_dict.placeholder(float),
        "base_learning_rate": 1.0e-4,
        "scale_lr": True,                    # lr = base * global batch size * accumulate_grad_batches
        "b1": 0.9,
        "b2": 0.999,
        "eps": 1.0e-8,
        "weight_decay": 0.01,                # adamw only; torch AdamW's default
        "grad_clip_norm": 0.0,               # > 0: clip the gradient's global norm to this
        "accumulate_grad_batches": 1,        # k > 1: one update every k steps, on the mean gradient
        "schedule": {
            "kind": "constant",              # constant | linear_warmup | lambda_linear | lambda_warmup_cosine
            "warmup_steps": 0,               # linear_warmup
            # lambda_*: one entry per cycle (the reference scheduler_config params).
            "warm_up_steps": [10000],
            "f_start": [1.0e-6],
            "f_max": [1.0],
            "f_min": [1.0],
            "cycle_lengths": [10000000000000],
        },
    })


def default_precision_config() -> ml_collections.ConfigDict:
    """`config.precision`: compute dtype (float32 | bfloat16) and rematerialisation."""
    return ml_collections.ConfigDict({"compute_dtype": "float32", "remat": False})


def _settings(section) -> dict:
    """The optimizer section over its defaults (a partial section is fine)."""
    merged = default_optimizer_config().to_dict()
    given = to_plain_dict(section or {})
    merged.update({k: v for k, v in given.items() if k != "schedule"})
    merged["schedule"].update(given.get("schedule") or {})
    return merged


def resolved_learning_rate(section, global_batch_size: int) -> float:
    """`learning_rate` if set; else base_learning_rate, scaled by batch * accumulation with `scale_lr`."""
    settings = _settings(section)
    if settings["learning_rate"] is not None:
        return float(settings["learning_rate"])
    lr = float(settings["base_learning_rate"])
    if settings["scale_lr"]:
        lr *= int(global_batch_size) * int(settings["accumulate_grad_batches"])
    return lr


def experiment_learning_rate(config, optimizer_section) -> float:
    """`resolved_learning_rate` for an experiment config; its global batch size is
    train.global_batch_size (else data.batch_size), needed only when the rate is scaled."""
    if optimizer_section.get("learning_rate") is not None:
        return resolved_learning_rate(optimizer_section, 0)
    for section, name in (("train", "global_batch_size"), ("data", "batch_size")):
        if section in config and config[section].get(name) is not None:
            return resolved_learning_rate(optimizer_section, int(config[section][name]))
    raise ValueError("optimizer.scale_lr needs the global batch size: set train.global_batch_size (or "
                     "data.batch_size), or give optimizer.learning_rate directly")


# -- schedules ----------------------------------------------------------------------------------------

def lambda_multiplier(kind: str, warm_up_steps, f_start, f_max, f_min, cycle_lengths):
    """count -> the reference LambdaLinearScheduler / LambdaWarmUpCosineScheduler2 multiplier, traceable."""
    lengths = [len(v) for v in (warm_up_steps, f_start, f_max, f_min, cycle_lengths)]
    if len(set(lengths)) != 1 or lengths[0] == 0:
        raise ValueError(f"optimizer.schedule: warm_up_steps, f_start, f_max, f_min and cycle_lengths need one "
                         f"entry per cycle each, got lengths {dict(zip(_CYCLE_FIELDS, lengths))}")
    if any(c <= 0 for c in cycle_lengths):
        raise ValueError(f"optimizer.schedule.cycle_lengths must be positive, got {list(cycle_lengths)}")
    as_f32 = lambda values: jnp.asarray(np.asarray(values, np.float64), jnp.float32)  # noqa: E731
    ends = np.cumsum(np.asarray(cycle_lengths, np.float64))
    starts = as_f32(np.concatenate([[0.0], ends[:-1]]))
    warm, start, top, bottom, length = map(as_f32, (warm_up_steps, f_start, f_max, f_min, cycle_lengths))
    ends = as_f32(ends)

    def multiplier(count):
        n = jnp.asarray(count, jnp.float32)
        # The reference's find_in_interval: the first cycle whose cumulative end is >= n.
        cycle = jnp.minimum(jnp.searchsorted(ends, n, side="left"), len(cycle_lengths) - 1)
        n = jnp.minimum(n - starts[cycle], length[cycle])
        w, f0, f1, fmin, cl = warm[cycle], start[cycle], top[cycle], bottom[cycle], length[cycle]
        warming = (f1 - f0) / jnp.maximum(w, 1.0) * n + f0
        if kind == "lambda_linear":
            after = fmin + (f1 - fmin) * (cl - n) / cl
        else:
            progress = jnp.minimum((n - w) / jnp.maximum(cl - w, 1.0), 1.0)
            after = fmin + 0.5 * (f1 - fmin) * (1.0 + jnp.cos(progress * np.pi))
        return jnp.where(n < w, warming, after)

    return multiplier


def make_schedule(section, learning_rate: float) -> optax.Schedule:
    """The learning rate as a function of the update count (0 for the first update)."""
    schedule = _settings(section)["schedule"]
    kind = schedule["kind"]
    if kind == "constant":
        return optax.constant_schedule(learning_rate)
    if kind == "linear_warmup":
        steps = int(schedule["warmup_steps"])
        return optax.linear_schedule(0.0, learning_rate, steps) if steps > 0 else optax.constant_schedule(learning_rate)
    if kind in ("lambda_linear", "lambda_warmup_cosine"):
        multiplier = lambda_multiplier(kind, *(schedule[name] for name in _CYCLE_FIELDS))
        return lambda count: learning_rate * multiplier(count)
    raise ValueError(f"optimizer.schedule.kind must be one of {SCHEDULES}, got {kind!r}")


# -- the optimizer ------------------------------------------------------------------------------------

def make_optimizer(section, learning_rate: float) -> optax.GradientTransformation:
    """Clipping -> Adam(W) with the scheduled, already resolved `learning_rate`, accumulated if asked.

    The rate sits in the state as an injected hyperparameter (see `current_learning_rate`).
    """
    settings = _settings(section)
    name = settings["name"]
    schedule = make_schedule(section, learning_rate)
    common = dict(b1=float(settings["b1"]), b2=float(settings["b2"]), eps=float(settings["eps"]))
    if name == "adamw":
        inner = optax.inject_hyperparams(optax.adamw)(learning_rate=schedule, weight_decay=float(
            settings["weight_decay"]), **common)
    elif name == "adam":
        inner = optax.inject_hyperparams(optax.adam)(learning_rate=schedule, **common)
    else:
        raise ValueError(f"optimizer.name must be one of {OPTIMIZERS}, got {name!r}")
    clip = float(settings["grad_clip_norm"])
    if clip < 0:
        raise ValueError(f"optimizer.grad_clip_norm must be >= 0 (0: off), got {clip}")
    tx = optax.chain(optax.clip_by_global_norm(clip), inner) if clip > 0 else inner
    every_k = int(settings["accumulate_grad_batches"])
    if every_k < 1:
        raise ValueError(f"optimizer.accumulate_grad_batches must be >= 1, got {every_k}")
    if every_k > 1:
        tx = optax.MultiSteps(tx, every_k_schedule=every_k).gradient_transformation()
    return tx


def current_learning_rate(opt_state) -> jax.Array:
    """The learning rate of the last update (of the first one, before any), from the optimizer state."""
    found = optax.tree_utils.tree_get_all_with_path(opt_state, "learning_rate")
    if not found:
        raise ValueError("the optimizer state holds no injected learning_rate (not built by make_optimizer?)")
    return jnp.asarray(found[0][1], jnp.float32)


# -- precision ----------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Precision:
    """Float32 master weights, `compute_dtype` activations, optional rematerialisation of the UNet."""
    compute_dtype: Any = jnp.float32
    remat: bool = False

    @property
    def param_dtype(self):
        return jnp.float32

    def module_kwargs(self) -> dict:
        """What every module builder takes: dtype (compute) and param_dtype (float32)."""
        return {"dtype": self.compute_dtype, "param_dtype": self.param_dtype}

    @classmethod
    def from_config(cls, section: Mapping | None) -> "Precision":
        settings = {**default_precision_config().to_dict(), **to_plain_dict(section or {})}
        name = settings["compute_dtype"]
        if name == "float16":
            raise ValueError("precision.compute_dtype float16 needs loss scaling, which training here does not do "
                             "(gradients underflow); use bfloat16, float32's range at float16's speed")
        if name not in COMPUTE_DTYPES:
            raise ValueError(f"precision.compute_dtype must be one of {sorted(COMPUTE_DTYPES)}, got {name!r}")
        return cls(COMPUTE_DTYPES[name], bool(settings["remat"]))
