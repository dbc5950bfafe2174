"""TFDS / ArrayRecord datasets: a grain source over `tfds.data_source`, and a writer of real TFDS datasets.

Reading (`tfds_source`) and writing (`write_dataset`) both work without TensorFlow.

`write_dataset` produces exactly what `tfds build --file_format=array_record` produces:

    out_dir/name/1.0.0/dataset_info.json, features.json, label.labels.txt,
                       name-train.array_record-00000-of-00004, ...

so `tfds.data_source(name, data_dir=out_dir)` and `tfds_source(name, data_dir=out_dir)` read it.
Features: "key" Text, "image" Image (the original encoded file bytes, never re-encoded; decoded
arrays are stored as lossless PNG), and, when any record has them, "label" ClassLabel, "caption"
Text, "segmentation" Image(H, W, 1) PNG, "meta" and "boxes" as JSON Text.

Why not `tfds.dataset_builders.store_as_tfds_dataset`: in tfds 4.9.10 its builder imports TensorFlow
(`isinstance(x, tf.data.Dataset)`) and `importlib_resources`, and its writer serialises the
tf.train.Example feature map in hash order, so the same input gives different bytes from run to
run. Here examples are serialised with tfds's own `ExampleSerializer` but deterministically, written
with the ArrayRecord options tfds uses ("group_size:1", for random access), and the metadata comes
from `tfds.folder_dataset.write_metadata`. Same input -> byte-identical shards.

Records go to shards in input order, in contiguous, balanced runs. Writing is two passes: records
are staged in one temporary ArrayRecord file (so a stream of unknown length can be split evenly and
the feature set is known), then copied into the final shards, which appear only when complete.
"""
import dataclasses
import io
import json
import os
import pathlib
import re
import shutil
import tempfile
from typing import Any, Iterable

import numpy as np
import tensorflow_datasets as tfds
from array_record.python import array_record_data_source, array_record_module
from PIL import Image
from tensorflow_datasets.core import example_serializer
from tensorflow_datasets.core.utils import shard_utils
from tensorflow_datasets.proto import tf_example_pb2

from ldm_jax.data.records import BadRecord, Record

_WRITER_OPTIONS = "group_size:1"  # tfds's choice: every record its own chunk, for random access
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_OPTIONAL = ("label", "caption", "segmentation", "meta", "boxes")
_DEFAULT_KEYS = {"label_key": "label", "caption_key": "caption", "segmentation_key": "segmentation"}


# ---------------------------------------------------------------------------------------- reading

def tfds_source(name: str, split: str = "train", data_dir: str | os.PathLike | None = None, *,
                image_key: str = "image", label_key: str | None = "label", caption_key: str | None = "caption",
                segmentation_key: str | None = "segmentation") -> "TfdsSource":
    """A grain random-access source of Records over the prepared TFDS dataset `name` (ArrayRecord).

    Image features arrive as their encoded bytes (decoding happens in the pipeline's workers).
    label / caption / segmentation keys left at their defaults are used when the dataset has them;
    pass None to ignore one, or another feature name to map it.
    """
    return TfdsSource(name, split, data_dir, image_key=image_key, label_key=label_key, caption_key=caption_key,
                      segmentation_key=segmentation_key)


