"""The device mesh, the logical-axis rules and the shardings of the train state and the batch.

Model code only names logical axes (`embed`, `mlp`, `heads`, `vocab`, `norm` on parameters,
`batch`, ... on activations; see `ldm_jax.models.layers`). The config maps them to the mesh axes
`data` (batch), `fsdp` (batch *and* parameter / optimizer-state shards) and `tensor` (model
parallel). The loop then does, with no knowledge of the models:

    mesh = make_mesh(config.mesh)
    rules = logical_axis_rules(config.mesh)
    state = init_sharded(stage.init_state, mesh, rules, rng, batch)        # created in its shards
    shardings = jax.tree.map(lambda x: x.sharding, state)
    step = jit_train_step(stage.train_step, shardings, batch_sharding(mesh), mesh, rules)
    state, metrics = step(state, batch, rng)

Shardings are derived abstractly: `jax.eval_shape(init)` -> `nn.get_partition_spec` -> mesh axes.
An array dimension a rule would shard over mesh axes whose size does not divide it (the 3 input
channels of a first conv over `fsdp=2`) stays whole on that dimension instead of failing.
"""
from typing import Any, Callable, Mapping, Sequence

import flax.linen as nn
import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

# Mesh axes, outermost first: `tensor` innermost, so its collectives use the fastest links.
MESH_AXES = ("data", "fsdp", "tensor")
# The axes a batch is split over (FSDP is data parallel for activations).
BATCH_AXES = ("data", "fsdp")

Rules = tuple[tuple[str, Any], ...]


def default_mesh_config() -> ml_collections.ConfigDict:
    """`mesh.shape` (mesh axis -> size, -1 = the remaining devices) and `mesh.logical_axis_rules`.

    The default is pure data parallelism. FSDP (`{"data": -1, "fsdp": 4}`) shards every kernel's
    input features (`embed`) and the matching optimizer moments over `fsdp`; tensor parallelism
    splits output features (`mlp`), heads and vocabulary rows over `tensor`.
    """
    config = ml_collections.ConfigDict()
    config.shape = {"data": -1, "fsdp": 1, "tensor": 1}
    # (logical name, mesh axis or axes or None), in order of precedence: a mesh axis already used
    # by an earlier dimension of the same array is not used twice.
    config.logical_axis_rules = (
        # activations
        ("batch", BATCH_AXES),
        ("length", None),
        ("height", None),
        ("width", None),
        ("channels", None),
        # parameters
        ("embed", "fsdp"),
        ("mlp", "tensor"),
        ("heads", "tensor"),
        ("vocab", "tensor"),
        ("norm", None),
    )
    return config


def logical_axis_rules(mesh_config) -> Rules:
    """The rules of `mesh_config` (or the rules themselves) as a tuple of (name, mesh axes) pairs."""
    rules = getattr(mesh_config, "logical_axis_rules", mesh_config)
    normalised = []
    for i, rule in enumerate(rules):
        if len(rule) != 2 or not isinstance(rule[0], str):
            raise ValueError(f"mesh.logical_axis_rules[{i}]: expected (logical name, mesh axes), got {rule!r}")
        name, axes = rule
        if axes is not None and not isinstance(axes, str):
            axes = tuple(axes)
            if not all(isinstance(axis, str) for axis in axes):
                raise ValueError(f"mesh.logical_axis_rules[{i}] ({name!r}): mesh axes must be names, got {axes!r}")
        normalised.append((name, axes))
    return tuple(normalised)


