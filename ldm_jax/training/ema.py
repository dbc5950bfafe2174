"""Exponential moving average of parameters, as the reference `LitEma` (ldm/modules/ema.py).

    ema = ema_init(params, settings)                      # None when settings.use_ema is off
    ema, num_updates = ema_update(ema, params, num_updates, decay=0.9999)

`LitEma` counts its updates and, with `use_num_upates` (sic) on, warms the decay up:
before the n-th update (n = 1, 2, ...) it sets num_updates = n and uses

    decay_n = min(decay, (1 + n) / (10 + n))
    ema    <- ema - (1 - decay_n) * (ema - params)

so early averages follow the weights closely (decay 2/11 at the first update) and the average
only becomes slow once (1 + n) / (10 + n) exceeds `decay`. With the warm-up off the decay is
constant. The count is kept by the caller (the LDM stage carries it in `TrainState.extras`, where
the reference checkpoint keeps `model_ema.num_updates`), so everything here is a pure function.
"""
import dataclasses
from typing import Any, Mapping

import jax
import jax.numpy as jnp

PyTree = Any


@dataclasses.dataclass(frozen=True)
class EmaSettings:
    """`use_ema` off -> no average is kept; `decay` the target decay; `warmup` LitEma's count-based ramp."""
    use_ema: bool = True
    decay: float = 0.9999
    warmup: bool = True

    def __post_init__(self):
        if not 0.0 <= self.decay <= 1.0:
            raise ValueError(f"ema.decay must be in [0, 1], got {self.decay}")

    @classmethod
    def from_config(cls, section: Mapping | None, use_ema_default: bool = True) -> "EmaSettings":
        """From a config section {use_ema, decay, warmup}; a missing / None `use_ema` takes the default."""
        section = dict(section.to_dict() if hasattr(section, "to_dict") else section or {})
        use_ema = section.get("use_ema")
        return cls(use_ema=use_ema_default if use_ema is None else bool(use_ema),
                   decay=float(section.get("decay", cls.decay)), warmup=bool(section.get("warmup", cls.warmup)))


def ema_decay(decay: float, num_updates: jax.Array, warmup: bool = True) -> jax.Array:
    """The decay used by update number `num_updates` (1 for the first): min(decay, (1 + n) / (10 + n))."""
    decay = jnp.asarray(decay, jnp.float32)
    if not warmup:
        return decay
    n = jnp.asarray(num_updates, jnp.float32)
    return jnp.minimum(decay, (1.0 + n) / (10.0 + n))


def ema_init(params: PyTree, settings: EmaSettings) -> PyTree | None:
    """A copy of `params` to average into (fresh buffers, so it can be donated with them), or None."""
    if not settings.use_ema:
        return None
    return jax.tree.map(lambda p: jnp.array(p, copy=True), params)


def ema_update(ema: PyTree, params: PyTree, num_updates: jax.Array, decay: float = 0.9999,
               warmup: bool = True) -> tuple[PyTree, jax.Array]:
    """One LitEma step: (new average, new count). `num_updates` counts the updates done so far.

    Each leaf keeps its own dtype (the reference casts the shadow to the parameter's type); the
    interpolation itself runs in float32.
    """
    num_updates = jnp.asarray(num_updates, jnp.int32) + 1
    one_minus_decay = 1.0 - ema_decay(decay, num_updates, warmup)

    def step(shadow, param):
        shadow32 = shadow.astype(jnp.float32)
        return (shadow32 - one_minus_decay * (shadow32 - param.astype(jnp.float32))).astype(param.dtype)

    return jax.tree.map(step, ema, params), num_updates