class TfdsSource:
    """Records from a TFDS ArrayRecord data source; see `tfds_source`. `.classes` names the labels."""

    def __init__(self, name: str, split: str = "train", data_dir: str | os.PathLike | None = None, *,
                 image_key: str = "image", label_key: str | None = "label", caption_key: str | None = "caption",
                 segmentation_key: str | None = "segmentation"):
        data_dir = os.path.expanduser(os.fspath(data_dir) if data_dir is not None else tfds.core.constants.DATA_DIR)
        _require_prepared(name, data_dir)
        builder = tfds.builder(name, data_dir=data_dir)
        features = builder.info.features
        if image_key not in features:
            raise KeyError(f"TFDS dataset {name!r} has no image feature {image_key!r}; its features are "
                           f"{sorted(features.keys())} (pass image_key=...)")
        self._keys = {"image": image_key}
        for field, (argument, value) in zip(("label", "caption", "segmentation"),
                                            (("label_key", label_key), ("caption_key", caption_key),
                                             ("segmentation_key", segmentation_key))):
            if value is not None and value in features:
                self._keys[field] = value
            elif value is not None and value != _DEFAULT_KEYS[argument]:
                raise KeyError(f"TFDS dataset {name!r} has no feature {value!r} ({argument}); its features are "
                               f"{sorted(features.keys())}")
        texts = {field for field in features.keys() if isinstance(features[field], tfds.features.Text)}
        self._json_fields = [field for field in ("meta", "boxes") if field in texts]
        self._has_key = "key" in texts
        decoders = {feature: tfds.decode.SkipDecoding() for field, feature in self._keys.items()
                    if isinstance(features[feature], tfds.features.Image)}
        try:
            self._source = builder.as_data_source(split=split, decoders=decoders)
        except ValueError as error:
            raise ValueError(f"TFDS dataset {name!r} in {data_dir!r}: cannot read split {split!r}: {error}") from error
        except (NotImplementedError, RuntimeError) as error:
            raise RuntimeError(f"TFDS dataset {name!r} in {data_dir!r} cannot be read by random access: {error}. "
                               f"Prepare it with --file_format=array_record.") from error
        label = features[self._keys["label"]] if "label" in self._keys else None
        named = isinstance(label, tfds.features.ClassLabel) and label.names
        self.classes: list[str] = list(label.names) if named else []
        self.name, self.split = name, split

    def __len__(self) -> int:
        return len(self._source)

    def __getitem__(self, index: int) -> Record:
        index = int(index)
        example = self._source[index]
        key = _text(example["key"]) if self._has_key else f"{self.name}/{self.split}/{index}"
        record: Record = {"key": key, "image": _bytes_or_array(example[self._keys["image"]])}
        if "label" in self._keys:
            record["label"] = int(example[self._keys["label"]])
        if "caption" in self._keys:
            record["caption"] = _text(example[self._keys["caption"]])
        if "segmentation" in self._keys:
            record["segmentation"] = _bytes_or_array(example[self._keys["segmentation"]])
        for field in self._json_fields:
            try:
                value = json.loads(_text(example[field]))
            except json.JSONDecodeError as error:
                raise BadRecord(key, f"feature {field!r} is not valid JSON: {error}") from error
            if value:
                record[field] = value
        return record

    def __repr__(self) -> str:
        return f"TfdsSource({self.name!r}, split={self.split!r}, {len(self)} records)"


def _require_prepared(name: str, data_dir: str) -> None:
    """A clear error, before tfds tries anything (a download, a registry lookup, its catalogue of every
    dataset), if `name` ("base", "base/config", "base:version", "base/config:version") is absent."""
    base, config, version = re.fullmatch(r"([^/:]*)(?:/([^:]*))?(?::(.*))?", name).groups()
    folder = os.path.join(data_dir, base)
    prepared = _prepared_versions(folder)
    if not prepared:
        raise FileNotFoundError(
            f"TFDS dataset {name!r} is not prepared in {data_dir!r} (no {folder}/.../dataset_info.json). Prepare it "
            f"once with `tfds build {base} --data_dir={data_dir} --file_format=array_record` (on a machine with "
            f"TensorFlow), or convert an image folder or tar shards with `ldm-jax data build --from folder|tar "
            f"--out {data_dir} --name {base} SRC...`.")
    # Without a config, tfds takes the dataset's default one; without a version, the latest.
    if not any(config in (None, found_config) and version in (None, found_version)
               for found_config, found_version in prepared):
        listed = ", ".join(f"{base}{'/' + c if c else ''}:{v}" for c, v in prepared)
        raise ValueError(f"TFDS dataset {name!r}: no such config or version is prepared in {folder!r}; "
                         f"found {listed}")


def _prepared_versions(folder: str) -> list[tuple[str, str]]:
    """(config, version) of every prepared copy under a dataset's folder ("" for no config), sorted:
    TFDS writes <folder>/<version>/ or <folder>/<config>/<version>/, each with a dataset_info.json."""
    if not os.path.isdir(folder):
        return []
    prepared = []
    for directory, _, files in os.walk(folder):
        if "dataset_info.json" in files:
            parts = pathlib.Path(os.path.relpath(directory, folder)).parts
            if len(parts) in (1, 2):
                prepared.append(("" if len(parts) == 1 else parts[0], parts[-1]))
    return sorted(prepared)


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _bytes_or_array(value: Any) -> bytes | np.ndarray:
    return value if isinstance(value, bytes) else np.asarray(value)


