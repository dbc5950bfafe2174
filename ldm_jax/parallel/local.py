"""Running a function on this process's local devices: the batch split along a 1-D "data" mesh
over as many devices as divide it, the weights replicated there once and kept.

    devices = LocalDevices(variables)
    out = devices.run(jax.jit(fn), images)         # fn(variables, images), batch split, weights replicated

    features = local_batch_fn(apply_fn, variables, batch_size=64)   # padded: one compilation
    outputs = features(images)                     # {name: numpy (n, ...)}, the padding cut off
"""
import math
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA = "data"


def shard_batch(tree, mesh: Mesh, batch_axis: int = 0):
    """Every leaf split along `batch_axis` over the mesh; a leaf that cannot split is replicated."""
    split = NamedSharding(mesh, PartitionSpec(*([None] * batch_axis), DATA))
    whole = NamedSharding(mesh, PartitionSpec())

    def place(leaf):
        leaf = jnp.asarray(leaf)
        divisible = leaf.ndim > batch_axis and leaf.shape[batch_axis] % mesh.size == 0
        return jax.device_put(leaf, split if divisible else whole)

    return jax.tree.map(place, tree)


class LocalDevices:
    """`variables` replicated on the local devices, placed once per mesh size and reused."""

    def __init__(self, variables: Any, devices: Sequence[jax.Device] | None = None):
        self.variables = variables
        self.devices = list(devices or jax.local_devices())
        self._placed: dict[int, Any] = {}

    def mesh(self, batch_size: int) -> Mesh:
        """A "data" mesh over as many of the devices as divide `batch_size` (one for an odd batch)."""
        size = math.gcd(int(batch_size), len(self.devices))
        return Mesh(np.asarray(self.devices[:size]), (DATA,))

    def variables_on(self, mesh: Mesh) -> Any:
        if mesh.size not in self._placed:
            self._placed[mesh.size] = jax.device_put(self.variables, NamedSharding(mesh, PartitionSpec()))
        return self._placed[mesh.size]

    def run(self, fn: Callable, *batch):
        """`fn(variables, *batch)` with the batch (leading axis of its first leaf) split over the devices,
        traced with the mesh in context (`in_context`)."""
        mesh = self.mesh(jax.tree.leaves(batch)[0].shape[0])
        with in_context(mesh):
            return fn(self.variables_on(mesh), *shard_batch(batch, mesh))


def in_context(mesh: Mesh):
    """The context to call a jitted function over `mesh` in: its abstract mesh, so the program is traced
    knowing how it is split, and attention can run a Pallas kernel per device (`models.attention`), as
    in a training step (`parallel.mesh.jit_train_step`)."""
    return jax.sharding.use_abstract_mesh(mesh.abstract_mesh)


def pad_batch(batch: np.ndarray, size: int) -> np.ndarray:
    """`batch` zero-padded along its first axis to `size` rows."""
    if len(batch) > size:
        raise ValueError(f"a batch of {len(batch)} does not fit the fixed batch size {size}")
    if len(batch) == size:
        return batch
    return np.concatenate([batch, np.zeros((size - len(batch), *batch.shape[1:]), batch.dtype)])


def local_batch_fn(apply_fn: Callable[[Any, Any], Mapping[str, Any]], variables: Any, batch_size: int,
                   devices: Sequence[jax.Device] | None = None) -> Callable[[np.ndarray], dict[str, np.ndarray]]:
    """inputs (n <= batch_size, ...) -> {name: (n, ...) numpy} of `apply_fn(variables, inputs)` on the devices.

    Every batch is zero-padded to `batch_size` rounded up to a multiple of the device count, so all
    devices work and there is one compilation; the padding is cut off the outputs.
    """
    local = LocalDevices(variables, devices)
    padded_size = -(-batch_size // len(local.devices)) * len(local.devices)
    jitted = jax.jit(apply_fn)

    def run(inputs: np.ndarray) -> dict[str, np.ndarray]:
        inputs = np.asarray(inputs)
        if len(inputs) > batch_size:
            raise ValueError(f"a batch of {len(inputs)} exceeds batch_size={batch_size}")
        outputs = local.run(jitted, pad_batch(inputs, padded_size))
        return {name: np.asarray(value)[:len(inputs)] for name, value in outputs.items()}

    return run
