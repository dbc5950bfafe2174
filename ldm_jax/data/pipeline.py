"""The grain input pipeline every source goes through: shard, shuffle, transform, skip bad records, batch.

    pipeline = make_pipeline(source, transform, batch_size=256, seed=0, worker_count=4)
    batch = next(pipeline)                      # {"image": (256 // process_count, S, S, 3) float32, ...}
    state = pipeline.get_state()                # JSON-serialisable; saved next to the train state
    pipeline.set_state(state)                   # continues with exactly the next batch

Order. Process `p` of `P` reads the global positions p, p + P, p + 2P, ... of an endless (or
`num_epochs` long) stream in which position g is record `perm_e(g mod N)` of epoch e = g // N, with
`perm_e` a per-epoch shuffle of the N records. So within every epoch the processes read disjoint
slices that together hold each record exactly once. The randomness a transform draws (crops, flips)
comes from a generator seeded by (seed, epoch, record index): it depends neither on the number of
processes or workers nor on any global state.

Bad records. A source or transform raising `BadRecord` yields a marker instead of an example; the
consuming process counts it, logs its key once, and fills the batch from the next records, so batches
stay full and deterministic with worker processes too. Past `min_records_before_check` records, a bad
fraction above `max_bad_fraction` raises `TooManyBadRecords`.

State. The iterator's state is the number of stream positions this process has consumed plus the
bad-record counters; restoring rebuilds the grain pipeline at that position. The state does not
depend on `worker_count`, which may change between runs.

Batches are dicts of numpy arrays: numeric fields stacked along a leading batch axis, string fields
(keys, captions) as 1-D numpy object arrays of `str`, anything else (e.g. lists of boxes) as a list.
"""
from __future__ import annotations

import dataclasses
import logging
import sys
import weakref
from typing import Any, Callable, Sequence

import grain
import numpy as np

from ldm_jax.data.records import BadRecord, Record

logger = logging.getLogger(__name__)

Example = dict[str, Any]
Transform = Callable[[Record, np.random.Generator], Example]

_STATE_VERSION = 1
_FIRST_BAD_KEPT = 10  # distinct bad records whose key and reason the state and the error message keep
_MIN_SHARED_MEMORY_BYTES = 1 << 16
_LOGGED_KEYS_KEPT = 1000  # distinct bad keys logged one by one; past that only a running count


class TooManyBadRecords(RuntimeError):
    """More than `max_bad_fraction` of the records read so far could not be used."""


@dataclasses.dataclass(frozen=True)
class BadExample:
    """What the map step returns for a record that raised `BadRecord`: counted and dropped later."""

    key: str
    reason: str


@dataclasses.dataclass(frozen=True)
class StreamOrder:
    """Maps a process-local stream position to (epoch, record index); see the module docstring."""

    num_records: int
    seed: int
    shuffle: bool
    process_index: int
    process_count: int

    def global_position(self, local_position: int) -> int:
        return local_position * self.process_count + self.process_index

    def __call__(self, local_position: int) -> tuple[int, int]:
        epoch, index_in_epoch = divmod(self.global_position(local_position), self.num_records)
        if not self.shuffle:
            return epoch, index_in_epoch
        epoch_seed = int(np.random.SeedSequence([self.seed, epoch, 0x5EED]).generate_state(1)[0])
        return epoch, grain.experimental.index_shuffle(
            index_in_epoch, max_index=self.num_records - 1, seed=epoch_seed, rounds=4)


def example_rng(seed: int, epoch: int, record_index: int) -> np.random.Generator:
    """The generator a transform gets for one record in one epoch."""
    return np.random.default_rng([seed, epoch, record_index])


@dataclasses.dataclass(frozen=True)
class LoadExample:
    """The per-position map step run in the read threads / worker processes (picklable)."""

    source: Any
    transform: Transform | None
    order: StreamOrder
    seed: int

    def __call__(self, local_position: int) -> Example | BadExample:
        epoch, record_index = self.order(local_position)
        try:
            record = self.source[record_index]
            if self.transform is None:
                example = record
            else:
                example = self.transform(record, example_rng(self.seed, epoch, record_index))
        except BadRecord as error:
            return BadExample(error.key, error.reason)
        if not isinstance(example, dict):
            raise TypeError(f"the transform must return a dict for record {record_index} "
                            f"(key {record.get('key')!r}), got {type(example).__name__}")
        return example