# ---------------------------------------------------------------------------------------- writing

@dataclasses.dataclass(frozen=True)
class WrittenDataset:
    """What `write_dataset` wrote: where, how many records and shards, and what it skipped (key, reason)."""

    name: str
    split: str
    directory: pathlib.Path
    num_records: int
    shard_paths: tuple[pathlib.Path, ...]
    skipped: tuple[tuple[str, str], ...]

    @property
    def num_shards(self) -> int:
        return len(self.shard_paths)


def write_dataset(records: Iterable[Record | BadRecord], out_dir: str | os.PathLike, name: str, *,
                  num_shards: int | None = None, split: str = "train", class_names: list[str] | None = None,
                  version: str = "1.0.0", overwrite: bool = False, description: str | None = None) -> WrittenDataset:
    """Writes `records` as the `split` of the TFDS ArrayRecord dataset `out_dir/name/version`.

    `records` may also be a random-access source (`__len__` / `__getitem__`): items that raise
    BadRecord, and BadRecord instances yielded by an iterable, are skipped and counted. num_shards
    None picks tfds's size-based count. Another split can be added to an existing dataset of the
    same features; an existing split is replaced only with overwrite=True.
    """
    if not _NAME.match(name):
        raise ValueError(f"dataset name {name!r} must be snake_case: a lower-case letter, then letters, digits, _")
    if name in tfds.list_builders(with_community_datasets=False):
        raise ValueError(f"dataset name {name!r} is a TFDS catalogue dataset; choose another name so that "
                         f"tfds.data_source reads your files and not the catalogue builder")
    if not _NAME.match(split):
        raise ValueError(f"split name {split!r} must be snake_case (e.g. 'train', 'validation')")
    if num_shards is not None and num_shards < 1:
        raise ValueError(f"num_shards must be >= 1, got {num_shards}")
    directory = pathlib.Path(out_dir).expanduser() / name / version
    existing = tfds.builder_from_directory(directory).info if (directory / "dataset_info.json").exists() else None
    if existing is not None and split in existing.splits and not overwrite:
        raise FileExistsError(f"split {split!r} of dataset {name!r} already exists in {directory}; pass "
                              f"overwrite=True (--overwrite) to replace it")
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = pathlib.Path(tempfile.mkdtemp(prefix=f".incomplete-{split}-", dir=directory.parent))
    try:
        staged = _stage(records, staging / "staged.array_record", class_names)
        features = _features(staged, class_names, existing)
        order, unusable = _usable(staged, features)
        skipped = staged.skipped + unusable
        if not order:
            examples = "; ".join(f"{key}: {reason}" for key, reason in skipped[:3])
            raise ValueError(f"no usable records to write for {name!r}/{split} ({len(skipped)} skipped, e.g. "
                             f"{examples or 'the input was empty'})")
        count = num_shards or shard_utils.ShardConfig.calculate_number_shards(staged.num_bytes, len(order))
        template = tfds.core.ShardedFileTemplate(data_dir=directory, dataset_name=name, split=split,
                                                 filetype_suffix="array_record")
        shard_lengths, num_bytes, staged_shards = _write_shards(staged, order, features, min(count, len(order)),
                                                                template, staging)
        directory.mkdir(parents=True, exist_ok=True)
        for old in directory.glob(f"{name}-{split}.array_record-*"):
            old.unlink()
        shard_paths = []
        for staged_shard in staged_shards:
            os.replace(staged_shard, directory / staged_shard.name)
            shard_paths.append(directory / staged_shard.name)
        splits = [info for other, info in (existing.splits.items() if existing else []) if other != split]
        splits.append(tfds.core.SplitInfo(name=split, shard_lengths=shard_lengths, num_bytes=num_bytes,
                                          filename_template=template))
        tfds.folder_dataset.write_metadata(data_dir=directory, features=features, split_infos=splits,
                                           filename_template=template.replace(split=None), check_data=False,
                                           description=description or f"{name}: written by ldm_jax.data.arrayrecord")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if not any(directory.parent.iterdir()):  # a failed first write leaves no empty dataset folder
            directory.parent.rmdir()
    return WrittenDataset(name, split, directory, len(order), tuple(shard_paths), tuple(skipped))


