"""`ldm-jax data build`: convert an image folder or webdataset tar shards into a TFDS ArrayRecord dataset.

    ldm-jax data build --from folder --out ~/tensorflow_datasets --name pets ~/photos/pets
    ldm-jax data build --from tar --out /data/tfds --name laion_subset --num-shards 64 \\
        --min-size 256 '/data/laion/{00000..00099}.tar'

Every image is decoded once to check it (in `--workers` processes); the ones that do not decode are
skipped, counted and named in the output. The original file bytes are what gets written (nothing is
re-encoded). Read the result with `ldm_jax.data.arrayrecord.tfds_source(NAME, data_dir=OUT)` or
`tfds.data_source(NAME, data_dir=OUT)`.
"""
import argparse
import multiprocessing
import os
import re
import sys
from typing import Iterator

from ldm_jax.data.arrayrecord import write_dataset
from ldm_jax.data.decode import decode_image, decode_segmentation
from ldm_jax.data.folder import LABEL_MODES, ImageFolderSource
from ldm_jax.data.records import BadRecord, Record
from ldm_jax.data.webdataset import TarShardSource

_EPILOG = """examples:
  ldm-jax data build --from folder --out ~/tensorflow_datasets --name pets ~/photos/pets
  ldm-jax data build --from tar --out /data/tfds --name laion_subset --num-shards 64 \\
      --min-size 256 '/data/laion/{00000..00099}.tar'

then read it with ldm_jax.data.arrayrecord.tfds_source("pets", data_dir="~/tensorflow_datasets")"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The converter's options, on `parser` (the `data build` sub-command)."""
    parser.description = ("Convert an image folder (class sub-folders become labels, <stem>.txt / .json "
                           "captions) or webdataset tar shards into a TFDS ArrayRecord dataset; images that "
                           "do not decode are skipped and listed.")
    parser.epilog = _EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--from", dest="source_format", choices=("folder", "tar"), required=True,
                        help="what SRC is: one image folder, or tar shards (paths, brace patterns, globs)")
    parser.add_argument("--out", required=True, help="TFDS data_dir to write into (the dataset goes to OUT/NAME/1.0.0)")
    parser.add_argument("--name", default=None,
                        help="dataset name, snake_case (default: from the source folder's name)")
    parser.add_argument("--split", default="train", help="split to write (default: train)")
    parser.add_argument("--num-shards", type=int, default=None,
                        help="number of ArrayRecord shards (default: by size, as tfds chooses)")
    parser.add_argument("--labels", choices=LABEL_MODES, default="auto",
                        help="folder: class sub-folders as labels (default: auto, when every image is in one)")
    parser.add_argument("--min-size", type=int, default=None,
                        help="tar: drop samples whose json width/height has a side below this")
    parser.add_argument("--max-aspect-ratio", type=float, default=None,
                        help="tar: drop samples whose json width/height ratio (long / short side) is above this")
    parser.add_argument("--caption-required", action="store_true", help="tar: drop samples without a caption")
    parser.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1),
                        help="processes that decode images to check them (default: %(default)s; 1 = in-process)")
    parser.add_argument("--overwrite", action="store_true", help="replace the split if it already exists")
    parser.add_argument("sources", nargs="+", metavar="SRC", help="the image folder, or the tar shards")


def run(args: argparse.Namespace) -> int:
    """Runs the conversion described by `args`; prints a summary. Returns the process exit code."""
    try:
        source = _open_source(args)
        name = args.name or default_name(args.sources[0], args.source_format)
        print(f"converting {source!r} into {os.path.join(args.out, name)} ({args.split})", flush=True)
        written = write_dataset(_validated(source, args.workers), args.out, name, num_shards=args.num_shards,
                                split=args.split, class_names=getattr(source, "classes", None) or None,
                                overwrite=args.overwrite)
    except (OSError, ValueError, KeyError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    for key, reason in written.skipped:
        print(f"skipped {key}: {reason}")
    if isinstance(source, TarShardSource):
        if source.filtered:
            reasons = ", ".join(f"{count} {reason}" for reason, count in source.filtered_by_reason.items() if count)
            print(f"filtered while indexing: {source.filtered} ({reasons})")
        for shard, lost in source.lost_members.items():
            print(f"damaged shard {shard}: {lost} member(s) lost")
    print(f"wrote {written.num_records} records to {written.directory} in {written.num_shards} shard(s), split "
          f"{written.split!r}; skipped {len(written.skipped)} bad record(s)")
    print(f"read it with tfds_source({written.name!r}, split={written.split!r}, data_dir={os.fspath(args.out)!r})")
    return 0


def default_name(source: str, source_format: str = "folder") -> str:
    """A snake_case dataset name from a source path: the folder's name, or the shards' parent folder's."""
    path = os.path.abspath(os.path.expanduser(source))
    base = os.path.basename(path if source_format == "folder" else os.path.dirname(path))
    name = re.sub(r"[^a-z0-9_]+", "_", base.lower()).strip("_")
    return name if name[:1].isalpha() else f"dataset_{name}".rstrip("_")


def _open_source(args: argparse.Namespace):
    if args.source_format == "folder":
        if len(args.sources) != 1:
            raise ValueError(f"--from folder takes exactly one folder, got {len(args.sources)}: {args.sources}")
        return ImageFolderSource(os.path.expanduser(args.sources[0]), labels=args.labels)
    return TarShardSource([os.path.expanduser(spec) for spec in args.sources], min_size=args.min_size,
                          max_aspect_ratio=args.max_aspect_ratio, caption_required=args.caption_required)


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
