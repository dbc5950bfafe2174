"""Checkpointer: sharded round trip, retention, and what happens when saving or reading goes wrong."""
import logging
import os
import signal
import time

import jax
import ml_collections
import numpy as np
import pytest
from orbax.checkpoint._src.handlers import json_checkpoint_handler

from ldm_jax.parallel import mesh as mesh_lib
from ldm_jax.training import checkpointing
from ldm_jax.training.checkpointing import Checkpointer, CheckpointError, CheckpointSaveError
from tests.parallel.test_mesh import toy_batches, toy_init, toy_train_step

RULES = mesh_lib.logical_axis_rules(mesh_lib.default_mesh_config())


@pytest.fixture(scope="module")
def mesh():
    return mesh_lib.make_mesh({"data": 4, "fsdp": 2})


@pytest.fixture(scope="module")
def trained(mesh):
    """A sharded state after one step (so params, momentum and EMA all differ) and its target."""
    batch = toy_batches(1)[0]
    state = mesh_lib.init_sharded(toy_init, mesh, RULES, jax.random.key(0), batch)
    step = mesh_lib.jit_train_step(toy_train_step, jax.tree.map(lambda x: x.sharding, state),
                                   mesh_lib.batch_sharding(mesh), mesh, RULES)
    state, _ = step(state, jax.device_put(batch, mesh_lib.batch_sharding(mesh)), jax.random.key(1))
    abstract = mesh_lib.abstract_sharded_state(toy_init, mesh, RULES, jax.random.key(0), batch)
    return state, abstract


def _with_step(state, step):
    """`state` with a distinguishable step number and parameters (for several checkpoints)."""
    return state.replace(step=state.step * 0 + step,
                         params=jax.tree.map(lambda p: p + step, state.params))


def _assert_same_state(restored, expected):
    assert jax.tree.structure(restored) == jax.tree.structure(expected)
    for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(expected)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        assert a.sharding == b.sharding


def test_round_trip_keeps_values_shardings_ema_data_state_and_config(tmp_path, trained):
    state, abstract = trained
    config = ml_collections.ConfigDict({"optimizer": {"lr": 1e-4, "betas": (0.9, 0.999)}, "name": "toy"})
    data_state = {"version": 1, "chunk": 3, "offset": 2, "first_bad": [["key-7", "truncated"]]}
    with Checkpointer(tmp_path / "ckpt") as checkpointer:
        assert checkpointer.latest_step() is None
        assert checkpointer.save(1, state, data_state, config)
        checkpointer.wait()
        assert checkpointer.latest_step() == 1
        restored, restored_data = checkpointer.restore(abstract)
        assert checkpointer.restore_config() == {"optimizer": {"lr": 1e-4, "betas": [0.9, 0.999]}, "name": "toy"}
    _assert_same_state(restored, state)
    assert restored.params["conv_mid"]["kernel"].sharding.spec == jax.sharding.PartitionSpec(None, None, "fsdp")
    assert restored.ema_params is not None
    assert restored_data == data_state
    assert set(os.listdir(tmp_path / "ckpt" / "1")) >= {"config", "data_state", "ema", "train_state"}


def test_state_can_be_donated_to_the_next_step_while_it_is_written(tmp_path, mesh, trained):
    _, abstract = trained
    batch = toy_batches(1)[0]
    state = mesh_lib.init_sharded(toy_init, mesh, RULES, jax.random.key(0), batch)
    expected = jax.device_get(state)
    step = mesh_lib.jit_train_step(toy_train_step, jax.tree.map(lambda x: x.sharding, state),
                                   mesh_lib.batch_sharding(mesh), mesh, RULES)
    with Checkpointer(tmp_path) as checkpointer:
        checkpointer.save(0, state)
        state, _ = step(state, jax.device_put(batch, mesh_lib.batch_sharding(mesh)), jax.random.key(1))
        checkpointer.wait()
        restored, _ = checkpointer.restore(abstract)
    for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(expected)):
        np.testing.assert_array_equal(np.asarray(a), b)


