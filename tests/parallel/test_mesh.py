"""Meshes, logical-axis shardings and sharded init on the 8 simulated CPU devices.

`ToyRegressor`, `toy_init` / `toy_train_step` and `run_steps` are the pattern for checking that a
train step gives the same losses and parameters on any mesh: the multi-host test and the loop's
tests reuse them with their own stages.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ldm_jax.models import layers
from ldm_jax.models.unet import UNetModel, example_inputs
from ldm_jax.parallel import mesh as mesh_lib
from ldm_jax.training.train_state import TrainState


class ToyRegressor(nn.Module):
    """conv -> GroupNorm -> SiLU -> conv -> dense: the library's layers, so the real logical names."""

    @nn.compact
    def __call__(self, x):
        h = layers.conv(16, 3, name="conv_in")(x)  # kernel (3, 3, 3, 16): 3 input channels
        h = nn.with_logical_constraint(h, ("batch", "height", "width", "channels"))
        h = nn.silu(layers.group_norm(4, name="norm")(h))
        h = layers.conv(8, 3, name="conv_mid")(h)  # kernel (3, 3, 16, 8)
        return layers.dense(2, name="head")(h.mean(axis=(1, 2)))


TX = optax.sgd(0.05, momentum=0.9)
EMA_DECAY = 0.9


def toy_init(rng, batch) -> TrainState:
    """A boxed TrainState (as `TrainStage.init_state` returns it): params, momentum, EMA."""
    params = ToyRegressor().init(rng, batch["x"])["params"]
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=TX.init(params),
                      ema_params=params, extras={"scale": jnp.ones((), jnp.float32)})


def toy_train_step(state: TrainState, batch, rng):
    """One SGD-with-momentum step on a mean squared error, with an EMA of the weights."""
    del rng

    def loss_fn(params):
        prediction = ToyRegressor().apply({"params": params}, batch["x"])
        return jnp.mean(jnp.square(prediction - batch["y"]))

    loss, grads = jax.value_and_grad(loss_fn)(state.params)
    updates, opt_state = TX.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    ema = jax.tree.map(lambda e, p: EMA_DECAY * e + (1 - EMA_DECAY) * p, state.ema_params, params)
    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state, ema_params=ema)
    return new_state, {"loss": loss, "grad_norm": optax.tree.norm(grads)}


