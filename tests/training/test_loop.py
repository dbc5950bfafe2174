"""The training loop end to end on the built-in dataset: resume equals an uninterrupted run,
preemption saves and stops, non-finite steps are undone, and command-line overrides."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ldm_jax.config_files import apply_overrides, load_config
from ldm_jax.training import loop
from ldm_jax.training.experiment import ExperimentConfigError, validate_experiment_config, with_training_defaults
from ldm_jax.training.train_state import TrainState
from tests.conftest import REPO

CONFIG = str(REPO / "configs" / "builtin_shapes.py")


def _config(variant: str, **train):
    config = with_training_defaults(load_config(f"{CONFIG}:{variant}"))
    config.train.update(log_every_steps=1, image_every_steps=0, **train)
    config.checkpoint.update(every_steps=2, async_save=False)
    return config


def _losses(workdir) -> dict[int, float]:
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    return {record["step"]: record["loss"] for record in map(json.loads, lines)}


@pytest.mark.slow
def test_a_resumed_run_computes_what_an_uninterrupted_one_does(tmp_path):
    loop.train_and_evaluate(_config("ldm_tiny", num_steps=4), tmp_path / "whole", progress=False)
    loop.train_and_evaluate(_config("ldm_tiny", num_steps=2), tmp_path / "resumed", progress=False)
    summary = loop.train_and_evaluate(_config("ldm_tiny", num_steps=4), tmp_path / "resumed", progress=False)
    assert summary["step"] == 4
    whole, resumed = _losses(tmp_path / "whole"), _losses(tmp_path / "resumed")
    assert sorted(resumed) == [1, 2, 3, 4]
    assert resumed == whole  # bitwise on the CPU
    assert sorted(p.name for p in (tmp_path / "resumed" / "checkpoints").iterdir() if p.name.isdigit()) == ["2", "4"]


@pytest.mark.slow
def test_preemption_saves_and_stops_on_a_tensor_parallel_mesh(tmp_path, monkeypatch):
    monkeypatch.setattr(loop.checkpointing, "preemption_requested", lambda step=None: step == 1)
    config = _config("ldm_tiny", num_steps=4)
    config.mesh.shape = {"data": 4, "fsdp": 1, "tensor": 2}  # the batch is split over data only
    summary = loop.train_and_evaluate(config, tmp_path, progress=False)
    assert summary["step"] == 1
    assert (tmp_path / "checkpoints" / "1").is_dir()


def test_non_finite_steps_keep_the_state_and_are_counted():
    def train_step(state, batch, rng):
        bad = batch["x"].sum() > 0
        new = state.replace(params=state.params + 1.0, step=state.step + 1)
        return new, {"loss": jnp.where(bad, jnp.nan, 1.0)}

    step = jax.jit(loop.guarded_step(train_step))
    state = TrainState(step=jnp.zeros((), jnp.int32), params=jnp.zeros(3), opt_state=None)
    state, metrics = step(state, {"x": jnp.ones(2)}, jax.random.key(0))
    assert int(state.step) == 1 and float(metrics["nonfinite"]) == 1.0
    np.testing.assert_array_equal(state.params, np.zeros(3))
    state, metrics = step(state, {"x": -jnp.ones(2)}, jax.random.key(0))
    assert int(state.step) == 2 and float(metrics["nonfinite"]) == 0.0
    np.testing.assert_array_equal(state.params, np.ones(3))


def test_overrides_set_typed_fields_and_name_unknown_ones():
    config = with_training_defaults(load_config(f"{CONFIG}:ldm_tiny"))
    apply_overrides(config, ["--config.train.num_steps=7", "--config.train.global_batch_size=4",
                             "--config.optimizer.learning_rate=1e-3", "--config.data.flip=true", "--config.seed=3"])
    assert (config.train.num_steps, config.optimizer.learning_rate, config.data.flip, config.seed) == (7, 1e-3, True, 3)
    assert config.data.batch_size == 4  # follows train.global_batch_size
    with pytest.raises(ValueError, match="config.train.num_step: no such field; did you mean config.train.num_steps"):
        apply_overrides(config, ["--config.train.num_step=3"])
    with pytest.raises(ValueError, match=r"--config.train.num_steps=many: .* \(expected int\)"):
        apply_overrides(config, ["--config.train.num_steps=many"])


def test_validation_names_every_bad_field():
    config = with_training_defaults(load_config(f"{CONFIG}:ldm_tiny"))
    with config.unlocked():
        config.train.log_evry_steps = 3
        config.data.nmae = "builtin"
    with config.checkpoint.ignore_type():
        config.checkpoint.keep = "two"
    with pytest.raises(ExperimentConfigError) as error:
        validate_experiment_config(config)
    message = str(error.value)
    assert "config.train.log_evry_steps: unknown field; did you mean config.train.log_every_steps?" in message
    assert "config.checkpoint.keep: expected int, got str 'two'" in message
    assert "config.data.nmae: unknown field" in message
