"""Streaming, sharded feature extraction, and the files FID statistics and reference images live in.

Extraction: `sharded_feature_fn` runs a feature network over all local devices (batch split over a
`data` mesh axis, weights replicated); each batch is zero-padded to one fixed size, a multiple of
the device count, so it compiles once, and the padding is cut off the results. `summarize` streams
batches through it: features that FID needs only as statistics go into `RunningMoments` (float64
sums on the host, shifted by the first batch's mean against cancellation), so 50,000 samples never
sit in memory at once; only the outputs asked for in `keep` (logits for IS, features for
precision/recall) are collected.

Files:
- pytorch-fid statistics: `.npz` with `mu` (D,) and `sigma` (D, D), as `save_fid_stats` writes and
  `compute_statistics_of_path` reads them (`save_statistics` / `load_statistics`).
- ADM (guided-diffusion) batches: `.npz` with images `arr_0` (N, H, W, 3) uint8, and in reference
  batches also `mu` / `sigma` (`read_npz_images` streams `arr_0` from the archive without loading it;
  `save_image_batch` writes one from streamed batches; `reference_statistics` takes the stored
  statistics when present, else computes them from the images).
"""
import dataclasses
import io
import os
import pathlib
import tempfile
import zipfile
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import jax
import numpy as np

from ldm_jax.evaluation import fid
from ldm_jax.models import inception
from ldm_jax.parallel.local import local_batch_fn

FeatureFn = Callable[[np.ndarray], dict[str, np.ndarray]]


# ----------------------------------------------------------------------------------------------
# Sharded extraction.


def sharded_feature_fn(apply_fn: Callable[[Any, Any], Mapping[str, Any]], variables: Any, batch_size: int,
                       devices: Sequence[jax.Device] | None = None) -> FeatureFn:
    """images (n <= batch_size, ...) -> {name: (n, ...) numpy}, `apply_fn(variables, images)` on all
    `devices` (this process's local ones by default), padded to one shape: `parallel.local.local_batch_fn`."""
    return local_batch_fn(apply_fn, variables, batch_size, devices)


def inception_feature_fn(params: Any, batch_size: int, preprocessing: str = "torch_fidelity",
                         devices: Sequence[jax.Device] | None = None) -> FeatureFn:
    """The FID Inception's {"pool3", "logits_unbiased", "logits"} of uint8 / [-1, 1] batches, sharded."""
    module = inception.FIDInceptionV3(preprocessing=preprocessing)
    return sharded_feature_fn(lambda variables, images: module.apply(variables, images), {"params": params},
                              batch_size, devices)


# ----------------------------------------------------------------------------------------------
# Streaming statistics.


@dataclasses.dataclass
class RunningMoments:
    """Mean and unbiased covariance of features added batch by batch, accumulated in float64."""
    count: int = 0
    shift: np.ndarray | None = None
    total: np.ndarray | None = None
    outer: np.ndarray | None = None

    def update(self, features: np.ndarray) -> None:
        """Adds a batch (n, D)."""
        features = np.asarray(features, np.float64)
        if features.ndim != 2:
            raise ValueError(f"features must be (n, D), got shape {features.shape}")
        if self.shift is None:
            dim = features.shape[1]
            self.shift = features.mean(axis=0) if len(features) else np.zeros(dim)
            self.total, self.outer = np.zeros(dim), np.zeros((dim, dim))
        elif features.shape[1] != self.shift.shape[0]:
            raise ValueError(f"features of width {features.shape[1]} added to moments of width {self.shift.shape[0]}")
        centred = features - self.shift
        self.count += len(features)
        self.total += centred.sum(axis=0)
        self.outer += centred.T @ centred

    def statistics(self) -> fid.Statistics:
        """(mean, covariance with the n - 1 denominator, as np.cov)."""
        if self.count < 2:
            raise ValueError(f"statistics need at least 2 samples, got {self.count}")
        centred_mean = self.total / self.count
        covariance = (self.outer - self.count * np.outer(centred_mean, centred_mean)) / (self.count - 1)
        return fid.Statistics(self.shift + centred_mean, covariance)


@dataclasses.dataclass
class FeatureSummary:
    """What `summarize` returns: the sample count, statistics per output, and the outputs kept whole."""
    count: int
    statistics: dict[str, fid.Statistics]
    kept: dict[str, np.ndarray]


def summarize(feature_fn: FeatureFn, batches: Iterable[np.ndarray], moments: Sequence[str] = ("pool3",),
              keep: Sequence[str] = ()) -> FeatureSummary:
    """Streams image batches through `feature_fn`: running statistics of `moments`, whole arrays of `keep`."""
    running = {name: RunningMoments() for name in moments}
    kept: dict[str, list[np.ndarray]] = {name: [] for name in keep}
    count = 0
    for batch in batches:
        outputs = feature_fn(batch)
        missing = sorted((set(moments) | set(keep)) - set(outputs))
        if missing:
            raise KeyError(f"the feature function returns {sorted(outputs)}, not {missing}")
        for name in moments:
            running[name].update(outputs[name].reshape(len(batch), -1))
        for name in keep:
            kept[name].append(outputs[name])
        count += len(batch)
    return FeatureSummary(count, {name: moments_.statistics() for name, moments_ in running.items()},
                          {name: np.concatenate(parts) if parts else np.zeros((0,)) for name, parts in kept.items()})


