"""The resumable output folder of `ldm-jax evaluate`: the settings it was started with, the sample shards.

    DIR/settings.json           the settings that decide the samples, written by the first run
    DIR/samples/batch_000000.npz  batch 0: an ADM image batch (`arr_0`, uint8 (n, H, W, 3))
    DIR/samples/batch_000001.npz  ...

Batch i holds samples [i * batch_size, (i + 1) * batch_size) (the last one fewer) and is drawn with
the seed `batch_seed(seed, i)`, so batches do not depend on each other: a run that stops leaves
the finished batches (each shard is written atomically, so a shard that exists is whole), and the
next run with the same settings draws only the missing ones; the result is bit for bit that of an
uninterrupted run on the same machine. `check_settings` refuses to continue a folder started with
other settings, naming each that differs. `shard_files` lists a finished folder's shards, so that
`--samples DIR/samples` scores them again (e.g. against another reference) without drawing them anew.
"""
import dataclasses
import json
import os
import pathlib
from typing import Iterator, Mapping

import numpy as np

from ldm_jax.evaluation import features

SETTINGS_FILE = "settings.json"
SAMPLES_FOLDER = "samples"
SHARD_PREFIX, SHARD_SUFFIX = "batch_", ".npz"


class SettingsMismatchError(ValueError):
    """The output folder holds samples drawn with other settings than this run's."""


def batch_seed(seed: int, index: int) -> int:
    """The sampling seed of batch `index`: a 32-bit value derived from (seed, index) alone."""
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1)[0])


def _as_json(value) -> object:
    """`value` as it reads back from JSON (tuples become lists), for comparisons with a saved record."""
    return json.loads(json.dumps(value))


def check_settings(out_dir: str | os.PathLike, settings: Mapping[str, object]) -> None:
    """Records `settings` in `out_dir/settings.json`, or checks them against the record already there.

    Raises SettingsMismatchError naming every setting whose value differs from the recorded one.
    """
    path = pathlib.Path(out_dir) / SETTINGS_FILE
    settings = _as_json(dict(settings))
    if not path.exists():
        features.atomic_write(path, lambda file: file.write(json.dumps(settings, indent=2).encode()))
        return
    recorded = json.loads(path.read_text(encoding="utf-8"))
    differing = [f"{name}: recorded {recorded.get(name)!r}, now {settings.get(name)!r}"
                 for name in sorted(set(recorded) | set(settings)) if recorded.get(name) != settings.get(name)]
    if differing:
        raise SettingsMismatchError(
            f"{pathlib.Path(out_dir)} holds samples drawn with other settings ({'; '.join(differing)}). "
            "Continue with the recorded settings, or evaluate into another --out folder.")


@dataclasses.dataclass(frozen=True)
class SampleStore:
    """The shards of `num_samples` images in batches of `batch_size` under `folder`."""
    folder: pathlib.Path
    num_samples: int
    batch_size: int

    @classmethod
    def in_dir(cls, out_dir: str | os.PathLike, num_samples: int, batch_size: int) -> "SampleStore":
        """The store of an evaluation folder (its `samples/` sub-folder)."""
        if num_samples < 1 or batch_size < 1:
            raise ValueError(f"num_samples and batch_size must be >= 1, got {num_samples} and {batch_size}")
        return cls(pathlib.Path(out_dir) / SAMPLES_FOLDER, int(num_samples), int(batch_size))

    @property
    def num_batches(self) -> int:
        return -(-self.num_samples // self.batch_size)

    def batch_length(self, index: int) -> int:
        """How many samples batch `index` holds (the last batch may hold fewer)."""
        if not 0 <= index < self.num_batches:
            raise IndexError(f"batch {index} is outside [0, {self.num_batches})")
        return min(self.batch_size, self.num_samples - index * self.batch_size)

    def path(self, index: int) -> pathlib.Path:
        return self.folder / f"{SHARD_PREFIX}{index:06d}{SHARD_SUFFIX}"

    def is_done(self, index: int) -> bool:
        """Whether batch `index` was written (whole: shards are written atomically) with its length."""
        path = self.path(index)
        if not path.exists():
            return False
        shape, _ = features.npz_array_shape(path)
        if shape[0] != self.batch_length(index):
            raise ValueError(f"{path} holds {shape[0]} images, batch {index} of {self.num_samples} samples in "
                             f"batches of {self.batch_size} holds {self.batch_length(index)}")
        return True

    def missing(self) -> list[int]:
        """The indices of the batches not written yet."""
        return [index for index in range(self.num_batches) if not self.is_done(index)]

    def write(self, index: int, images: np.ndarray) -> pathlib.Path:
        """Writes batch `index`, uint8 (n, H, W, 3), atomically."""
        images = np.asarray(images)
        if len(images) != self.batch_length(index):
            raise ValueError(f"batch {index} must hold {self.batch_length(index)} images, got {len(images)}")
        return features.save_image_batch(self.path(index), [images], len(images))

    def batches(self) -> Iterator[np.ndarray]:
        """The batches in order, one shard in memory at a time; every batch must have been written."""
        missing = self.missing()
        if missing:
            raise FileNotFoundError(f"{self.folder} lacks {len(missing)} of {self.num_batches} batches "
                                    f"(first missing: {self.path(missing[0]).name})")
        for index in range(self.num_batches):
            yield from features.read_npz_images(self.path(index), self.batch_size)


def shard_files(folder: str | os.PathLike) -> list[pathlib.Path]:
    """The sample shards of an evaluation folder (DIR or DIR/samples) in batch order; [] when it holds none.

    Raises ValueError when a shard is missing (an unfinished run, as far as its settings.json tells).
    """
    folder = pathlib.Path(folder).expanduser()
    if (folder / SAMPLES_FOLDER).is_dir():
        folder = folder / SAMPLES_FOLDER
    if not folder.is_dir():
        return []
    shards = {}
    for path in folder.glob(f"{SHARD_PREFIX}*{SHARD_SUFFIX}"):
        number = path.name[len(SHARD_PREFIX):-len(SHARD_SUFFIX)]
        if number.isdigit():
            shards[int(number)] = path
    expected = max(shards, default=-1) + 1
    settings = folder.parent / SETTINGS_FILE   # the run's own record says how many batches it draws
    if settings.exists():
        recorded = json.loads(settings.read_text(encoding="utf-8"))
        if recorded.get("num_samples") and recorded.get("batch_size"):
            expected = max(expected, -(-int(recorded["num_samples"]) // int(recorded["batch_size"])))
    missing = sorted(set(range(expected)) - set(shards))
    if shards and missing:
        raise ValueError(f"{folder} lacks sample shard {SHARD_PREFIX}{missing[0]:06d}{SHARD_SUFFIX} (of "
                         f"{expected}): finish the evaluation that writes it before scoring its samples")
    return [shards[index] for index in range(len(shards))]
