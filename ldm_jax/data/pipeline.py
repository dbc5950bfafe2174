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

Work. The stream is cut into chunks of `batch_size / process_count` consecutive positions; a read
thread (in this process, or in one of `worker_count` worker processes) loads a chunk's records,
transforms them and stacks the good ones into one batch. The consuming process only cuts chunks into
batches: without bad records a chunk is a batch, handed over as is (through shared memory from the
workers). Chunk i always holds the same examples, so the batches do not depend on `worker_count`.

Split transforms. A transform may split its work in two: `worker_example(record, rng)`, run where
records are read, makes a compact example (`ImageTransform`: uint8 pixels, a quarter of the bytes of
float32 to stack and to move between processes), and `finish_batch(batch)`, run by the consuming
process once per batch, turns a batch of those into exactly the batch of `transform(record, rng)`
examples. The pipeline uses the split whenever a transform has both methods.

Bad records. A source or transform raising `BadRecord` leaves its record out of the chunk and its
key and reason in the chunk's list of bad records; the consuming process counts them, logs each key
once, and fills batches from the next chunk, so batches stay full and deterministic. Past
`min_records_before_check` records, a bad fraction above `max_bad_fraction` raises `TooManyBadRecords`.

State. The iterator's state is the chunk being cut and how many of its examples were returned, plus
the bad-record counters; restoring rebuilds the grain pipeline at that chunk. The state does not
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
    """What `LoadExample` returns for a record that raised `BadRecord`: counted and dropped later."""

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
    """One stream position -> its transformed example, or a `BadExample` (picklable)."""

    source: Any
    transform: Transform | None
    order: StreamOrder

    def __call__(self, local_position: int) -> Example | BadExample:
        epoch, record_index = self.order(local_position)
        try:
            record = self.source[record_index]
            if self.transform is None:
                example = record
            else:
                make = self.transform.worker_example if is_split(self.transform) else self.transform
                example = make(record, example_rng(self.order.seed, epoch, record_index))
        except BadRecord as error:
            return BadExample(error.key, error.reason)
        if not isinstance(example, dict):
            raise TypeError(f"the transform must return a dict for record {record_index} "
                            f"(key {record.get('key')!r}), got {type(example).__name__}")
        return example


def is_split(transform) -> bool:
    """Whether `transform` splits its work into `worker_example` and `finish_batch` (module docstring)."""
    return callable(getattr(transform, "worker_example", None)) and callable(getattr(transform, "finish_batch", None))


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


@dataclasses.dataclass(frozen=True)
class LoadChunk:
    """The map step run in the read threads / worker processes: `chunk_size` consecutive stream
    positions, loaded and stacked into one batch of their good examples (picklable).

    Batching where the examples are made keeps the consuming process's work per batch near zero
    (without bad records a chunk is a batch as is) and moves one shared-memory block per batch, not
    per example. Bad records come back as [key, reason] pairs for the consumer to count.
    """

    load: LoadExample
    chunk_size: int
    num_positions: int

    def positions(self, chunk: int) -> range:
        return range(chunk * self.chunk_size, min((chunk + 1) * self.chunk_size, self.num_positions))

    def __call__(self, chunk: int) -> dict[str, Any]:
        good, bad = [], []
        for position in self.positions(chunk):
            example = self.load(position)
            if isinstance(example, BadExample):
                bad.append([example.key, example.reason])
            else:
                good.append(example)
        return {"chunk": chunk, "positions": len(self.positions(chunk)), "bad": bad, "size": len(good),
                "batch": stack_examples(good) if good else None}


def take_examples(batch: dict[str, Any], start: int, stop: int) -> dict[str, Any]:
    """Examples [start, stop) of a batch."""
    return {field: value[start:stop] for field, value in batch.items()}