def stack_examples(examples: Sequence[Example]) -> dict[str, Any]:
    """One batch from examples with the same fields (see the module docstring for the field types)."""
    fields = list(examples[0])
    for example in examples[1:]:
        if set(example) != set(fields):
            raise ValueError(f"examples in one batch have different fields: {sorted(fields)} and "
                             f"{sorted(example)} (key {example.get('key')!r}); the transform must "
                             "return the same fields for every record")
    batch = {}
    for field in fields:
        values = [example[field] for example in examples]
        if all(isinstance(value, str) for value in values):
            batch[field] = np.array(values, dtype=object)
        elif all(isinstance(value, (np.ndarray, np.generic, int, float, bool)) for value in values):
            arrays = [np.asarray(value) for value in values]
            shapes = {array.shape for array in arrays}
            if len(shapes) > 1:
                raise ValueError(f"field {field!r} has different shapes within one batch: "
                                 f"{sorted(shapes)}; resize or pad it in the transform")
            batch[field] = np.stack(arrays)
        else:
            batch[field] = values
    return batch


class _BatchIterator:
    """Pulls examples from a grain iterator over stream positions, drops and counts bad ones, batches.

    Runs in the consuming process (inside a prefetch thread); its state is a plain dict.
    """

    def __init__(self, pipeline: InputPipeline):
        self._pipeline = pipeline
        self._position = 0
        self._batches = 0
        self._bad = 0
        self._first_bad: list[list[str]] = []
        self._logged_keys: set[str] = set()
        self._grain_iterator = None

    def _examples(self):
        if self._grain_iterator is None:
            self._grain_iterator = iter(self._pipeline.grain_dataset(self._position))
        return self._grain_iterator

    def __next__(self) -> dict[str, Any]:
        pipeline = self._pipeline
        examples = []
        while len(examples) < pipeline.local_batch_size:
            try:
                element = next(self._examples())
            except StopIteration:
                if examples and not pipeline.drop_remainder:
                    break
                raise
            self._position += 1
            if isinstance(element, BadExample):
                self._count_bad(element)
            else:
                examples.append(element)
        self._batches += 1
        return stack_examples(examples)

    def _count_bad(self, bad: BadExample) -> None:
        self._bad += 1
        if len(self._first_bad) < _FIRST_BAD_KEPT and all(key != bad.key for key, _ in self._first_bad):
            self._first_bad.append([bad.key, bad.reason])
        if bad.key not in self._logged_keys and len(self._logged_keys) < _LOGGED_KEYS_KEPT:
            self._logged_keys.add(bad.key)
            logger.warning("skipping bad record %r: %s (%d bad of %d records read so far)",
                           bad.key, bad.reason, self._bad, self._position)
        elif self._bad & (self._bad - 1) == 0:  # powers of two: a heartbeat, not a flood
            logger.warning("%d bad records of %d read so far", self._bad, self._position)
        pipeline = self._pipeline
        if (self._position >= pipeline.min_records_before_check
                and self._bad > pipeline.max_bad_fraction * self._position):
            raise TooManyBadRecords(
                f"{self._bad} of {self._position} records read by process {pipeline.order.process_index} "
                f"were bad ({self._bad / self._position:.2%} > max_bad_fraction "
                f"{pipeline.max_bad_fraction:.2%}); the first: "
                + "; ".join(f"{key!r}: {reason}" for key, reason in self._first_bad[:5]))

    def get_state(self) -> dict[str, Any]:
        return {"version": _STATE_VERSION, "next_position": self._position, "batches": self._batches,
                "bad_records": self._bad, "first_bad": [list(item) for item in self._first_bad],
                "layout": self._pipeline.layout()}

    def set_state(self, state: dict[str, Any]) -> None:
        if not isinstance(state, dict) or state.get("version") != _STATE_VERSION:
            raise ValueError(f"not an input-pipeline state of version {_STATE_VERSION}: {state!r:.200}")
        saved, current = state["layout"], self._pipeline.layout()
        differences = [f"{name}={saved.get(name)!r} (now {value!r})"
                       for name, value in current.items() if saved.get(name) != value]
        if differences:
            raise ValueError("the iterator state was saved by a different pipeline: "
                             + ", ".join(differences))
        self.close()
        self._position = int(state["next_position"])
        self._batches = int(state["batches"])
        self._bad = int(state["bad_records"])
        self._first_bad = [list(item) for item in state["first_bad"]]

    def close(self) -> None:
        if self._grain_iterator is not None:
            self._grain_iterator.close()
            self._grain_iterator = None


