"""Building a TFDS ArrayRecord dataset from an image folder or webdataset tar shards.

    source = ImageFolderSource("~/photos/pets")           # or a TarShardSource
    written = build_dataset(source, "~/tensorflow_datasets", default_name("~/photos/pets"))

Every image is decoded once to check it (in `workers` processes); the ones that do not decode are
skipped, counted and named in `written.skipped`. The original file bytes are what gets written
(nothing is re-encoded). Read the result with `ldm_jax.data.arrayrecord.tfds_source(NAME,
data_dir=OUT)` or `tfds.data_source(NAME, data_dir=OUT)`. The command is `ldm-jax data build`.
"""
import multiprocessing
import os
import re
from typing import Iterator

from ldm_jax.data.arrayrecord import WrittenDataset, write_dataset
from ldm_jax.data.decode import decode_image, decode_segmentation
from ldm_jax.data.records import BadRecord, Record


def build_dataset(source, out: str | os.PathLike, name: str, *, split: str = "train", num_shards: int | None = None,
                  workers: int = 1, overwrite: bool = False) -> WrittenDataset:
    """Writes the records of `source` (a random-access source of records) that decode into OUT/NAME.

    Class names come from the source's `classes`, when it has some. `workers` processes decode the
    images to check them (1: in this process).
    """
    return write_dataset(_validated(source, workers), out, name, num_shards=num_shards, split=split,
                         class_names=getattr(source, "classes", None) or None, overwrite=overwrite)


def default_name(source: str, source_format: str = "folder") -> str:
    """A snake_case dataset name from a source path: the folder's name, or the shards' parent folder's."""
    path = os.path.abspath(os.path.expanduser(source))
    base = os.path.basename(path if source_format == "folder" else os.path.dirname(path))
    name = re.sub(r"[^a-z0-9_]+", "_", base.lower()).strip("_")
    return name if name[:1].isalpha() else f"dataset_{name}".rstrip("_")


def validate_record(record: Record) -> Record:
    """`record` if its image (and segmentation map, if any) decodes; else raises BadRecord."""
    key = record["key"]
    image = decode_image(record["image"], key)
    if record.get("segmentation") is not None:
        segmentation = decode_segmentation(record["segmentation"], key)
        if segmentation.shape != image.shape[:2]:
            raise BadRecord(key, f"segmentation map is {segmentation.shape[1]}x{segmentation.shape[0]} but the "
                                 f"image is {image.shape[1]}x{image.shape[0]}")
    return record


def _validated(source, workers: int) -> Iterator[Record | BadRecord]:
    """The source's records in order, each checked by decoding; failures as BadRecord values."""
    if workers <= 1:
        for index in range(len(source)):
            yield _check(source, index)
        return
    # Spawned (not forked) workers: the parent may hold JAX / thread state that fork would copy.
    with multiprocessing.get_context("spawn").Pool(workers, initializer=_init_worker, initargs=(source,)) as pool:
        yield from pool.imap(_check_in_worker, range(len(source)), chunksize=16)


def _check(source, index: int) -> Record | BadRecord:
    try:
        return validate_record(source[index])
    except BadRecord as error:
        return error


_worker_source = []  # the source, once per worker process (set by the pool initializer)


def _init_worker(source) -> None:
    _worker_source.append(source)


def _check_in_worker(index: int) -> Record | BadRecord:
    return _check(_worker_source[0], index)