def test_state_without_ema_and_data_state(tmp_path, trained):
    state, abstract = trained
    state, abstract = state.replace(ema_params=None), abstract.replace(ema_params=None)
    with Checkpointer(tmp_path, async_save=False) as checkpointer:
        checkpointer.save(5, state)
        restored, data_state = checkpointer.restore(abstract)
    assert restored.ema_params is None and data_state is None
    _assert_same_state(restored, state)
    assert not (tmp_path / "5" / "ema").exists()


def test_a_relative_directory_works(tmp_path, trained, monkeypatch):
    """`--workdir out` (relative) is saved under the current directory; orbax itself needs absolute paths."""
    state, abstract = trained
    monkeypatch.chdir(tmp_path)
    with Checkpointer("relative/ckpt", async_save=False) as checkpointer:
        checkpointer.save(3, state)
        restored, _ = checkpointer.restore(abstract)
    _assert_same_state(restored, state)
    assert checkpointer.directory == tmp_path / "relative" / "ckpt" and (tmp_path / "relative" / "ckpt" / "3").is_dir()


def test_keeps_the_last_n_and_the_best(tmp_path, trained):
    state, _ = trained
    losses = {1: 0.5, 2: 0.1, 3: 0.4, 4: 0.3, 5: 0.6}
    with Checkpointer(tmp_path, keep=2, best_metric="loss", best_mode="min", keep_best=1) as checkpointer:
        for step, loss in losses.items():
            checkpointer.save(step, _with_step(state, step), metrics={"loss": loss, "lr": 1e-4})
        checkpointer.wait()
        assert list(checkpointer.all_steps()) == [2, 4, 5]
        assert checkpointer.best_step() == 2
        with pytest.raises(ValueError, match="metrics must hold 'loss'"):
            checkpointer.save(6, state, metrics={"lr": 1e-4})


def test_save_interval_and_force(tmp_path, trained):
    state, _ = trained
    with Checkpointer(tmp_path, save_interval_steps=10) as checkpointer:
        assert checkpointer.save(1, state)  # the first save of a run is always written
        assert not checkpointer.save(3, state)
        assert checkpointer.save(3, state, force=True)
        assert checkpointer.save(10, state)
        assert not checkpointer.save(11, state)
        checkpointer.wait()
        assert not checkpointer.save(10, state, force=True)  # already there: not written twice
        assert list(checkpointer.all_steps()) == [1, 3, 10]