def toy_batches(n: int, batch_size: int = 8, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """`n` batches of images and targets that depend on them (per-channel means), so it can learn."""
    rng = np.random.default_rng(seed)
    batches = []
    for _ in range(n):
        x = rng.standard_normal((batch_size, 8, 8, 3)).astype(np.float32)
        batches.append({"x": x, "y": 4 * x.mean(axis=(1, 2))[:, :2]})
    return batches


def run_steps(mesh, rules, init_fn, step_fn, batches, seed: int = 0):
    """Initialise sharded on `mesh`, run `step_fn` on `batches`: (losses, final state on the host)."""
    rng = jax.random.key(seed)
    state = mesh_lib.init_sharded(init_fn, mesh, rules, rng, batches[0])
    shardings = jax.tree.map(lambda x: x.sharding, state)
    step = mesh_lib.jit_train_step(step_fn, shardings, mesh_lib.batch_sharding(mesh), mesh, rules)
    losses = []
    for i, batch in enumerate(batches):
        batch = jax.device_put(batch, mesh_lib.batch_sharding(mesh))
        state, metrics = step(state, batch, jax.random.fold_in(rng, i))
        losses.append(float(metrics["loss"]))
    return np.array(losses), jax.device_get(state)


RULES = mesh_lib.logical_axis_rules(mesh_lib.default_mesh_config())


def test_make_mesh_resolves_the_remaining_devices():
    mesh = mesh_lib.make_mesh(mesh_lib.default_mesh_config())
    assert mesh.axis_names == ("data", "fsdp", "tensor")
    assert dict(mesh.shape) == {"data": 8, "fsdp": 1, "tensor": 1}
    assert dict(mesh_lib.make_mesh({"data": -1, "fsdp": 2}).shape) == {"data": 4, "fsdp": 2, "tensor": 1}
    assert dict(mesh_lib.make_mesh({"data": 1}, jax.devices()[:1]).shape) == {"data": 1, "fsdp": 1, "tensor": 1}


@pytest.mark.parametrize("shape, message", [
    ({"data": 3}, "needs 3 devices, but there are 8"),
    ({"data": -1, "fsdp": 3}, "8 devices do not split into 3-device groups"),
    ({"data": -1, "fsdp": -1}, "at most one -1"),
    ({"data": 0}, "sizes must be positive"),
    ({"model": 2}, "unknown mesh axes \\['model'\\]"),
])
def test_make_mesh_rejects_shapes_that_do_not_fit(shape, message):
    with pytest.raises(ValueError, match=message):
        mesh_lib.make_mesh(shape)


def test_rules_must_name_mesh_axes():
    mesh = mesh_lib.make_mesh({"data": -1})
    abstract = jax.eval_shape(toy_init, jax.random.key(0), toy_batches(1)[0])
    with pytest.raises(ValueError, match="'embed' -> 'model': no mesh axis 'model'"):
        mesh_lib.state_shardings(abstract, mesh, (("embed", "model"),))
    with pytest.raises(ValueError, match="logical_axis_rules\\[0\\]"):
        mesh_lib.logical_axis_rules(("embed",))


def test_fsdp_shards_parameters_moments_and_ema_as_the_rules_say():
    mesh = mesh_lib.make_mesh({"data": 4, "fsdp": 2})
    state = mesh_lib.init_sharded(toy_init, mesh, RULES, jax.random.key(0), toy_batches(1)[0])
    for tree in (state.params, state.opt_state[0].trace, state.ema_params):
        assert tree["conv_mid"]["kernel"].sharding.spec == jax.sharding.PartitionSpec(None, None, "fsdp")
        assert tree["head"]["kernel"].sharding.spec == jax.sharding.PartitionSpec("fsdp")
        # 3 input channels do not split two ways: that dimension stays whole.
        assert tree["conv_in"]["kernel"].sharding.spec == jax.sharding.PartitionSpec()
        assert tree["norm"]["scale"].sharding.spec == jax.sharding.PartitionSpec()
        assert not isinstance(tree["conv_mid"]["kernel"], nn.Partitioned)  # returned unboxed
    shard = state.params["conv_mid"]["kernel"].addressable_shards[0]
    assert shard.data.shape == (3, 3, 8, 8)  # each device holds half of the 16 input features
    assert state.step.sharding.spec == jax.sharding.PartitionSpec()
    assert state.extras["scale"].sharding.is_fully_replicated


def test_tensor_axis_splits_output_features():
    mesh = mesh_lib.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    abstract = jax.eval_shape(toy_init, jax.random.key(0), toy_batches(1)[0])
    shardings = mesh_lib.state_shardings(abstract, mesh, RULES)
    assert shardings.params["conv_mid"]["kernel"].spec == jax.sharding.PartitionSpec(None, None, "fsdp", "tensor")
    assert shardings.params["conv_mid"]["bias"].spec == jax.sharding.PartitionSpec("tensor")
    assert shardings.opt_state[0].trace["head"]["kernel"].spec == jax.sharding.PartitionSpec("fsdp", "tensor")


def test_unboxed_moments_follow_their_parameters_by_structure():
    def init_with_plain_moments(rng, batch):
        state = toy_init(rng, batch)
        plain = nn.meta.unbox(state.params)
        return state.replace(opt_state=TX.init(plain), ema_params=plain)

    mesh = mesh_lib.make_mesh({"data": 4, "fsdp": 2})
    abstract = jax.eval_shape(init_with_plain_moments, jax.random.key(0), toy_batches(1)[0])
    shardings = mesh_lib.state_shardings(abstract, mesh, RULES)
    expected = jax.sharding.PartitionSpec(None, None, "fsdp")
    assert shardings.opt_state[0].trace["conv_mid"]["kernel"].spec == expected
    assert shardings.ema_params["conv_mid"]["kernel"].spec == expected


def test_tiny_unet_state_shardings_cover_every_leaf():
    unet = UNetModel(image_size=8, in_channels=4, out_channels=4, model_channels=32, num_res_blocks=1,
                     attention_resolutions=(2,), channel_mult=(1, 2), num_heads=2,
                     use_spatial_transformer=True, context_dim=16, legacy=False)
    tx = optax.adamw(1e-4)

    def init(rng):
        params = {"unet": unet.init(rng, *example_inputs(unet))["params"]}
        return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                          ema_params=params)

    mesh = mesh_lib.make_mesh({"data": 4, "fsdp": 2})
    abstract = jax.eval_shape(init, jax.random.key(0))
    shardings = mesh_lib.state_shardings(abstract, mesh, RULES)
    values = nn.meta.unbox(abstract)
    assert jax.tree.structure(shardings) == jax.tree.structure(values)
    flat = jax.tree_util.tree_flatten_with_path(shardings.params)[0]
    kernels = [(path, s) for path, s in flat if path[-1].key == "kernel"]
    assert kernels and all(isinstance(s, jax.sharding.NamedSharding) for _, s in flat)
    shapes = dict(jax.tree_util.tree_flatten_with_path(values.params)[0])
    for path, sharding in kernels:  # input features (`embed`, the second-last axis) over fsdp
        expected = "fsdp" if shapes[path].shape[-2] % 2 == 0 else None
        assert sharding.spec[len(shapes[path].shape) - 2] == expected, jax.tree_util.keystr(path)
    adam = shardings.opt_state[0]
    assert jax.tree.leaves(adam.mu) == jax.tree.leaves(shardings.params)
    assert adam.count.spec == jax.sharding.PartitionSpec()


