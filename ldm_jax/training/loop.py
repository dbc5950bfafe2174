"""`train_and_evaluate(config, workdir)`: either stage, on one CPU or a multi-host mesh, resumable.

    ldm-jax train --config configs/kl_f4.py:tiny --workdir /tmp/ae --config.train.num_steps=100

What one run does:
1. checks the config, joins the other hosts (`jax.distributed`) when launched on several, builds the
   mesh and the per-process data pipeline;
2. restores the latest readable checkpoint in `workdir/checkpoints` (train state, EMA, data-iterator
   state) or initialises the state directly into its shards (and loads `pretrained` weights);
3. runs the jitted, state-donating train step; a step whose loss is not finite is undone (the state
   is kept, the step counted) and `train.max_nan_steps` of them in a row stop the run with a checkpoint;
4. logs averaged metrics every `train.log_every_steps` (console, `workdir/metrics.jsonl`), writes PNG
   grids every `train.image_every_steps`, checkpoints every `checkpoint.every_steps`, at the end, and
   when SIGTERM arrives (then exits cleanly);
5. at the end exports the trained model as a CompVis-format checkpoint that `ldm-jax sample`,
   `LatentDiffusionPipeline.from_checkpoint` and `pretrained.first_stage` read:
   `workdir/first_stage.safetensors` (stage 1) or `workdir/model.safetensors` (stage 2, EMA weights).
The step's rng is `fold_in(key(seed), step)`, and the data state is saved with the weights, so a
resumed run computes exactly what an uninterrupted one would.
"""
import logging
import pathlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from tqdm.auto import tqdm

from ldm_jax.data.config import pipeline_from_config
from ldm_jax.data.pipeline import to_global_batch
from ldm_jax.parallel import distributed, mesh as mesh_lib
from ldm_jax.training import checkpointing, metrics as metrics_lib
from ldm_jax.training.experiment import stage_from_config, validate_experiment_config, with_training_defaults
from ldm_jax.training.train_state import TrainState

logger = logging.getLogger(__name__)


class NonFiniteLoss(RuntimeError):
    """The loss was not finite for `train.max_nan_steps` steps in a row."""


def guarded_step(train_step):
    """`train_step` with the step folded into the rng, and non-finite updates undone.

    A step whose loss is NaN / Inf returns the input state with only `step` advanced (the batch is
    consumed, nothing learned from it) and reports `nonfinite` = 1 in its metrics.
    """
    def step(state: TrainState, batch, rng):
        new_state, metrics = train_step(state, batch, jax.random.fold_in(rng, state.step))
        finite = jnp.isfinite(metrics["loss"])
        kept = jax.tree.map(lambda new, old: jnp.where(finite, new, old), new_state, state)
        return kept.replace(step=state.step + 1), {**metrics, "nonfinite": 1.0 - finite.astype(jnp.float32)}

    return step


def _device_fields(batch: dict) -> dict:
    """The numeric fields of a batch (strings and lists stay on the host)."""
    return {name: value for name, value in batch.items() if isinstance(value, np.ndarray) and value.dtype != object}