@dataclasses.dataclass
class _Staged:
    path: pathlib.Path
    num_records: int = 0
    num_bytes: int = 0
    present: set = dataclasses.field(default_factory=set)
    max_label: int = -1
    has_label: list = dataclasses.field(default_factory=list)
    has_segmentation: list = dataclasses.field(default_factory=list)
    keys: list = dataclasses.field(default_factory=list)
    skipped: list = dataclasses.field(default_factory=list)


def _stage(records, path: pathlib.Path, class_names: list[str] | None) -> _Staged:
    """Pass 1: every usable record as a tf.train.Example in one staging file."""
    staged = _Staged(path)
    writer = array_record_module.ArrayRecordWriter(os.fspath(path), _WRITER_OPTIONS)
    try:
        for item in _items(records):
            if isinstance(item, BadRecord):
                staged.skipped.append((item.key, item.reason))
                continue
            key = str(item.get("key", f"record-{staged.num_records + len(staged.skipped)}"))
            try:
                example = _staging_example(item, key, class_names)
            except BadRecord as error:
                staged.skipped.append((error.key, error.reason))
                continue
            serialized = example.SerializeToString(deterministic=True)
            writer.write(serialized)
            staged.num_records += 1
            staged.num_bytes += len(serialized)
            staged.keys.append(key)
            staged.present.update(field for field in _OPTIONAL if field in item and item[field] is not None)
            staged.has_label.append("label" in item)
            staged.has_segmentation.append(item.get("segmentation") is not None)
            if "label" in item:
                staged.max_label = max(staged.max_label, int(item["label"]))
    finally:
        writer.close()
    return staged


def _items(records):
    """The items of an iterable, or of a random-access source with its BadRecords as values."""
    if hasattr(records, "__len__") and hasattr(records, "__getitem__") and not isinstance(records, (list, tuple)):
        for index in range(len(records)):
            try:
                yield records[index]
            except BadRecord as error:
                yield error
    else:
        yield from records


def _staging_example(record: Record, key: str, class_names: list[str] | None) -> tf_example_pb2.Example:
    if "image" not in record:
        raise BadRecord(key, "the record has no image")
    example = tf_example_pb2.Example()
    feature = example.features.feature
    feature["key"].bytes_list.value.append(key.encode("utf-8"))
    feature["image"].bytes_list.value.append(_image_bytes(record["image"], key))
    if "label" in record:
        label = record["label"]
        if isinstance(label, bool) or not isinstance(label, (int, np.integer)) or label < 0:
            raise BadRecord(key, f"label must be a non-negative integer, got {label!r}")
        if class_names is not None and label >= len(class_names):
            raise BadRecord(key, f"label {label} is out of range for {len(class_names)} class names")
        feature["label"].int64_list.value.append(int(label))
    if record.get("caption") is not None:
        feature["caption"].bytes_list.value.append(str(record["caption"]).encode("utf-8"))
    if record.get("segmentation") is not None:
        feature["segmentation"].bytes_list.value.append(_segmentation_bytes(record["segmentation"], key))
    for field in ("meta", "boxes"):
        if record.get(field) is not None:
            try:
                text = json.dumps(record[field], sort_keys=True, default=_json_default)
            except (TypeError, ValueError) as error:
                raise BadRecord(key, f"{field} cannot be stored as JSON: {error}") from error
            feature[field].bytes_list.value.append(text.encode("utf-8"))
    return example


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _image_bytes(image: bytes | np.ndarray, key: str) -> bytes:
    """Encoded bytes as they are; a decoded uint8 array as a lossless PNG."""
    if isinstance(image, (bytes, bytearray, memoryview)):
        return bytes(image)
    array = np.asarray(image)
    if array.dtype != np.uint8 or not (array.ndim == 2 or array.ndim == 3 and array.shape[-1] in (1, 3, 4)):
        raise BadRecord(key, f"an image array must be uint8 (H, W[, 1|3|4]), got {array.dtype} {array.shape}")
    return _png(array[..., 0] if array.ndim == 3 and array.shape[-1] == 1 else array)


def _segmentation_bytes(segmentation: bytes | np.ndarray, key: str) -> bytes:
    if isinstance(segmentation, (bytes, bytearray, memoryview)):
        return bytes(segmentation)
    array = np.asarray(segmentation)
    array = array[..., 0] if array.ndim == 3 and array.shape[-1] == 1 else array
    if array.ndim != 2 or array.dtype.kind not in "iub":
        raise BadRecord(key, f"a segmentation map must be an (H, W) integer array, got {array.dtype} {array.shape}")
    if array.size and (array.min() < 0 or array.max() > 255):
        raise BadRecord(key, f"segmentation class indices must lie in [0, 255] to be stored as an 8-bit PNG, got "
                             f"[{array.min()}, {array.max()}]")
    return _png(array.astype(np.uint8))


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "PNG")
    return buffer.getvalue()


