"""Checkpoints of a run: an orbax `CheckpointManager` with named items, safe to interrupt.

Each step directory holds four items:

- `train_state`: the `TrainState` without its EMA (step, params, optimizer state, frozen, extras),
  every array written by the processes that hold its shards;
- `ema`: `TrainState.ema_params`, when the stage keeps an EMA (sampling needs only this item);
- `data_state`: the input pipeline's JSON state of every process (one list entry per process);
- `config`: the experiment config as JSON, to see what a run was and to compare on resume.

    checkpointer = Checkpointer(workdir / "checkpoints", keep=3, best_metric="loss")
    if checkpointer.latest_step() is not None:
        state, data_state = checkpointer.restore(abstract_sharded_state)   # arrays land in their shards
    ...
    checkpointer.save(step, state, pipeline.get_state(), config, metrics={"loss": loss})  # async
    checkpointer.wait()                                                       # before exiting

Safety. Orbax writes a step into `<step>.orbax-checkpoint-tmp*` and renames it when complete, so a
half-written step is never listed (and is removed when a Checkpointer opens the directory). A save
that fails leaves the older steps on disk: orbax deletes old steps only after the new one is
committed; the failure is logged by the next `save` and raised by `wait`. `restore` falls back
from an unreadable step to the newest older one that restores, and moves the unreadable one aside
(`<step>.unreadable-<time>`) so the run can write that step again.

Preemption. `install_preemption_handler()` turns SIGTERM into a flag; the loop polls
`preemption_requested(step)` and, when it is set, saves with `force=True`, waits and exits. With
several processes every one must decide at the same step, so the flag is then JAX's preemption
sync point (`jax.experimental.multihost_utils.reached_preemption_sync_point`, where JAX's
preemption service owns SIGTERM) or, without that service, the OR of all processes' flags.
"""
from __future__ import annotations

import datetime
import json
import logging
import os
import signal
import threading
from typing import Any, Callable, Mapping, Sequence

import flax.linen as nn
import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from jax.experimental import multihost_utils
from orbax.checkpoint import checkpoint_managers

logger = logging.getLogger(__name__)


class CheckpointError(RuntimeError):
    """A checkpoint could not be written or read."""


class CheckpointSaveError(CheckpointError):
    """Saving `step` failed; the checkpoints written before it are untouched."""

    def __init__(self, step: int, cause: BaseException):
        super().__init__(f"saving checkpoint step {step} failed: {type(cause).__name__}: {cause}")
        self.step, self.cause = step, cause


def _jsonable(value: Any) -> Any:
    """A config (ConfigDict, dataclass-free nested containers) as plain JSON values."""
    if hasattr(value, "to_dict"):
        value = value.to_dict()
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.generic, np.ndarray, jax.Array)):
        return _jsonable(np.asarray(value).tolist())
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)  # dtypes, callables: recorded for reading, not restored


def _gather_from_processes(value: Any) -> list[Any]:
    """Every process's JSON `value`, in process order (each process's pipeline state differs)."""
    if jax.process_count() == 1:
        return [value]
    data = np.frombuffer(json.dumps(value).encode(), np.uint8)
    lengths = multihost_utils.process_allgather(np.array([data.size], np.int32))
    padded = np.zeros(int(np.max(lengths)), np.uint8)
    padded[:data.size] = data
    gathered = multihost_utils.process_allgather(padded)
    return [json.loads(bytes(row[:int(n)]).decode()) for row, n in zip(gathered, np.ravel(lengths))]


def _as_restore_target(tree: Any) -> Any:
    """Concrete or abstract arrays (boxed or not) -> ShapeDtypeStructs keeping their shardings."""
    def target(x):
        if isinstance(x, (jax.Array, jax.ShapeDtypeStruct)):
            return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None))
        return x
    return jax.tree.map(target, nn.meta.unbox(tree))