def train_and_evaluate(config, workdir, *, progress: bool = True) -> dict:
    """Trains `config` in `workdir` up to `config.train.num_steps`; returns the last logged metrics."""
    config = with_training_defaults(config)
    validate_experiment_config(config)
    distributed.maybe_initialize_distributed()
    workdir = pathlib.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)

    mesh = mesh_lib.make_mesh(config.mesh)
    rules = mesh_lib.logical_axis_rules(config.mesh)
    batch_sharding = mesh_lib.batch_sharding(mesh)  # over data x fsdp: tensor-parallel devices share examples
    stage = stage_from_config(config)
    pipeline = pipeline_from_config(config.data)
    start_state = pipeline.get_state()
    example = to_global_batch(_device_fields(next(pipeline)), mesh, batch_sharding.spec)
    pipeline.set_state(start_state)  # the example is also the first training batch

    base_rng = jax.random.key(config.seed)
    init_rng, run_rng = jax.random.split(base_rng)
    checkpointer = checkpointing.Checkpointer(
        workdir / "checkpoints", keep=config.checkpoint.keep, best_metric=config.checkpoint.best_metric or None,
        best_mode=config.checkpoint.best_mode, async_save=config.checkpoint.async_save)
    abstract = mesh_lib.abstract_sharded_state(stage.init_state, mesh, rules, init_rng, example)
    if checkpointer.latest_step() is not None:
        state, data_state = checkpointer.restore(abstract)
        if data_state is not None:
            pipeline.set_state(data_state)
        logger.info("resumed from step %d in %s", int(state.step), workdir)
    else:
        state = _fresh_state(stage, mesh, rules, init_rng, example)
    shardings = jax.tree.map(lambda x: x.sharding, state)
    train_step = mesh_lib.jit_train_step(guarded_step(stage.train_step), shardings, batch_sharding, mesh, rules)

    num_steps = config.train.num_steps
    writer = metrics_lib.MetricsWriter(workdir, total_steps=num_steps, batch_size=config.train.global_batch_size)
    averages = metrics_lib.MetricAverager()
    restore_signal = checkpointing.install_preemption_handler()
    step = int(state.step)
    nonfinite_in_row, last = 0, {}
    bar = tqdm(total=num_steps, initial=step, desc="training", disable=not progress or jax.process_index() != 0)
    writer.restart_clock(step)

    def save(force: bool = False, scalars=None):
        checkpointer.save(step, state, data_state=pipeline.get_state(), config=config.to_dict(),
                          metrics=scalars, force=force)

    try:
        while step < num_steps:
            local = next(pipeline)
            batch = to_global_batch(_device_fields(local), mesh, batch_sharding.spec)
            state, step_metrics = train_step(state, batch, run_rng)
            step += 1
            bar.update(1)
            averages.update(step_metrics)
            nonfinite_in_row = nonfinite_in_row + 1 if float(step_metrics["nonfinite"]) else 0
            if nonfinite_in_row >= config.train.max_nan_steps:
                save(force=True)
                checkpointer.wait()
                raise NonFiniteLoss(f"the loss was not finite for {nonfinite_in_row} steps in a row (up to step "
                                    f"{step}); the last good state is checkpointed in {workdir / 'checkpoints'}")
            if step % config.train.log_every_steps == 0 or step == num_steps:
                last = averages.compute_and_reset()
                writer.write_scalars(step, last)
                bar.set_postfix(loss=f"{last['loss']:.4g}")
            every = config.train.image_every_steps
            if every and (step % every == 0 or step == num_steps):
                writer.write_images(step, jax.device_get(stage.log_images(state, batch, run_rng)))
            if step % config.checkpoint.every_steps == 0 or step == num_steps:
                save(scalars=last or None)
            if checkpointing.preemption_requested(step):
                logger.warning("preemption requested: saving step %d and stopping", step)
                save(force=True)
                break
        if step >= num_steps:
            export_model(stage, state, config, workdir)
    finally:
        bar.close()
        restore_signal()
        checkpointer.wait()
        checkpointer.close()
        writer.close()
        pipeline.close()
    return {"step": step, **last}


def _fresh_state(stage, mesh, rules, rng, example) -> TrainState:
    """A new state created in its shards, with the configured pretrained weights loaded."""
    state = mesh_lib.init_sharded(stage.init_state, mesh, rules, rng, example)
    load_pretrained = getattr(stage, "load_pretrained", None)
    if load_pretrained is None:
        return state
    variables, scale_factor = load_pretrained()
    if not variables:
        return state
    shardings = jax.tree.map(lambda x: x.sharding, state)
    return jax.device_put(stage.with_variables(state, variables, scale_factor), shardings)


def export_model(stage, state: TrainState, config, workdir: pathlib.Path) -> pathlib.Path:
    """Writes the trained model (EMA weights where kept) as a CompVis-format .safetensors + YAML."""
    from jax.experimental import multihost_utils

    from ldm_jax.convert import compvis

    model_config = ml_collections.ConfigDict({"model": config.model.to_dict()})
    if "unet" in config.model:
        variables = stage.variables(state, use_ema=state.ema_params is not None)
        model_config.model.diffusion.scale_factor = float(jax.device_get(state.extras["scale_factor"]))
        path = workdir / "model.safetensors"
    else:
        variables = stage.variables(state)
        path = workdir / "first_stage.safetensors"
    variables = multihost_utils.process_allgather(variables, tiled=True)  # every process takes part
    if jax.process_index() == 0:
        compvis.save_checkpoint(path, model_config, variables)
        logger.info("exported %s", path)
    return path