class InputPipeline:
    """An iterator of per-process batches with a checkpointable state; build it with `make_pipeline`."""

    def __init__(self, source, transform: Transform | None, *, local_batch_size: int, order: StreamOrder,
                 num_epochs: int | None, drop_remainder: bool, worker_count: int, worker_buffer_size: int,
                 read_threads: int, read_buffer_size: int, batch_prefetch: int, max_bad_fraction: float,
                 min_records_before_check: int):
        self.source = source
        self.transform = transform
        self.local_batch_size = local_batch_size
        self.order = order
        self.num_epochs = num_epochs
        self.drop_remainder = drop_remainder
        self.worker_count = worker_count
        self.worker_buffer_size = worker_buffer_size
        self.read_threads = read_threads
        self.read_buffer_size = read_buffer_size
        self.max_bad_fraction = max_bad_fraction
        self.min_records_before_check = min_records_before_check
        self._batcher = _BatchIterator(self)
        self._prefetcher = grain.experimental.ThreadPrefetchDatasetIterator(self._batcher, batch_prefetch)
        # Stop threads and workers (and free their shared memory) even if the caller never closes us.
        self._finalizer = weakref.finalize(self, _close_all, self._prefetcher, self._batcher)

    def num_positions(self) -> int:
        """How many stream positions (good or bad records) this process reads in all."""
        order = self.order
        if self.num_epochs is None:
            return sys.maxsize // order.process_count
        total = order.num_records * self.num_epochs
        if self.drop_remainder:  # every process reads as many records, so takes as many steps
            return total // order.process_count
        return (total - order.process_index + order.process_count - 1) // order.process_count

    def grain_dataset(self, start: int) -> grain.IterDataset:
        """The grain dataset of examples (or `BadExample` markers) from stream position `start` on."""
        positions = grain.MapDataset.range(start, max(start, self.num_positions()))
        examples = positions.map(LoadExample(self.source, self.transform, self.order, self.order.seed))
        dataset = examples.to_iter_dataset(
            grain.ReadOptions(num_threads=self.read_threads, prefetch_buffer_size=self.read_buffer_size))
        # Worker processes hand over arrays from this size on through shared memory, smaller ones pickled.
        dataset = grain.experimental.WithOptionsIterDataset(
            dataset, grain.experimental.DatasetOptions(min_shm_size=_MIN_SHARED_MEMORY_BYTES))
        if self.worker_count > 0:
            _mark_absl_flags_parsed()
            dataset = dataset.mp_prefetch(grain.MultiprocessingOptions(
                num_workers=self.worker_count, per_worker_buffer_size=self.worker_buffer_size))
        return dataset

    def layout(self) -> dict[str, Any]:
        """What defines the record stream, so a saved state must agree on it to be restored here."""
        order = self.order
        return {"num_records": order.num_records, "seed": order.seed, "shuffle": order.shuffle,
                "process_index": order.process_index, "process_count": order.process_count}

    def __iter__(self) -> InputPipeline:
        return self

    def __next__(self) -> dict[str, Any]:
        return next(self._prefetcher)

    def get_state(self) -> dict[str, Any]:
        """The JSON-serialisable state after the last batch returned."""
        return self._prefetcher.get_state()

    def set_state(self, state: dict[str, Any]) -> None:
        """Continue after the batch at which `state` was taken (worker processes restart)."""
        self._prefetcher.set_state(state)

    def statistics(self) -> dict[str, Any]:
        """Counters up to the last batch returned: records read, bad records and the first of them."""
        state = self.get_state()
        seen, bad = state["next_position"], state["bad_records"]
        last = self.order.global_position(max(seen - 1, 0))
        return {"batches": state["batches"], "records_read": seen, "bad_records": bad,
                "bad_fraction": bad / seen if seen else 0.0,
                "first_bad": [{"key": key, "reason": reason} for key, reason in state["first_bad"]],
                "epoch": last // self.order.num_records}

    def close(self) -> None:
        """Stop the prefetch thread and the worker processes."""
        self._finalizer()

    def __enter__(self) -> InputPipeline:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def _close_all(prefetcher, batcher) -> None:
    prefetcher.close()
    batcher.close()


def _mark_absl_flags_parsed() -> None:
    """grain 0.2.18's `mp_prefetch` reads an absl flag, which fails unless absl parsed the command line
    (our CLIs use argparse): mark the flags parsed, leaving every one at its default."""
    from absl import flags

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


def make_pipeline(source, transform: Transform | None, *, batch_size: int, seed: int, shuffle: bool = True,
                  num_epochs: int | None = None, worker_count: int = 0, worker_buffer_size: int = 32,
                  read_threads: int = 2, read_buffer_size: int = 32, batch_prefetch: int = 2,
                  process_index: int | None = None, process_count: int | None = None,
                  drop_remainder: bool = True, max_bad_fraction: float = 0.01,
                  min_records_before_check: int = 500) -> InputPipeline:
    """Per-process batches of `transform(record, rng)` over `source`.

    `batch_size` is the global batch size; each of `process_count` processes (default: the JAX
    processes) gets `batch_size // process_count` examples per batch. `num_epochs=None` repeats
    forever. `worker_count` worker processes (0: none) each run `read_threads` threads over their
    share of the records; `transform=None` passes records through unchanged. With `drop_remainder`
    the last partial batch is dropped and, for a finite run, every process reads the same number of
    records (the last `(len(source) * num_epochs) % process_count` records are left out); without it
    every record arrives exactly once per epoch and the last batch may be smaller.
    """
    if process_index is None or process_count is None:
        import jax  # only the consuming process needs it; worker processes never build pipelines

        process_index = jax.process_index() if process_index is None else process_index
        process_count = jax.process_count() if process_count is None else process_count
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index {process_index} is not in [0, process_count={process_count})")
    if batch_size <= 0 or batch_size % process_count:
        raise ValueError(f"batch_size {batch_size} must be a positive multiple of process_count "
                         f"{process_count}: each process reads batch_size / process_count examples")
    if len(source) == 0:
        raise ValueError(f"the source {source!r} holds no records")
    if num_epochs is not None and num_epochs <= 0:
        raise ValueError(f"num_epochs must be positive or None (forever), got {num_epochs}")
    if not 0.0 <= max_bad_fraction <= 1.0:
        raise ValueError(f"max_bad_fraction must be in [0, 1], got {max_bad_fraction}")
    if not 0 <= seed < 2**32:
        raise ValueError(f"seed must be in [0, 2**32), got {seed}")
    if worker_count < 0:
        raise ValueError(f"worker_count must be >= 0, got {worker_count}")
    order = StreamOrder(num_records=len(source), seed=seed, shuffle=shuffle,
                        process_index=process_index, process_count=process_count)
    return InputPipeline(
        source, transform, local_batch_size=batch_size // process_count, order=order, num_epochs=num_epochs,
        drop_remainder=drop_remainder, worker_count=worker_count, worker_buffer_size=worker_buffer_size,
        read_threads=read_threads, read_buffer_size=read_buffer_size, batch_prefetch=batch_prefetch,
        max_bad_fraction=max_bad_fraction, min_records_before_check=min_records_before_check)


def to_global_batch(batch: dict[str, Any], mesh, partition_spec=None) -> dict[str, Any]:
    """Per-process numpy batch -> global `jax.Array`s sharded over `mesh` by `partition_spec`.

    `partition_spec` (default: the batch axis over every mesh axis) is cut to each field's rank, so
    one spec serves images and labels alike. String and list fields stay on the host unchanged.
    64-bit fields become 32-bit unless JAX runs with x64 enabled.
    """
    import jax

    if partition_spec is None:
        partition_spec = jax.sharding.PartitionSpec(tuple(mesh.axis_names))
    global_batch = {}
    for field, value in batch.items():
        if not isinstance(value, np.ndarray) or value.dtype == object:
            global_batch[field] = value
            continue
        value = value.astype(jax.dtypes.canonicalize_dtype(value.dtype), copy=False)
        spec = jax.sharding.PartitionSpec(*tuple(partition_spec)[:value.ndim])
        sharding = jax.sharding.NamedSharding(mesh, spec)
        global_batch[field] = jax.make_array_from_process_local_data(sharding, value)
    return global_batch