def _item_handlers() -> dict[str, ocp.CheckpointHandler]:
    """Orbax's handlers for our items. In one process an array replicated over several devices is
    written whole from one replica: orbax's replica-parallel saving would slice it into one piece per
    replica, each an eager device op traced again at every save (12 s a save of the tiny LDM on 8 CPU
    devices), to share the writing between hosts; with one process there is no one to share it with.
    With several processes orbax's standard array handler does exactly that sharing."""
    def handler(kind):
        if kind is jax.Array and jax.process_count() == 1:
            return ocp.type_handlers.ArrayHandler(use_replica_parallel=False)
        return ocp.type_handlers.get_type_handler(kind)

    registry = ocp.type_handlers.create_type_handler_registry(
        *((kind, handler(kind)) for kind in ocp.type_handlers.supported_types()))
    trees = {name: ocp.PyTreeCheckpointHandler(type_handler_registry=registry) for name in ("train_state", "ema")}
    return {**trees, "data_state": ocp.JsonCheckpointHandler(), "config": ocp.JsonCheckpointHandler()}


def _tree_restore(target) -> ocp.args.PyTreeRestore:
    """Each array read straight into the sharding of its ShapeDtypeStruct in `target`."""
    return ocp.args.PyTreeRestore(target, restore_args=ocp.checkpoint_utils.construct_restore_args(target))


