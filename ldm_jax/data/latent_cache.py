"""Latent caches: run the first stage over a dataset once, so LDM training can skip the encoder.

    encoder = FirstStageEncoder(module, variables)        # an AutoencoderKL or a VQModel
    write_latent_cache(batches, encoder, "/data/latents")  # batches from make_pipeline(shuffle=False)
    source = LatentCacheSource("/data/latents")            # a grain source: {"key", "mean", "std", ...}

    ldm-jax data cache-latents --checkpoint kl-f8.ckpt --config configs/kl_f8.py \\
        --dataset folder --data-dir /data/images --image-size 256 --out /data/latents
    ldm-jax train --config configs/lsun_churches_ldm_kl8.py --workdir /ckpt/churches \\
        --config.data.name=latent_cache --config.data.data_dir=/data/latents --config.data.flip=false

Training reads a cache through the data config (`data.name = "latent_cache"`): `CachedExample` makes
its records examples, `model_errors` says when a cache does not fit the model, and the LDM step draws
its latents from the cached fields (`LatentDiffusionStage.latents`).

Per record the cache holds the key, the label / caption when the dataset has them, and
- KL autoencoders: the posterior `mean` and `std` (unscaled; the training step draws
  z = scale_factor * (mean + std * eps));
- VQ autoencoders: the pre-quantisation `latent` an LDM diffuses (reference `VQModelInterface.encode`)
  and its codebook `indices` (the quantised latent is codebook[indices]);
- optionally `context`: a frozen text encoder's embedding of the caption.

Files: ArrayRecord shards `shard-p<process>-<n>.array_record` and, written last, one
`cache-p<process>.json` per writing process listing its shards. A record is serialised explicitly,
never pickled: b"LDMJAXL1", a little-endian uint32 header length, a UTF-8 JSON header (scalar fields,
and name / dtype / shape of each array) and the arrays' raw bytes in header order.
"""
import json
import math
import os
import pathlib
import struct
import time
from typing import Any, Callable, Iterable

import numpy as np

from ldm_jax.data.records import BadRecord

CACHE_FORMAT = "ldm-jax-latent-cache/1"
_MAGIC = b"LDMJAXL1"
_WRITER_OPTIONS = "group_size:1"  # one record per chunk: cheap random access for grain
_PASSED_THROUGH = ("key", "label", "caption")


def serialize_example(example: dict[str, Any]) -> bytes:
    """Bytes of a record of numeric arrays and JSON scalars (str, int, float, bool, None)."""
    scalars, arrays, blobs = {}, [], []
    for name, value in example.items():
        if isinstance(value, np.generic):
            value = value.item()
        if isinstance(value, np.ndarray):
            if value.dtype.kind not in "biuf":
                raise TypeError(f"field {name!r}: only numeric arrays can be cached, got dtype {value.dtype}")
            value = np.ascontiguousarray(value)
            arrays.append([name, value.dtype.str, list(value.shape)])
            blobs.append(value.tobytes())
        elif value is None or isinstance(value, (str, int, float, bool)):
            scalars[name] = value
        else:
            raise TypeError(f"field {name!r}: cannot cache a {type(value).__name__}; expected a numeric array, "
                            "str, int, float, bool or None")
    header = json.dumps({"scalars": scalars, "arrays": arrays}, ensure_ascii=False).encode("utf-8")
    return b"".join([_MAGIC, struct.pack("<I", len(header)), header, *blobs])


