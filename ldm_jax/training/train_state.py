"""The state every train step carries, and the interface a training stage offers the loop.

One `TrainState` pytree serves both stages, so checkpointing, sharding and the loop never look
inside it:

    TrainState(step, params, opt_state, ema_params, frozen, extras)

- `params`: what the optimizer updates, keyed by component, e.g. {"unet": ..., "cond_stage": ...}
  (stage 2) or {"autoencoder": ..., "discriminator": ...} (stage 1).
- `opt_state`: the optimizer state(s), keyed the same way when a stage has several optimizers.
- `ema_params`: the exponential moving average of `params` (or of the part a stage averages),
  None when the stage keeps no EMA.
- `frozen`: variables used but not trained (the first stage and a CLIP text encoder in stage 2)
  and non-parameter collections (e.g. "batch_stats").
- `extras`: small arrays a stage needs to carry: the latent `scale_factor`, counters.

A stage is an object with three pure methods (see `TrainStage`); the loop jits them with explicit
shardings, donates the state, and folds the step into the rng itself.
"""
from typing import Any, Protocol

import flax
import jax

Batch = dict[str, Any]
Metrics = dict[str, jax.Array]


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    params: Any
    opt_state: Any
    ema_params: Any = None
    frozen: Any = None
    extras: Any = None


class TrainStage(Protocol):
    """What the training loop needs from a stage (autoencoder or latent diffusion)."""

    def init_state(self, rng: jax.Array, batch: Batch) -> TrainState:
        """A fresh state; traceable under `jax.eval_shape` (the loop derives shardings from it)."""

    def train_step(self, state: TrainState, batch: Batch, rng: jax.Array) -> tuple[TrainState, Metrics]:
        """One optimizer update on `batch`; `rng` is already folded with the step. `metrics` holds scalars,
        among them the total `loss` (the loop undoes steps where it is not finite)."""

    def log_images(self, state: TrainState, batch: Batch, rng: jax.Array) -> dict[str, jax.Array]:
        """Images to write as PNG grids (NHWC in [-1, 1]): inputs, reconstructions or samples."""
