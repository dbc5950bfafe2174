"""Multi-host start-up: join the JAX distributed system when launched as one of several processes,
and build global batches from the part each process loads.

Call `maybe_initialize_distributed()` first thing in `main`, before any other JAX call. It decides
from explicit settings or the environment whether this process is one of several:

- `JAX_COORDINATOR_ADDRESS` (host:port of process 0), `JAX_NUM_PROCESSES`, `JAX_PROCESS_ID`
  (and optionally `JAX_LOCAL_DEVICE_IDS`): any launcher, e.g. several processes on one machine;
- SLURM (`srun` with more than one task), Open MPI (`mpirun -n N`), Cloud TPU pods (more than one
  worker host in `TPU_WORKER_HOSTNAMES`, or `MEGASCALE_*` multi-slice settings): JAX finds the
  coordinator, process count and id itself.

On a single host it does nothing: one process drives all local devices.

On CPU, processes exchange data with gloo collectives (`jax_cpu_collectives_implementation`,
default "gloo" in jax 0.10.2); GPUs use NCCL and TPUs their interconnect, without settings.
"""
import dataclasses
import logging
import os
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

logger = logging.getLogger(__name__)

_EXPLICIT_FIELDS = ("coordinator_address", "num_processes", "process_id", "local_device_ids")


@dataclasses.dataclass(frozen=True)
class DistributedSettings:
    """How to call `jax.distributed.initialize`; None fields are left to JAX's cluster detection."""
    source: str  # what asked for it: "explicit", "JAX_* environment", "SLURM", "Open MPI", "TPU pod"
    coordinator_address: str | None = None
    num_processes: int | None = None
    process_id: int | None = None
    local_device_ids: tuple[int, ...] | None = None

    def initialize_kwargs(self) -> dict[str, Any]:
        kwargs = {name: getattr(self, name) for name in _EXPLICIT_FIELDS}
        return {name: value for name, value in kwargs.items() if value is not None}


def _as_int(value: Any, name: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be an integer, got {value!r}") from None


def _explicit(settings: Any) -> DistributedSettings | None:
    """Settings given as attributes (absl flags, a config section) or lower-case mapping keys."""
    get = settings.get if isinstance(settings, Mapping) else lambda name: getattr(settings, name, None)
    values = {name: get(name) for name in _EXPLICIT_FIELDS}
    if values["num_processes"] is None or _as_int(values["num_processes"], "num_processes") <= 1:
        return None
    if values["coordinator_address"] is None or values["process_id"] is None:
        raise ValueError("distributed settings: num_processes > 1 needs coordinator_address and process_id, "
                         f"got {values}")
    ids = values["local_device_ids"]
    return DistributedSettings(
        "explicit", str(values["coordinator_address"]), _as_int(values["num_processes"], "num_processes"),
        _as_int(values["process_id"], "process_id"), tuple(ids) if ids is not None else None)


def _from_environment(env: Mapping[str, str]) -> DistributedSettings | None:
    count = env.get("JAX_NUM_PROCESSES")
    if env.get("JAX_COORDINATOR_ADDRESS") and count is not None and _as_int(count, "JAX_NUM_PROCESSES") > 1:
        if env.get("JAX_PROCESS_ID") is None:
            raise ValueError("JAX_NUM_PROCESSES > 1 and JAX_COORDINATOR_ADDRESS are set, but JAX_PROCESS_ID is not")
        ids = env.get("JAX_LOCAL_DEVICE_IDS")
        return DistributedSettings(
            "JAX_* environment", env["JAX_COORDINATOR_ADDRESS"], _as_int(count, "JAX_NUM_PROCESSES"),
            _as_int(env["JAX_PROCESS_ID"], "JAX_PROCESS_ID"),
            tuple(_as_int(i, "JAX_LOCAL_DEVICE_IDS") for i in ids.split(",")) if ids else None)
    # Schedulers JAX's own cluster detection understands (jax/_src/clusters): let it fill everything.
    slurm = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID")
    if all(name in env for name in slurm) and _as_int(env["SLURM_NTASKS"], "SLURM_NTASKS") > 1:
        return DistributedSettings("SLURM")
    if "OMPI_MCA_orte_hnp_uri" in env and _as_int(env.get("OMPI_COMM_WORLD_SIZE", 1), "OMPI_COMM_WORLD_SIZE") > 1:
        return DistributedSettings("Open MPI")
    tpu_hosts = env.get("TPU_PROCESS_ADDRESSES") or env.get("TPU_WORKER_HOSTNAMES") or ""
    if len([host for host in tpu_hosts.split(",") if host.strip()]) > 1 or env.get("MEGASCALE_COORDINATOR_ADDRESS"):
        return DistributedSettings("TPU pod")
    return None


def distributed_settings(flags_or_env: Any = None) -> DistributedSettings | None:
    """Whether (and how) this process is one of several; None on a single host.

    `flags_or_env`: None (read `os.environ`), an environment-like mapping (upper-case names as
    above), or settings with `coordinator_address`, `num_processes`, `process_id`
    (`local_device_ids`) as attributes or lower-case keys; explicit settings win.
    """
    if flags_or_env is None:
        return _from_environment(os.environ)
    explicit = _explicit(flags_or_env)
    if explicit is not None:
        return explicit
    if isinstance(flags_or_env, Mapping):
        return _from_environment(flags_or_env)
    return _from_environment(os.environ)


def maybe_initialize_distributed(flags_or_env: Any = None, initialization_timeout: int = 300) -> bool:
    """`jax.distributed.initialize(...)` when launched as one of several processes, else nothing.

    Returns whether the distributed system is up. Must run before anything touches a JAX backend.
    """
    if jax.distributed.is_initialized():
        return True
    settings = distributed_settings(flags_or_env)
    if settings is None:
        return False
    logger.info("initialising the JAX distributed system (%s): %s", settings.source, settings.initialize_kwargs())
    jax.distributed.initialize(**settings.initialize_kwargs(), initialization_timeout=initialization_timeout)
    logger.info("process %d of %d, %d local of %d devices", jax.process_index(), jax.process_count(),
                jax.local_device_count(), jax.device_count())
    return True


def per_process_batch_size(global_batch_size: int) -> int:
    """The rows of each global batch this process loads; a clear error when they do not split."""
    count = jax.process_count()
    if global_batch_size % count:
        raise ValueError(f"batch size {global_batch_size} does not split over {count} processes")
    return global_batch_size // count


def global_batch(local_batch: Mapping[str, Any], sharding: jax.sharding.Sharding) -> dict[str, jax.Array]:
    """One global array per field from this process's rows (`jax.make_array_from_process_local_data`).

    Every process passes its own consecutive slice of the global batch, in process order (what
    `ldm_jax.data.pipeline` hands each process); non-array fields (captions, keys) are dropped.
    """
    arrays = {}
    for name, value in local_batch.items():
        if isinstance(value, (np.ndarray, jax.Array)) and (
                jnp.issubdtype(value.dtype, np.number) or value.dtype == np.bool_):
            arrays[name] = jax.make_array_from_process_local_data(sharding, np.asarray(value))
    return arrays