def _features(staged: _Staged, class_names: list[str] | None, existing) -> tfds.features.FeaturesDict:
    """The dataset's features: those of an existing dataset being extended, else from what was staged."""
    if existing is not None:
        features = existing.features
        extra = sorted(field for field in staged.present if field not in features)
        if extra:
            raise ValueError(f"the records have {extra} but the existing dataset in this folder does not "
                             f"(its features: {sorted(features.keys())}); write to a new dataset name")
        label = features["label"] if "label" in features else None
        if label is not None and class_names is not None and list(class_names) != list(label.names):
            raise ValueError(f"class names {list(class_names)} differ from the existing dataset's {label.names}")
        if label is not None and staged.max_label >= label.num_classes:
            raise ValueError(f"labels go up to {staged.max_label} but the existing dataset has "
                             f"{label.num_classes} classes")
        return features
    spec: dict[str, Any] = {"key": tfds.features.Text(), "image": tfds.features.Image()}
    if "label" in staged.present or class_names is not None:
        spec["label"] = (tfds.features.ClassLabel(names=list(class_names)) if class_names is not None
                         else tfds.features.ClassLabel(num_classes=staged.max_label + 1))
    if "caption" in staged.present:
        spec["caption"] = tfds.features.Text()
    if "segmentation" in staged.present:
        spec["segmentation"] = tfds.features.Image(shape=(None, None, 1), encoding_format="png")
    for field in ("meta", "boxes"):
        if field in staged.present:
            spec[field] = tfds.features.Text()
    return tfds.features.FeaturesDict(spec)


def _usable(staged: _Staged, features) -> tuple[list[int], list[tuple[str, str]]]:
    """Staged indices that carry every required feature; the others as (key, reason)."""
    order, skipped = [], []
    for index, key in enumerate(staged.keys):
        if "label" in features and not staged.has_label[index]:
            skipped.append((key, "no label, while the dataset has labels"))
        elif "segmentation" in features and not staged.has_segmentation[index]:
            skipped.append((key, "no segmentation map, while the dataset has them"))
        else:
            order.append(index)
    return order, skipped


_DEFAULTS = {"caption": "", "meta": "{}", "boxes": "[]"}


def _write_shards(staged: _Staged, order: list[int], features, num_shards: int, template, folder: pathlib.Path):
    """Pass 2: staged examples, in order, into `num_shards` contiguous balanced shards under `folder`."""
    serializer = example_serializer.ExampleSerializer(features.get_serialized_info())
    source = array_record_data_source.ArrayRecordDataSource([os.fspath(staged.path)])
    bounds = [round(len(order) * shard / num_shards) for shard in range(num_shards + 1)]
    lengths, total, paths = [], 0, []
    for shard in range(num_shards):
        path = folder / pathlib.Path(template.sharded_filepath(shard_index=shard, num_shards=num_shards)).name
        writer = array_record_module.ArrayRecordWriter(os.fspath(path), _WRITER_OPTIONS)
        try:
            for index in order[bounds[shard]:bounds[shard + 1]]:
                example = _from_staging(tf_example_pb2.Example.FromString(source[index]), features)
                serialized = serializer.get_tf_example(features.encode_example(example)).SerializeToString(
                    deterministic=True)  # sorted feature map: the same record always gives the same bytes
                writer.write(serialized)
                total += len(serialized)
        finally:
            writer.close()
        lengths.append(bounds[shard + 1] - bounds[shard])
        paths.append(path)
    return lengths, total, paths


def _from_staging(example: tf_example_pb2.Example, features) -> dict:
    staged = example.features.feature
    out: dict[str, Any] = {}
    for field in features.keys():
        if field == "label":
            out[field] = int(staged[field].int64_list.value[0])
        elif field in staged and staged[field].bytes_list.value:
            value = staged[field].bytes_list.value[0]
            out[field] = value if field in ("image", "segmentation") else value.decode("utf-8")
        else:
            out[field] = _DEFAULTS[field]
    return out