def mesh_shape(shape: Mapping[str, int], num_devices: int) -> dict[str, int]:
    """`shape` with the -1 entry resolved, in `MESH_AXES` order; a clear error when it cannot fit."""
    shape = dict(shape)
    unknown = sorted(set(shape) - set(MESH_AXES))
    if unknown:
        raise ValueError(f"mesh.shape: unknown mesh axes {unknown}; expected some of {list(MESH_AXES)}")
    sizes = {axis: int(shape.get(axis, 1)) for axis in MESH_AXES}
    free = [axis for axis, size in sizes.items() if size == -1]
    bad = [axis for axis, size in sizes.items() if size == 0 or size < -1]
    if bad or len(free) > 1:
        raise ValueError(f"mesh.shape {sizes}: sizes must be positive, with at most one -1 "
                         f"(= the remaining devices)")
    fixed = int(np.prod([size for size in sizes.values() if size != -1]))
    if free:
        if num_devices % fixed:
            raise ValueError(f"mesh.shape {sizes}: {num_devices} devices do not split into "
                             f"{fixed}-device groups for mesh.shape.{free[0]} = -1")
        sizes[free[0]] = num_devices // fixed
    elif fixed != num_devices:
        raise ValueError(f"mesh.shape {sizes} needs {fixed} devices, but there are {num_devices}")
    return sizes


def make_mesh(mesh_config, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A `data` x `fsdp` x `tensor` mesh over `devices` (default: all devices of all processes).

    `mesh_config` is the `mesh` config section (with `.shape`) or a plain axis -> size mapping.
    The axes are `Auto`, so the partitioner propagates shardings between the given constraints.
    """
    devices = list(jax.devices() if devices is None else devices)
    shape = getattr(mesh_config, "shape", mesh_config)
    sizes = mesh_shape(shape, len(devices))
    auto = (jax.sharding.AxisType.Auto,) * len(MESH_AXES)
    # Multi-slice TPU pods need `mesh_utils.create_hybrid_device_mesh` instead (not handled here).
    return jax.make_mesh(tuple(sizes.values()), MESH_AXES, axis_types=auto, devices=devices)


def replicated(mesh: Mesh) -> NamedSharding:
    """The sharding of a value every device holds whole (rng keys, scalars, metrics)."""
    return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Batches split along their leading axis over `data` x `fsdp`; other dimensions whole."""
    axes = tuple(axis for axis in BATCH_AXES if axis in mesh.axis_names)
    return NamedSharding(mesh, PartitionSpec(axes))


def _check_rules(rules: Rules, mesh: Mesh) -> None:
    for name, axes in rules:
        for axis in (axes,) if isinstance(axes, str) else (axes or ()):
            if axis not in mesh.axis_names:
                raise ValueError(f"logical axis rule {name!r} -> {axes!r}: no mesh axis {axis!r} "
                                 f"(mesh axes: {', '.join(mesh.axis_names)})")


def _fitting_spec(spec: PartitionSpec, shape: Sequence[int], mesh: Mesh) -> PartitionSpec:
    """`spec` without mesh axes of size 1, and with every dimension its mesh axes do not divide
    left whole (the partitioner cannot split 3 channels two ways)."""
    entries = []
    for size, axes in zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec))):
        names = tuple(name for name in ((axes,) if isinstance(axes, str) else (axes or ()))
                      if mesh.shape[name] > 1)
        ways = int(np.prod([mesh.shape[name] for name in names])) if names else 1
        fits = names and size % ways == 0
        entries.append((names[0] if len(names) == 1 else names) if fits else None)
    while entries and entries[-1] is None:
        entries.pop()
    return PartitionSpec(*entries)


def _structure_key(tree) -> tuple:
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    return treedef, tuple(tuple(getattr(leaf, "shape", ())) for leaf in leaves)


def _is_spec(x) -> bool:
    return isinstance(x, PartitionSpec)


def _inherit_param_specs(specs, values, param_specs, param_values):
    """Give parameter-shaped subtrees without names (optimizer moments or an EMA built from unboxed
    params) the logical specs of the parameters (or parameter component) they mirror."""
    candidates = {}
    for p_specs, p_values in [(param_specs, param_values)] + (
            [(param_specs[k], param_values[k]) for k in param_values]
            if isinstance(param_values, Mapping) else []):
        if jax.tree_util.tree_leaves(p_values):
            candidates.setdefault(_structure_key(p_values), p_specs)

    def mirrors_params(node) -> bool:
        return not _is_spec(node) and _structure_key(node) in candidates

    def inherit(node_values, node_specs):
        if not mirrors_params(node_values):
            return node_specs
        named = jax.tree_util.tree_leaves(node_specs, is_leaf=_is_spec)
        if any(len(spec) for spec in named):
            return node_specs  # already carries its own names
        return candidates[_structure_key(node_values)]

    # Map over the value tree, stopping at parameter-shaped nodes; specs share its structure.
    return jax.tree_util.tree_map(inherit, values, specs, is_leaf=mirrors_params)


