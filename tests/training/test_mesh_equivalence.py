"""The real LDM train step on 8 simulated devices: pure data parallel, FSDP (4 x 2), tensor parallel
(4 x 2) and one device give the same losses and parameters."""
import jax
import numpy as np
import pytest

from ldm_jax.config_files import load_config
from ldm_jax.data.config import pipeline_from_config
from ldm_jax.data.pipeline import to_global_batch
from ldm_jax.parallel import mesh as mesh_lib
from ldm_jax.training import loop
from ldm_jax.training.experiment import stage_from_config, with_training_defaults
from tests.conftest import REPO


@pytest.mark.slow
def test_data_parallel_fsdp_tensor_parallel_and_one_device_agree():
    config = with_training_defaults(load_config(f"{REPO / 'configs' / 'builtin_shapes.py'}:ldm_tiny"))
    stage = stage_from_config(config)
    pipeline = pipeline_from_config(config.data)
    batches = [{k: v for k, v in next(pipeline).items() if isinstance(v, np.ndarray) and v.dtype != object}
               for _ in range(2)]
    pipeline.close()
    host_state = jax.device_get(jax.jit(stage.init_state)(jax.random.key(0), batches[0]))
    runs = {}
    for name, shape, devices in (("data", {"data": 8}, jax.devices()), ("fsdp", {"data": 4, "fsdp": 2}, jax.devices()),
                                 ("tensor", {"data": 4, "tensor": 2}, jax.devices()),
                                 ("one device", {"data": 1}, jax.devices()[:1])):
        config.mesh.shape = {"data": 1, "fsdp": 1, "tensor": 1, **shape}
        mesh = mesh_lib.make_mesh(config.mesh, devices)
        rules = mesh_lib.logical_axis_rules(config.mesh)
        shardings = mesh_lib.state_shardings(jax.eval_shape(stage.init_state, jax.random.key(0), batches[0]),
                                             mesh, rules)
        state = jax.device_put(host_state, shardings)
        step = mesh_lib.jit_train_step(loop.guarded_step(stage.train_step), shardings,
                                       mesh_lib.batch_sharding(mesh), mesh, rules)
        losses = []
        for batch in batches:
            state, metrics = step(state, to_global_batch(batch, mesh, mesh_lib.batch_sharding(mesh).spec), jax.random.key(1))
            losses.append((float(metrics["loss"]), float(metrics["grad_norm"])))
        runs[name] = (losses, jax.device_get(state.params))
        if name in ("fsdp", "tensor"):  # the model axis really shards: some kernel is split over it
            specs = [s.spec for s in jax.tree.leaves(shardings.params)]
            assert any(name in str(spec) for spec in specs)
    reference_losses, reference_params = runs["one device"]
    for name in ("data", "fsdp", "tensor"):
        losses, params = runs[name]
        np.testing.assert_allclose(losses, reference_losses, rtol=1e-5)  # losses and gradient norms
        # Adam divides by sqrt(v): where a gradient is ~0, float noise in the reduction order can flip
        # an update's sign (the update moves by up to twice the learning rate), so parameters agree up to
        # that, not to float precision.
        for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(reference_params)):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=2 * config.optimizer.learning_rate)