def _damage(step_dir, how: str):
    """Truncate the array data files of the train state, or delete its metadata file."""
    files = [os.path.join(root, name) for root, _, names in os.walk(step_dir / "train_state") for name in names]
    data = [path for path in files if os.sep + "d" + os.sep in path]
    assert data and "_METADATA" in map(os.path.basename, files)
    if how == "truncate data":
        for path in data:
            with open(path, "r+b") as f:
                f.truncate(os.path.getsize(path) // 2)
    else:
        os.remove(step_dir / "train_state" / "_METADATA")


# A failed tensorstore read may call back into orbax's already closed event loop: harmless noise.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("how", ["truncate data", "delete metadata"])
def test_unreadable_latest_step_is_reported_and_the_one_before_restored(tmp_path, trained, caplog, how):
    state, abstract = trained
    with Checkpointer(tmp_path) as checkpointer:
        checkpointer.save(1, _with_step(state, 1), {"chunk": 1})
        checkpointer.save(2, _with_step(state, 2), {"chunk": 2})
        checkpointer.wait()
    _damage(tmp_path / "2", how)
    with Checkpointer(tmp_path) as checkpointer:
        with caplog.at_level(logging.WARNING, logger=checkpointing.__name__):
            restored, data_state = checkpointer.restore(abstract)
        assert "checkpoint step 2" in caplog.text and "unreadable" in caplog.text
        _assert_same_state(restored, _with_step(state, 1))
        assert data_state == {"chunk": 1}
        # The damaged step is set aside, so the run can write step 2 again.
        assert checkpointer.latest_step() == 1
        assert [name for name in os.listdir(tmp_path) if name.startswith("2.unreadable-")]
        checkpointer.save(2, _with_step(state, 2), {"chunk": 2})
        checkpointer.wait()
        assert checkpointer.restore(abstract)[1] == {"chunk": 2}
        with pytest.raises(CheckpointError, match="step 7 .* could not be restored"):
            checkpointer.restore(abstract, step=7)


def test_nothing_is_set_aside_when_no_step_fits_the_target(tmp_path, trained):
    state, abstract = trained
    with Checkpointer(tmp_path) as checkpointer:
        checkpointer.save(1, state)
        checkpointer.save(2, state)
        checkpointer.wait()
        wrong = abstract.replace(params={"other": abstract.params["head"]})
        with pytest.raises(CheckpointError, match="(?s)no checkpoint .* could be restored .*step 2: .*step 1: "):
            checkpointer.restore(wrong)
        assert list(checkpointer.all_steps()) == [1, 2]
    with pytest.raises(CheckpointError, match="no checkpoint to restore"):
        Checkpointer(tmp_path / "empty").restore(abstract)


def test_half_written_step_is_ignored(tmp_path, trained):
    state, abstract = trained
    with Checkpointer(tmp_path) as checkpointer:
        checkpointer.save(1, state, {"chunk": 1})
    partial = tmp_path / "2.orbax-checkpoint-tmp-1234567890"
    (partial / "train_state").mkdir(parents=True)
    (partial / "train_state" / "_METADATA").write_text("{not json")
    with Checkpointer(tmp_path) as checkpointer:
        assert list(checkpointer.all_steps()) == [1]
        assert checkpointer.restore(abstract)[1] == {"chunk": 1}


@pytest.fixture
def failing_json_write(monkeypatch):
    """Make every JSON item write (data state, config) fail like a full disk."""
    async def disk_full(self, x, directory):
        raise OSError(28, "No space left on device (simulated)")

    def break_writes():
        monkeypatch.setattr(json_checkpoint_handler.JsonCheckpointHandler, "_save_fn", disk_full)
    return break_writes, monkeypatch.undo


def test_failed_save_leaves_the_previous_checkpoint_readable(tmp_path, trained, failing_json_write):
    break_writes, repair = failing_json_write
    state, abstract = trained
    with Checkpointer(tmp_path, keep=1) as checkpointer:
        checkpointer.save(1, _with_step(state, 1), {"chunk": 1})
        checkpointer.wait()
        break_writes()
        checkpointer.save(2, _with_step(state, 2), {"chunk": 2})
        with pytest.raises(CheckpointSaveError, match="step 2 failed: OSError: .*No space left"):
            checkpointer.wait()
        repair()
        assert checkpointer.failed_steps == [2]
        assert list(checkpointer.all_steps()) == [1]  # keep=1, yet step 1 was not deleted
        restored, data_state = checkpointer.restore(abstract)
        _assert_same_state(restored, _with_step(state, 1))
        assert data_state == {"chunk": 1}
        checkpointer.save(3, _with_step(state, 3), {"chunk": 3})
        checkpointer.wait()
        assert list(checkpointer.all_steps()) == [3]


def test_failed_async_save_is_reported_by_the_next_save(tmp_path, trained, failing_json_write, caplog):
    break_writes, repair = failing_json_write
    state, abstract = trained
    with Checkpointer(tmp_path, keep=2) as checkpointer:
        checkpointer.save(1, state, {"chunk": 1})
        break_writes()
        checkpointer.save(2, state, {"chunk": 2})
        while checkpointer._manager.is_saving_in_progress():  # let the background write fail first
            time.sleep(0.01)
        repair()
        with caplog.at_level(logging.ERROR, logger=checkpointing.__name__):
            checkpointer.save(3, state, {"chunk": 3})
        assert "saving checkpoint step 2 failed" in caplog.text
        checkpointer.wait()
        assert checkpointer.failed_steps == [2]
        assert list(checkpointer.all_steps()) == [1, 3]
        assert checkpointer.restore(abstract)[1] == {"chunk": 3}


def test_sigterm_sets_the_preemption_flag(monkeypatch):
    previous = signal.getsignal(signal.SIGTERM)
    restore = checkpointing.install_preemption_handler()
    try:
        assert not checkpointing.preemption_requested(0)
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(200):  # Python runs the handler between bytecodes of the main thread
            if checkpointing.preemption_requested(0):
                break
            time.sleep(0.005)
        assert checkpointing.preemption_requested(0)
    finally:
        restore()
    assert signal.getsignal(signal.SIGTERM) == previous
    assert not checkpointing.preemption_requested(0)