def concatenate_batches(batches: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One batch of the examples of `batches` (same fields), in order."""
    if len(batches) == 1:
        return batches[0]
    fields = list(batches[0])
    if any(set(batch) != set(fields) for batch in batches):
        raise ValueError(f"consecutive batches have different fields: {[sorted(batch) for batch in batches]}; "
                         "the transform must return the same fields for every record")
    joined = {}
    for field in fields:
        values = [batch[field] for batch in batches]
        if all(isinstance(value, np.ndarray) for value in values):
            shapes = {value.shape[1:] for value in values}
            if len(shapes) > 1:
                raise ValueError(f"field {field!r} has different shapes within one batch: {sorted(shapes)}; "
                                 "resize or pad it in the transform")
            joined[field] = np.concatenate(values)
        else:
            joined[field] = [item for value in values for item in value]
    return joined


class _BatchIterator:
    """Pulls chunks from a grain iterator, counts their bad records and cuts them into batches.

    Runs in the consuming process (inside a prefetch thread). Its state: the chunk being cut (or
    the next one) and how many of its good examples were returned, plus the counters, which cover
    every chunk pulled so far.
    """

    def __init__(self, pipeline: InputPipeline):
        self._pipeline = pipeline
        self._chunk = 0  # the chunk `_pending` came from, or the next chunk to pull
        self._offset = 0  # good examples of `_chunk` already returned
        self._pending: dict[str, Any] | None = None
        self._pending_size = 0
        self._records = 0
        self._batches = 0
        self._bad = 0
        self._first_bad: list[list[str]] = []
        self._logged_keys: set[str] = set()
        self._grain_iterator = None

    def _pull(self) -> bool:
        """The next chunk with good examples into `_pending`, counting on the way; False at the end."""
        if self._grain_iterator is None:
            self._grain_iterator = iter(self._pipeline.grain_dataset(self._chunk))
        while True:
            try:
                chunk = next(self._grain_iterator)
            except StopIteration:
                return False
            resumed = chunk["chunk"] == self._chunk and self._offset > 0  # already counted before the restart
            if not resumed:
                self._chunk, self._offset = chunk["chunk"], 0
                self._records += chunk["positions"]
                for key, reason in chunk["bad"]:
                    self._count_bad(key, reason)
            if chunk["size"] > self._offset:
                # Plain ndarray views of the shared-memory arrays (which free themselves once unused).
                self._pending = {field: np.asarray(value) if isinstance(value, np.ndarray) else value
                                 for field, value in chunk["batch"].items()}
                self._pending_size = chunk["size"]
                return True
            self._chunk, self._offset = self._chunk + 1, 0

    def __next__(self) -> dict[str, Any]:
        wanted = self._pipeline.local_batch_size
        pieces, have = [], 0
        while have < wanted:
            if self._pending is None and not self._pull():
                if pieces and not self._pipeline.drop_remainder:
                    break
                raise StopIteration
            size = self._pending_size
            stop = min(size, self._offset + wanted - have)
            pieces.append(self._pending if (self._offset, stop) == (0, size) else
                          take_examples(self._pending, self._offset, stop))
            have += stop - self._offset
            self._offset = stop
            if stop == size:
                self._pending, self._chunk, self._offset = None, self._chunk + 1, 0
        self._batches += 1
        batch = concatenate_batches(pieces)
        transform = self._pipeline.transform
        return transform.finish_batch(batch) if is_split(transform) else batch

    def _count_bad(self, key: str, reason: str) -> None:
        self._bad += 1
        if len(self._first_bad) < _FIRST_BAD_KEPT and all(known != key for known, _ in self._first_bad):
            self._first_bad.append([key, reason])
        if key not in self._logged_keys and len(self._logged_keys) < _LOGGED_KEYS_KEPT:
            self._logged_keys.add(key)
            logger.warning("skipping bad record %r: %s (%d bad of %d records read so far)",
                           key, reason, self._bad, self._records)
        elif self._bad & (self._bad - 1) == 0:  # powers of two: a heartbeat, not a flood
            logger.warning("%d bad records of %d read so far", self._bad, self._records)
        pipeline = self._pipeline
        if (self._records >= pipeline.min_records_before_check
                and self._bad > pipeline.max_bad_fraction * self._records):
            raise TooManyBadRecords(
                f"{self._bad} of {self._records} records read by process {pipeline.order.process_index} "
                f"were bad ({self._bad / self._records:.2%} > max_bad_fraction "
                f"{pipeline.max_bad_fraction:.2%}); the first: "
                + "; ".join(f"{key!r}: {reason}" for key, reason in self._first_bad[:5]))

    def get_state(self) -> dict[str, Any]:
        return {"version": _STATE_VERSION, "chunk": self._chunk, "offset": self._offset,
                "records_read": self._records, "batches": self._batches, "bad_records": self._bad,
                "first_bad": [list(item) for item in self._first_bad], "layout": self._pipeline.layout()}

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
        self._pending = None
        self._chunk, self._offset = int(state["chunk"]), int(state["offset"])
        self._records, self._batches = int(state["records_read"]), int(state["batches"])
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
                 read_threads: int, batch_prefetch: int, max_bad_fraction: float, min_records_before_check: int):
        self.source = source
        self.transform = transform
        self.local_batch_size = local_batch_size
        self.order = order
        self.num_epochs = num_epochs
        self.drop_remainder = drop_remainder
        self.worker_count = worker_count
        self.worker_buffer_size = worker_buffer_size
        self.read_threads = read_threads
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

    def grain_dataset(self, first_chunk: int) -> grain.IterDataset:
        """The grain dataset of chunks (see `LoadChunk`) from chunk `first_chunk` on."""
        load = LoadChunk(LoadExample(self.source, self.transform, self.order),
                         self.local_batch_size, self.num_positions())
        num_chunks = -(-load.num_positions // load.chunk_size)
        chunks = grain.MapDataset.range(first_chunk, max(first_chunk, num_chunks)).map(load)
        dataset = chunks.to_iter_dataset(grain.ReadOptions(num_threads=self.read_threads,
                                                           prefetch_buffer_size=max(1, self.read_threads)))
        # Worker processes hand over arrays from this size on through shared memory, smaller ones pickled.
        dataset = grain.experimental.WithOptionsIterDataset(
            dataset, grain.experimental.DatasetOptions(min_shm_size=_MIN_SHARED_MEMORY_BYTES))
        if self.worker_count > 0:
            _mark_absl_flags_parsed()
            dataset = dataset.mp_prefetch(grain.MultiprocessingOptions(
                num_workers=self.worker_count, per_worker_buffer_size=self.worker_buffer_size))
        return dataset

    def layout(self) -> dict[str, Any]:
        """What defines the record stream and its chunks: a saved state must agree on it to be restored."""
        order = self.order
        return {"num_records": order.num_records, "seed": order.seed, "shuffle": order.shuffle,
                "process_index": order.process_index, "process_count": order.process_count,
                "local_batch_size": self.local_batch_size}

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
        """Counters up to the last batch returned: records read (up to the end of the chunk that batch
        came from), bad records and the first of them, the epoch being read."""
        state = self.get_state()
        seen, bad = state["records_read"], state["bad_records"]
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
                  num_epochs: int | None = None, worker_count: int = 0, worker_buffer_size: int = 1,
                  read_threads: int = 2, batch_prefetch: int = 2,
                  process_index: int | None = None, process_count: int | None = None,
                  drop_remainder: bool = True, max_bad_fraction: float = 0.01,
                  min_records_before_check: int = 500) -> InputPipeline:
    """Per-process batches of `transform(record, rng)` over `source`.

    `batch_size` is the global batch size; each of `process_count` processes (default: the JAX
    processes) gets `batch_size // process_count` examples per batch. `num_epochs=None` repeats
    forever. `worker_count` worker processes (0: none) each run `read_threads` threads, each thread
    making one batch-sized chunk at a time (threads are the cheapest per image: PIL and libjpeg release
    the GIL while decoding and resizing, and nothing is copied between processes; worker processes,
    5-15% dearer per image in experiments/bench_data.py, help once the training process's own Python
    work competes for the GIL); a worker keeps `worker_buffer_size` finished chunks ready
    and the consuming process `batch_prefetch` batches (worker processes hand chunks over through
    /dev/shm: give containers room, e.g. `--shm-size`). `transform=None` passes records through
    unchanged. With `drop_remainder` the last partial batch is dropped and, for a finite run, every
    process reads the same number of records (the last `(len(source) * num_epochs) % process_count`
    records are left out); without it every record arrives exactly once per epoch and the last batch
    may be smaller. Past `min_records_before_check` records, more than `max_bad_fraction` bad ones
    raise `TooManyBadRecords`.
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
    if worker_count < 0 or read_threads < 0 or worker_buffer_size < 1 or batch_prefetch < 0:
        raise ValueError(f"need worker_count >= 0, read_threads >= 0, worker_buffer_size >= 1 and batch_prefetch "
                         f">= 0; got {worker_count}, {read_threads}, {worker_buffer_size} and {batch_prefetch}")
    order = StreamOrder(num_records=len(source), seed=seed, shuffle=shuffle,
                        process_index=process_index, process_count=process_count)
    return InputPipeline(
        source, transform, local_batch_size=batch_size // process_count, order=order, num_epochs=num_epochs,
        drop_remainder=drop_remainder, worker_count=worker_count, worker_buffer_size=worker_buffer_size,
        read_threads=read_threads, batch_prefetch=batch_prefetch,
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