def logical_specs(abstract_state) -> Any:
    """Logical PartitionSpecs for every leaf of a (boxed) abstract state, unboxed structure.

    Leaves without names are `P()` (replicated) unless they mirror the parameters' structure.
    """
    values = nn.meta.unbox(abstract_state)
    specs = nn.get_partition_spec(abstract_state)
    params = getattr(abstract_state, "params", None)
    if params is not None:
        specs = _inherit_param_specs(specs, values, nn.get_partition_spec(params), nn.meta.unbox(params))
    return specs


def state_shardings(abstract_state, mesh: Mesh, rules: Rules) -> Any:
    """A NamedSharding for every leaf of `abstract_state` (e.g. `jax.eval_shape(stage.init_state, ...)`).

    Parameters boxed with logical names (`nn.with_logical_partitioning`) are sharded as `rules`
    say; optimizer moments follow their parameters (optax keeps the boxes, and unboxed moments
    are matched by structure); everything else (step, counts, scalars) is replicated.
    """
    rules = logical_axis_rules(rules)
    _check_rules(rules, mesh)
    values = nn.meta.unbox(abstract_state)
    mesh_specs = nn.logical_to_mesh(logical_specs(abstract_state), rules)
    return jax.tree_util.tree_map(
        lambda spec, value: NamedSharding(mesh, _fitting_spec(spec, value.shape, mesh)),
        mesh_specs, values, is_leaf=_is_spec)


def with_shardings(abstract, shardings) -> Any:
    """`jax.ShapeDtypeStruct`s carrying `shardings`: the target of a sharded checkpoint restore."""
    return jax.tree_util.tree_map(
        lambda value, sharding: jax.ShapeDtypeStruct(value.shape, value.dtype, sharding=sharding),
        nn.meta.unbox(abstract), shardings)


def abstract_sharded_state(init_fn: Callable, mesh: Mesh, rules: Rules, *args) -> Any:
    """The state `init_fn(*args)` would return, as sharded ShapeDtypeStructs (no computation)."""
    abstract = jax.eval_shape(init_fn, *args)
    return with_shardings(abstract, state_shardings(abstract, mesh, rules))


def init_sharded(init_fn: Callable, mesh: Mesh, rules: Rules, *args) -> Any:
    """`init_fn(*args)`, unboxed, computed by `jax.jit` with every leaf created in its own shards.

    No device ever holds a whole FSDP-sharded parameter. `args` (rng, an example batch) should be
    replicated or host values; their shapes are all `init_fn` may depend on.
    """
    abstract = jax.eval_shape(init_fn, *args)
    shardings = state_shardings(abstract, mesh, rules)

    def init_unboxed(*inner):
        return nn.meta.unbox(init_fn(*inner))

    return jax.jit(init_unboxed, out_shardings=shardings)(*args)


def jit_train_step(step_fn: Callable, state_shardings: Any, batch_sharding: NamedSharding, mesh: Mesh,
                   rules: Rules | None = None) -> Callable:
    """`step_fn(state, batch, rng) -> (state, metrics)` jitted with explicit shardings.

    The state keeps its shardings and is donated (its buffers are reused for the new state); the
    batch is split as `batch_sharding`; the rng and the metrics are replicated. While the step is
    traced, the mesh and `rules` are in context, so `nn.with_logical_constraint` in model code
    constrains activations.
    """
    rules = logical_axis_rules(rules) if rules is not None else None

    def step_in_context(state, batch, rng):
        with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
            if rules is None:
                return step_fn(state, batch, rng)
            with nn.logical_axis_rules(rules):
                return step_fn(state, batch, rng)

    return jax.jit(step_in_context,
                   in_shardings=(state_shardings, batch_sharding, replicated(mesh)),
                   out_shardings=(state_shardings, replicated(mesh)),
                   donate_argnums=0)