# ----------------------------------------------------------------------------------------------
# Files.


def atomic_write(path: str | os.PathLike, write: Callable[[Any], None]) -> pathlib.Path:
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            write(file)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def save_statistics(path: str | os.PathLike, statistics: fid.Statistics) -> pathlib.Path:
    """Writes pytorch-fid's statistics file (`np.savez_compressed(mu=..., sigma=...)`), atomically."""
    return atomic_write(path, lambda file: np.savez_compressed(file, mu=statistics.mu, sigma=statistics.sigma))


def load_statistics(path: str | os.PathLike) -> fid.Statistics:
    """`mu` / `sigma` of a pytorch-fid statistics file or an ADM reference batch."""
    with np.load(path) as archive:
        keys = set(archive.files)
        if not {"mu", "sigma"} <= keys:
            hint = " (an image batch: use reference_statistics to compute them)" if "arr_0" in keys else ""
            raise ValueError(f"{path} holds no FID statistics: expected keys 'mu' and 'sigma', found "
                             f"{sorted(keys)}{hint}")
        mu, sigma = archive["mu"], archive["sigma"]
    if mu.ndim != 1 or sigma.shape != (len(mu), len(mu)):
        raise ValueError(f"{path}: 'mu' {mu.shape} and 'sigma' {sigma.shape} are not a (D,) mean and (D, D) covariance")
    return fid.Statistics(mu.astype(np.float64), sigma.astype(np.float64))


def _read_header(member, path, key) -> tuple[tuple[int, ...], np.dtype]:
    version = np.lib.format.read_magic(member)
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, fortran_order, dtype = read(member)
    if fortran_order or len(shape) < 1:
        raise ValueError(f"{path}:{key} is a Fortran-ordered or 0-d array; expected C-ordered rows")
    return shape, dtype


def npz_array_shape(path: str | os.PathLike, key: str = "arr_0") -> tuple[tuple[int, ...], np.dtype]:
    """The shape and dtype of array `key` in an `.npz`, from its header alone."""
    with zipfile.ZipFile(path) as archive, _open_member(archive, path, key) as member:
        return _read_header(member, path, key)


def _open_member(archive: zipfile.ZipFile, path, key: str):
    name = f"{key}.npy"
    if name not in archive.namelist():
        raise KeyError(f"{path} has no array {key!r}; it holds {sorted(n[:-4] for n in archive.namelist())}")
    return archive.open(name)


def read_npz_images(path: str | os.PathLike, batch_size: int, key: str = "arr_0") -> Iterator[np.ndarray]:
    """Batches of `key` (ADM's `arr_0` images) read from the archive one at a time, never the whole array."""
    with zipfile.ZipFile(path) as archive, _open_member(archive, path, key) as member:
        shape, dtype = _read_header(member, path, key)
        row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
        for start in range(0, shape[0], batch_size):
            rows = min(batch_size, shape[0] - start)
            data = member.read(rows * row_bytes)
            if len(data) != rows * row_bytes:
                raise ValueError(f"{path}:{key} is truncated: rows {start}..{start + rows} of {shape[0]} missing")
            yield np.frombuffer(data, dtype).reshape(rows, *shape[1:])


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def save_image_batch(path: str | os.PathLike, batches: Iterable[np.ndarray], count: int,
                     statistics: fid.Statistics | None = None) -> pathlib.Path:
    """Writes an ADM batch: `arr_0` (count, H, W, 3) uint8 from streamed batches, and `mu` / `sigma` if given."""

    def write(file):
        with zipfile.ZipFile(file, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
            written, header = 0, None
            with archive.open("arr_0.npy", "w", force_zip64=True) as member:
                for batch in batches:
                    batch = np.asarray(batch)
                    if batch.dtype != np.uint8 or batch.ndim != 4 or batch.shape[-1] != 3:
                        raise ValueError(f"ADM batches hold uint8 (N, H, W, 3) images, got {batch.dtype} {batch.shape}")
                    if header is None:
                        header = batch.shape[1:]
                        np.lib.format.write_array_header_1_0(member, {"descr": "|u1", "fortran_order": False,
                                                                      "shape": (count, *header)})
                    elif batch.shape[1:] != header:
                        raise ValueError(f"image batch of shape {batch.shape} after batches of {header}")
                    written += len(batch)
                    if written > count:
                        raise ValueError(f"more than the announced {count} images")
                    member.write(np.ascontiguousarray(batch).tobytes())
            if header is None:
                raise ValueError("no image batches to write")
            if written != count:
                raise ValueError(f"{written} images written, {count} announced")
            if statistics is not None:
                archive.writestr("mu.npy", _npy_bytes(np.asarray(statistics.mu)))
                archive.writestr("sigma.npy", _npy_bytes(np.asarray(statistics.sigma)))

    return atomic_write(path, write)


def reference_statistics(path: str | os.PathLike, feature_fn: FeatureFn, batch_size: int,
                         feature: str = "pool3") -> fid.Statistics:
    """The statistics of a reference `.npz`: its stored `mu` / `sigma`, else those of its `arr_0` images."""
    with np.load(path) as archive:
        stored = {"mu", "sigma"} <= set(archive.files)
    if stored:
        return load_statistics(path)
    summary = summarize(feature_fn, read_npz_images(path, batch_size), moments=(feature,))
    return summary.statistics[feature]