def deserialize_example(data: bytes, where: str = "record") -> dict[str, Any]:
    """The inverse of `serialize_example` (arrays are read-only views of `data`)."""
    if data[:len(_MAGIC)] != _MAGIC:
        raise BadRecord(where, f"not a latent-cache record (it starts with {bytes(data[:8])!r}, expected {_MAGIC!r})")
    start = len(_MAGIC) + 4
    (header_length,) = struct.unpack("<I", data[len(_MAGIC):start])
    try:
        header = json.loads(bytes(data[start:start + header_length]).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BadRecord(where, f"corrupt latent-cache header: {error}") from error
    example = dict(header["scalars"])
    offset = start + header_length
    for name, dtype, shape in header["arrays"]:
        dtype = np.dtype(dtype)
        count = math.prod(shape)
        if offset + count * dtype.itemsize > len(data):
            raise BadRecord(where, f"truncated latent-cache record: field {name!r} runs past its {len(data)} bytes")
        example[name] = np.frombuffer(data, dtype, count, offset).reshape(shape)
        offset += count * dtype.itemsize
    return example


class FirstStageEncoder:
    """Images (N, H, W, 3) in [-1, 1] -> the cached fields of a first-stage `module` with `variables`.

    The batch is split over as many local devices as divide it; the weights are replicated.
    """

    def __init__(self, module, variables):
        from ldm_jax.ldm import FirstStage
        from ldm_jax.models.autoencoder import AutoencoderKL, VQModel
        from ldm_jax.parallel.local import LocalDevices

        if isinstance(module, AutoencoderKL):
            self.kind, self.fields = "kl", ("mean", "std")
        elif isinstance(module, VQModel):
            self.kind, self.fields = "vq", ("latent", "indices")
        else:
            raise TypeError(f"a first stage is an AutoencoderKL or a VQModel, got {type(module).__name__}")
        self.first_stage = FirstStage(module)
        self.devices = LocalDevices(variables)
        self._encode = None

    def _apply(self, variables, images):
        import jax
        import jax.numpy as jnp

        posterior = self.first_stage.posterior(variables, images)
        if self.kind == "kl":
            return {"mean": posterior.mean, "std": posterior.std}
        # The random draw only matters for remapped codebooks with unknown_index="random".
        _, indices = self.first_stage.module.apply(variables, posterior, jax.random.key(0), method="quantize")
        return {"latent": posterior.astype(jnp.float32), "indices": indices.astype(jnp.int32)}

    def __call__(self, images: np.ndarray) -> dict[str, np.ndarray]:
        import jax

        self._encode = self._encode or jax.jit(self._apply)
        return jax.device_get(self.devices.run(self._encode, np.asarray(images, np.float32)))


class _ShardWriter:
    """ArrayRecord shards of at most `records_per_shard` records, each renamed into place when full."""

    def __init__(self, out_dir: pathlib.Path, process_index: int, records_per_shard: int):
        self.out_dir, self.process_index, self.records_per_shard = out_dir, process_index, records_per_shard
        self.shards: list[dict[str, Any]] = []
        self._writer = None
        self._count = 0

    def write(self, record: bytes) -> None:
        from array_record.python.array_record_module import ArrayRecordWriter

        if self._writer is None:
            name = f"shard-p{self.process_index:03d}-{len(self.shards):05d}.array_record"
            self._writer = ArrayRecordWriter(str(self.out_dir / f".{name}.tmp"), _WRITER_OPTIONS)
            self.shards.append({"file": name, "records": 0})
        self._writer.write(record)
        self.shards[-1]["records"] += 1
        if self.shards[-1]["records"] == self.records_per_shard:
            self.close()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            name = self.shards[-1]["file"]
            os.replace(self.out_dir / f".{name}.tmp", self.out_dir / name)
            self._writer = None


def write_latent_cache(batches: Iterable[dict[str, Any]], encoder: FirstStageEncoder, out_dir: str | os.PathLike, *,
                       text_encoder: Callable[[list[str]], np.ndarray] | None = None,
                       embedding_dtype: str = "float32", records_per_shard: int = 10_000, process_index: int = 0,
                       metadata: dict[str, Any] | None = None, log: Callable[[str], None] | None = None,
                       log_every: int = 50) -> dict[str, Any]:
    """Encodes every batch ({"image", "key", optional "label" / "caption"}) and writes the cache.

    Records keep the order of the batches. `text_encoder` maps a list of captions to embeddings
    (N, L, D), stored as `context` in `embedding_dtype`. `metadata` (JSON) is kept in the cache's
    description file, which is written last: a cache without it is incomplete. `log` gets a progress
    line every `log_every` batches. Returns the description.
    """
    out_dir = pathlib.Path(out_dir)
    description_path = out_dir / f"cache-p{process_index:03d}.json"
    if description_path.exists():
        raise FileExistsError(f"{out_dir} already holds a latent cache ({description_path.name}); "
                              "write to another folder or delete it first")
    out_dir.mkdir(parents=True, exist_ok=True)
    writer = _ShardWriter(out_dir, process_index, records_per_shard)
    shapes, count, start, full_batch = {}, 0, time.perf_counter(), None
    for batch_index, batch in enumerate(batches):
        images = np.asarray(batch["image"], np.float32)
        size = images.shape[0]
        full_batch = full_batch or size
        if size < full_batch:  # pad the last batch: one compiled shape for the whole run
            images = np.concatenate([images, np.repeat(images[-1:], full_batch - size, axis=0)])
        encoded = {name: np.asarray(value)[:size] for name, value in encoder(images).items()}
        if text_encoder is not None:
            if "caption" not in batch:
                raise ValueError("a text encoder was given but the dataset's batches hold no 'caption'")
            encoded["context"] = np.asarray(text_encoder(list(batch["caption"])), embedding_dtype)
        for i in range(size):
            example = {name: _python_scalar(batch[name][i]) for name in _PASSED_THROUGH if name in batch}
            example.update({name: value[i] for name, value in encoded.items()})
            writer.write(serialize_example(example))
        shapes = {name: list(value.shape[1:]) for name, value in encoded.items()}
        count += size
        if log is not None and (batch_index + 1) % log_every == 0:
            log(f"{count} records encoded ({count / (time.perf_counter() - start):.1f}/s)")
    writer.close()
    statistics = batches.statistics() if hasattr(batches, "statistics") else None
    description = {"format": CACHE_FORMAT, "process_index": process_index, "num_records": count,
                   "encoder": {"kind": encoder.kind, "fields": list(encoder.fields)}, "shapes": shapes,
                   "shards": writer.shards, "pipeline_statistics": statistics, "metadata": metadata or {}}
    tmp = description_path.with_name(f".{description_path.name}.tmp")
    tmp.write_text(json.dumps(description, indent=2))
    os.replace(tmp, description_path)
    return description


def _python_scalar(value):
    """A NumPy scalar (np.generic) as the Python scalar JSON takes; anything else as it is."""
    return value.item() if isinstance(value, np.generic) else value


def _descriptions(path: pathlib.Path) -> list[dict[str, Any]]:
    """The description of every writing process of the cache at `path`, checked to agree."""
    descriptions = [json.loads(p.read_text()) for p in sorted(path.glob("cache-p*.json"))]
    if not descriptions:
        raise FileNotFoundError(f"no latent cache in {str(path)!r}: expected cache-p000.json written by "
                                "`ldm-jax data cache-latents` (an interrupted run leaves none)")
    for description in descriptions:
        if description.get("format") != CACHE_FORMAT:
            raise ValueError(f"{path}: cache format {description.get('format')!r} is not {CACHE_FORMAT!r}")
        if description["encoder"] != descriptions[0]["encoder"]:
            raise ValueError(f"{path}: processes wrote different encodings: {description['encoder']} "
                             f"and {descriptions[0]['encoder']}")
    return descriptions


def read_description(path: str | os.PathLike) -> dict[str, Any]:
    """The description of the cache at `path` (process 0's; every process's agree on the encoding)."""
    return _descriptions(pathlib.Path(path).expanduser())[0]


class LatentCacheSource:
    """A grain random-access source over a latent cache folder (every writing process's shards).

    Items: {"key", "mean", "std"} (KL) or {"key", "latent", "indices"} (VQ), plus "label",
    "caption" and "context" when cached. `.description` is the writer's description (process 0's).
    """

    def __init__(self, path: str | os.PathLike):
        import grain

        self.path = pathlib.Path(path).expanduser()
        descriptions = _descriptions(self.path)
        shards = [self.path / shard["file"] for description in descriptions for shard in description["shards"]]
        missing = [str(shard) for shard in shards if not shard.is_file()]
        if missing:
            raise FileNotFoundError(f"latent cache {str(self.path)!r} lacks {len(missing)} shard(s): {missing[:3]}")
        self.description = descriptions[0]
        self.num_records = sum(description["num_records"] for description in descriptions)
        self._records = grain.sources.ArrayRecordDataSource([str(shard) for shard in shards]) if shards else []
        if len(self._records) != self.num_records:
            raise ValueError(f"latent cache {str(self.path)!r}: its shards hold {len(self._records)} records, its "
                             f"description says {self.num_records}")

    def __len__(self) -> int:
        return self.num_records

    def __getitem__(self, index: int) -> dict[str, Any]:
        index = int(index)
        if not 0 <= index < self.num_records:
            raise IndexError(f"index {index} out of range for the {self.num_records} records of {str(self.path)!r}")
        return deserialize_example(self._records[index], where=f"{self.path.name}#{index}")

    def __repr__(self) -> str:
        return f"LatentCacheSource({str(self.path)!r}, {self.num_records} records, {self.description['encoder']})"


class CachedExample:
    """A pipeline transform: a cache record -> the example an LDM training step reads (picklable).

    Keeps the latent fields ("mean" + "std", or VQ's "latent"), "context" and the passed-through
    "key" / "label" / "caption"; VQ's "indices" stay in the cache. A record lacking one of the cache's
    fields, or holding it in another shape, raises BadRecord: the pipeline skips and counts it.
    """

    def __init__(self, description: dict[str, Any]):
        self.shapes = {name: tuple(shape) for name, shape in description["shapes"].items() if name != "indices"}

    def __call__(self, record: dict[str, Any], rng=None) -> dict[str, Any]:
        key = str(record.get("key", "?"))
        for name, shape in self.shapes.items():
            if name not in record:
                raise BadRecord(key, f"no {name!r} in this record (the cache's fields: {sorted(self.shapes)})")
            if tuple(np.shape(record[name])) != shape:
                raise BadRecord(key, f"{name!r} has shape {tuple(np.shape(record[name]))}, the cache's {shape}")
        return {name: value for name, value in record.items() if name != "indices"}

    def __repr__(self) -> str:
        return f"CachedExample({self.shapes})"


# First-stage component kind -> the encoding its cache holds.
_CACHE_KINDS = {"autoencoder_kl": "kl", "vq": "vq"}


def model_errors(description: dict[str, Any], model, *, image_size: int, check_scale_factor: bool = True,
                 prefix: str = "config") -> list[str]:
    """What keeps a cache (its `description`) from training the LDM `model` (`config.model`) at
    `image_size` (`config.data.image_size`), each naming the config field and what the cache holds.

    Checked: the encoding (KL / VQ) against the first stage, the latent channels against the
    UNet's, the latent side against image_size / f, cached text embeddings (when the model reads
    them: a frozen text encoder) against the UNet's context_dim, and (with `check_scale_factor`,
    when no pretrained LDM supplies it) the scale factor of the LDM checkpoint the cache was
    written from against `diffusion.scale_factor`.
    """
    import ml_collections

    from ldm_jax.ldm import ModelTraits

    kind, shapes = description["encoder"]["kind"], description["shapes"]
    if not shapes:
        return [f"{prefix}.data.data_dir: the latent cache holds no records"]
    expected = _CACHE_KINDS.get(model.first_stage.kind)
    if expected != kind:
        names = {"kl": "KL posteriors (mean, std)", "vq": "VQ latents"}
        wanted = "no latents (it diffuses pixels)" if expected is None else names[expected]
        return [f"{prefix}.model.first_stage.kind: the latent cache holds {names[kind]}, but this model's "
                f"{model.first_stage.kind!r} first stage takes {wanted}"]
    traits = ModelTraits.from_config(ml_collections.ConfigDict({"model": model}))
    errors = []
    height, width, channels = shapes["mean" if kind == "kl" else "latent"]
    if channels != traits.latent_channels:
        errors.append(f"{prefix}.model.unet.params.out_channels: the cached latents have {channels} channels, "
                      f"the UNet diffuses {traits.latent_channels}")
    side = image_size // traits.factor
    if (height, width) != (side, side):
        hint = f": set {prefix}.data.image_size={height * traits.factor}" if height == width else ""
        errors.append(f"{prefix}.data.image_size: the cache holds {height}x{width} latents, but {image_size}^2 "
                      f"images through this first stage (f={traits.factor}) give {side}x{side}{hint}")
    reads_context = traits.is_text and not model.diffusion.cond_stage_trainable  # as ConditioningPlan decides
    if "context" in shapes and reads_context and shapes["context"][-1] != model.unet.params.get("context_dim"):
        errors.append(f"{prefix}.model.unet.params.context_dim: the cached text embeddings have width "
                      f"{shapes['context'][-1]}, the UNet attends to {model.unet.params.get('context_dim')}")
    cached_scale = description.get("metadata", {}).get("scale_factor")
    diffusion = model.diffusion
    if (check_scale_factor and cached_scale is not None and not diffusion.scale_by_std
            and abs(float(diffusion.scale_factor) - cached_scale) > 1e-6 * abs(cached_scale)):
        errors.append(f"{prefix}.model.diffusion.scale_factor: {float(diffusion.scale_factor)}, but the cache was "
                      f"written from an LDM checkpoint whose latents are scaled by {cached_scale}: set it to that "
                      "(or set diffusion.scale_by_std to estimate it)")
    return errors