class Checkpointer:
    """Asynchronous, keep-last-N (and best-N) checkpoints of a TrainState under `directory`."""

    def __init__(self, directory: str | os.PathLike, *, keep: int = 3, best_metric: str | None = None,
                 best_mode: str = "min", keep_best: int = 1, save_interval_steps: int = 1,
                 async_save: bool = True):
        if keep < 1:
            raise ValueError(f"checkpoint keep must be >= 1, got {keep}")
        if best_mode not in ("min", "max"):
            raise ValueError(f"checkpoint best_mode must be 'min' or 'max', got {best_mode!r}")
        # Orbax refuses relative paths ("--workdir out" must work): local ones are made absolute.
        self.directory = epath.Path(directory)
        if not self.directory.is_absolute() and "://" not in str(directory):
            self.directory = epath.Path(os.path.abspath(directory))
        self.best_metric = best_metric
        self.failed_steps: list[int] = []
        self._pending_step: int | None = None
        best_fn = (lambda metrics: float(metrics[best_metric])) if best_metric else None
        policies = [checkpoint_managers.LatestN(n=keep)]
        if best_fn is not None:
            policies.append(checkpoint_managers.BestN(get_metric_fn=best_fn, reverse=best_mode == "min",
                                                      n=keep_best, keep_checkpoints_without_metrics=False))
        options = ocp.CheckpointManagerOptions(
            save_interval_steps=save_interval_steps, best_fn=best_fn, best_mode=best_mode,
            preservation_policy=checkpoint_managers.AnyPreservationPolicy(policies),
            enable_async_checkpointing=async_save, cleanup_tmp_directories=True, create=True)
        self._manager = ocp.CheckpointManager(self.directory, options=options, item_handlers=_item_handlers())

    # -- writing ---------------------------------------------------------------------------------

    def save(self, step: int, state, data_state: Mapping[str, Any] | None = None, config: Any = None,
             metrics: Mapping[str, Any] | None = None, force: bool = False) -> bool:
        """Start writing `state` (and its EMA), the data state and the config as step `step`.

        Returns at once (the arrays are copied to host memory first, so the state may be donated
        to the next train step); False when `save_interval_steps` says this step is not saved and
        `force` is not set (the first save through a Checkpointer is always written). A failure of
        the previous asynchronous save is logged here and recorded in `failed_steps`; this save's
        own synchronous failure raises `CheckpointSaveError`. With several processes, every
        process calls `save` at the same steps (it is collective).
        """
        metrics = None if metrics is None else {k: float(np.asarray(v)) for k, v in metrics.items()}
        if self.best_metric and (metrics is None or self.best_metric not in metrics):
            raise ValueError(f"checkpoint step {step}: metrics must hold {self.best_metric!r} "
                             f"(the best_metric), got {sorted(metrics or {})}")
        self._finish_pending(raise_error=False)
        if int(step) in self.all_steps():  # e.g. a forced save right after resuming from this step
            logger.info("checkpoint step %d already exists in %s; not writing it again", step, self.directory)
            return False
        items = {"train_state": ocp.args.PyTreeSave(state.replace(ema_params=None)),
                 "data_state": ocp.args.JsonSave(_gather_from_processes(data_state)),
                 "config": ocp.args.JsonSave(_jsonable(config))}
        if state.ema_params is not None:
            items["ema"] = ocp.args.PyTreeSave(state.ema_params)
        try:
            saved = self._manager.save(int(step), args=ocp.args.Composite(**items), metrics=metrics, force=force)
        except Exception as error:
            self._manager.reload()
            self.failed_steps.append(int(step))
            raise CheckpointSaveError(int(step), error) from error
        if saved:
            self._pending_step = int(step)
        return saved

    def _finish_pending(self, raise_error: bool) -> None:
        if self._pending_step is None:
            return
        step, self._pending_step = self._pending_step, None
        try:
            self._manager.wait_until_finished()
        except Exception as error:
            # Orbax dropped every step from its list; read the surviving ones back from disk.
            self._manager.reload()
            self.failed_steps.append(step)
            failure = CheckpointSaveError(step, error)
            if raise_error:
                raise failure from error
            logger.error("%s; the newest readable checkpoint is step %s", failure, self.latest_step())

    def wait(self) -> None:
        """Block until the pending save is on disk; raise `CheckpointSaveError` if it failed."""
        self._finish_pending(raise_error=True)

    def close(self) -> None:
        """Wait for the pending save (raising its failure) and release the manager."""
        try:
            self.wait()
        finally:
            self._manager.close()

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # -- reading ---------------------------------------------------------------------------------

    def all_steps(self) -> Sequence[int]:
        """The committed steps on disk, oldest first."""
        return self._manager.all_steps()

    def latest_step(self) -> int | None:
        """The newest committed step, or None in an empty directory."""
        return self._manager.latest_step()

    def best_step(self) -> int | None:
        """The step with the best `best_metric` (the latest step without a best metric)."""
        return self._manager.best_step()

    def _restore_step(self, step: int, target) -> tuple[Any, Any]:
        items = {"train_state": _tree_restore(target.replace(ema_params=None)),
                 "data_state": ocp.args.JsonRestore()}
        if target.ema_params is not None:
            items["ema"] = _tree_restore(target.ema_params)
        restored = self._manager.restore(step, args=ocp.args.Composite(**items))
        state = restored["train_state"]
        if target.ema_params is not None:
            state = state.replace(ema_params=restored["ema"])
        return state, self._own_data_state(step, restored["data_state"])

    @staticmethod
    def _own_data_state(step: int, saved: Any) -> Any:
        if saved is None:
            return None
        if not isinstance(saved, list) or len(saved) != jax.process_count():
            count = len(saved) if isinstance(saved, list) else "?"
            logger.warning("checkpoint step %d holds the data state of %s processes, this run has %d: "
                           "the input pipeline starts afresh", step, count, jax.process_count())
            return None
        return saved[jax.process_index()]

    def restore(self, abstract_state, step: int | None = None) -> tuple[Any, Any]:
        """(state, this process's data state) from `step` (default: the newest readable step).

        `abstract_state`: a TrainState of `jax.ShapeDtypeStruct`s with shardings (see
        `ldm_jax.parallel.mesh.abstract_sharded_state`) or of arrays; each array is read straight
        into its sharding. Without an explicit `step`, an unreadable newest step is reported and
        the next older one restored; if none restores, `CheckpointError` lists every failure.
        """
        target = _as_restore_target(abstract_state)
        if step is not None:
            try:
                return self._restore_step(int(step), target)
            except Exception as error:
                raise CheckpointError(f"checkpoint step {step} in {self.directory} could not be restored: "
                                      f"{type(error).__name__}: {error}") from error
        steps = sorted(self.all_steps(), reverse=True)
        if not steps:
            raise CheckpointError(f"no checkpoint to restore in {self.directory}")
        failures: list[tuple[int, BaseException]] = []
        for candidate in steps:
            try:
                restored = self._restore_step(candidate, target)
            except Exception as error:  # corrupt files surface as many error types
                logger.warning("checkpoint step %d in %s is unreadable (%s: %s); trying the step before it",
                               candidate, self.directory, type(error).__name__, error)
                failures.append((candidate, error))
                continue
            if failures:
                # An older step restores into the same target, so the newer ones are damaged, not
                # incompatible: move them aside so this run can write those steps again.
                self._set_aside([s for s, _ in failures])
                logger.warning("restored checkpoint step %d instead of unreadable step(s) %s",
                               candidate, [s for s, _ in failures])
            return restored
        listing = "; ".join(f"step {s}: {type(e).__name__}: {e}" for s, e in failures)
        raise CheckpointError(f"no checkpoint in {self.directory} could be restored ({listing})") from failures[0][1]

    def _set_aside(self, steps: Sequence[int]) -> None:
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        if jax.process_index() == 0:
            for step in steps:
                path = self.directory / str(step)
                if path.exists():
                    path.rename(self.directory / f"{step}.unreadable-{stamp}")
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices("ldm_jax checkpoint set aside")
        self._manager.reload()

    def restore_config(self, step: int | None = None) -> Any:
        """The config saved with `step` (default: the newest step), as JSON values."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise CheckpointError(f"no checkpoint in {self.directory}")
        return self._manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))["config"]


# -- preemption ----------------------------------------------------------------------------------

# A signal reaches the whole process, so its flag is process-wide by nature.
_PREEMPTED = threading.Event()


def _jax_preemption_service_active() -> bool:
    from jax._src import distributed as jax_distributed  # the only place the sync manager is exposed
    return jax.process_count() > 1 and jax_distributed.global_state.preemption_sync_manager is not None


def install_preemption_handler(signals: Sequence[int] = (signal.SIGTERM,)) -> Callable[[], None]:
    """Make `signals` set the preemption flag instead of killing the process; returns `restore()`,
    which puts the previous handlers back. A second signal while the flag is set ends the process
    as the previous handler would have.

    Several processes with JAX's preemption service (its default under `jax.distributed`): that
    service owns SIGTERM and `preemption_requested(step)` asks it, so nothing is installed.
    """
    if _jax_preemption_service_active():
        logger.info("JAX's preemption service handles SIGTERM; not installing a handler")
        return lambda: None
    previous = {sig: signal.getsignal(sig) for sig in signals}

    def on_signal(signum, frame):
        if _PREEMPTED.is_set():  # asked twice: stop now, as without this handler
            handler = previous[signum] if previous[signum] is not None else signal.SIG_DFL
            signal.signal(signum, handler)
            if callable(handler):
                handler(signum, frame)
            else:
                os.kill(os.getpid(), signum)
            return
        logger.warning("received signal %d: saving a checkpoint and stopping at the next step", signum)
        _PREEMPTED.set()

    for sig in signals:
        signal.signal(sig, on_signal)

    def restore() -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        _PREEMPTED.clear()

    return restore


def preemption_requested(step: int | None = None) -> bool:
    """Whether the run should save and stop now.

    One process: whether a handled signal arrived. Several processes: the same answer on all of
    them, so call it at the same steps everywhere (it is collective): JAX's preemption sync point
    for `step` when its service runs, else whether any process received a signal.
    """
    if jax.process_count() == 1:
        return _PREEMPTED.is_set()
    if _jax_preemption_service_active():
        if step is None:
            raise ValueError("preemption_requested needs the step when JAX's preemption service is active")
        return bool(multihost_utils.reached_preemption_sync_point(int(step)))
    flags = multihost_utils.process_allgather(np.array([_PREEMPTED.is_set()], np.bool_))
    return bool(np.any(flags))