def test_data_parallel_fsdp_and_one_device_give_the_same_losses_and_parameters():
    batches = toy_batches(1) * 4  # the same batch: the loss must fall
    meshes = {"data 8": mesh_lib.make_mesh({"data": 8}),
              "data 4 x fsdp 2": mesh_lib.make_mesh({"data": 4, "fsdp": 2}),
              "one device": mesh_lib.make_mesh({"data": 1}, jax.devices()[:1])}
    results = {name: run_steps(mesh, RULES, toy_init, toy_train_step, batches) for name, mesh in meshes.items()}
    reference_losses, reference_state = results.pop("one device")
    assert reference_losses[-1] < reference_losses[0]  # it does learn
    for name, (losses, state) in results.items():
        np.testing.assert_allclose(losses, reference_losses, rtol=1e-5, err_msg=name)
        for tree, expected in ((state.params, reference_state.params), (state.ema_params, reference_state.ema_params),
                               (state.opt_state, reference_state.opt_state)):
            jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=name),
                         tree, expected)
        assert int(state.step) == len(batches)


def test_jit_train_step_keeps_shardings_and_donates_the_state():
    mesh = mesh_lib.make_mesh({"data": 4, "fsdp": 2})
    batch = toy_batches(1)[0]
    state = mesh_lib.init_sharded(toy_init, mesh, RULES, jax.random.key(0), batch)
    shardings = jax.tree.map(lambda x: x.sharding, state)
    step = mesh_lib.jit_train_step(toy_train_step, shardings, mesh_lib.batch_sharding(mesh), mesh, RULES)
    lowered = step.lower(state, jax.device_put(batch, mesh_lib.batch_sharding(mesh)), jax.random.key(1))
    assert "sharding_constraint" in lowered.as_text()  # the model's activation constraint applied
    new_state, metrics = step(state, jax.device_put(batch, mesh_lib.batch_sharding(mesh)), jax.random.key(1))
    assert state.params["conv_mid"]["kernel"].is_deleted()
    assert jax.tree.map(lambda x: x.sharding, new_state) == shardings
    assert metrics["loss"].sharding.is_fully_replicated


def test_abstract_sharded_state_is_a_restore_target():
    mesh = mesh_lib.make_mesh({"data": 4, "fsdp": 2})
    abstract = mesh_lib.abstract_sharded_state(toy_init, mesh, RULES, jax.random.key(0), toy_batches(1)[0])
    kernel = abstract.params["conv_mid"]["kernel"]
    assert isinstance(kernel, jax.ShapeDtypeStruct) and kernel.shape == (3, 3, 16, 8)
    assert kernel.sharding.spec == jax.sharding.PartitionSpec(None, None, "fsdp")
