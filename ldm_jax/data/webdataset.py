"""LAION-style webdataset tar shards as a grain random-access source.

A shard is an uncompressed tar whose members are grouped by key (the member path up to the first
dot of its file name, the webdataset convention):

    000000001.jpg   the image (.jpg, .jpeg, .png or .webp)
    000000001.txt   its caption
    000000001.json  metadata: caption / text, width, height, similarity, punsafe, ... -> Record["meta"]
    000000001.cls   an integer class label (optional)

`TarShardSource` reads every shard's member headers once (with `tarfile`, which seeks over the
data) and keeps only offsets, so an item is then one positioned read (`os.pread`) of the image
and its small sidecars. File descriptors are opened lazily per process and never pickled, so the
source can be sent to grain's worker processes. A truncated or corrupt shard is indexed up to the
damage and reported (a warning and `.lost_members`), never fatal.
"""
import glob
import json
import os
import re
import tarfile
import warnings
from collections import OrderedDict
from typing import Sequence

import numpy as np

from ldm_jax.data.records import BadRecord, Record

IMAGE_SUFFIXES = ("jpg", "jpeg", "png", "webp")
_FIELDS = ("image", "txt", "json", "cls")  # the columns of the offset table
_MAX_OPEN_FILES = 64
_RANGE = re.compile(r"^(-?\d+)\.\.(-?\d+)$")


def expand_shards(spec: str | Sequence[str]) -> list[str]:
    """The shard paths named by `spec`: brace ranges `shard-{00000..00009}.tar`, brace lists
    `{train,extra}-{0..3}.tar` and globs `shards/*.tar`, or a sequence of such patterns.

    Order follows the patterns (globs sorted); duplicates are dropped. Raises ValueError for an
    empty spec and FileNotFoundError when a glob matches nothing or a named shard is missing.
    """
    patterns = [spec] if isinstance(spec, (str, os.PathLike)) else list(spec)
    if not patterns:
        raise ValueError("no tar shards given: expected a path, a brace pattern such as "
                         "'shards/{00000..00009}.tar', a glob or a list of them")
    paths: list[str] = []
    for pattern in patterns:
        for expanded in expand_braces(os.fspath(pattern)):
            if glob.has_magic(expanded):
                matches = sorted(glob.glob(expanded))
                if not matches:
                    raise FileNotFoundError(f"no tar shards match {expanded!r} (from {os.fspath(pattern)!r})")
                paths.extend(matches)
            elif os.path.isfile(expanded):
                paths.append(expanded)
            else:
                raise FileNotFoundError(f"tar shard {expanded!r} (from {os.fspath(pattern)!r}) does not exist")
    return list(dict.fromkeys(paths))


def expand_braces(pattern: str) -> list[str]:
    """Bash-style brace expansion: `a{1..3}b` -> a1b a2b a3b (zero padding kept, `{000..010}`),
    `{x,y}` -> x y, nested and repeated braces; a brace with neither stays literal."""
    start = pattern.find("{")
    while start >= 0:
        end = _matching_brace(pattern, start)
        if end < 0:
            return [pattern]
        alternatives = _brace_alternatives(pattern[start + 1:end])
        if alternatives is not None:
            head, tail = pattern[:start], pattern[end + 1:]
            return [head + middle + rest for alternative in alternatives
                    for middle in expand_braces(alternative) for rest in expand_braces(tail)]
        start = pattern.find("{", start + 1)
    return [pattern]


def _matching_brace(text: str, start: int) -> int:
    depth = 0
    for position in range(start, len(text)):
        depth += {"{": 1, "}": -1}.get(text[position], 0)
        if depth == 0:
            return position
    return -1


def _brace_alternatives(body: str) -> list[str] | None:
    numeric = _RANGE.match(body)
    if numeric:
        first, last = numeric.groups()
        width = max(len(first), len(last)) if re.match(r"^-?0\d", first) or re.match(r"^-?0\d", last) else 0
        step = 1 if int(last) >= int(first) else -1
        return [str(value).zfill(width) for value in range(int(first), int(last) + step, step)]
    parts, depth, current = [], 0, ""
    for char in body:
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
            continue
        depth += {"{": 1, "}": -1}.get(char, 0)
        current += char
    parts.append(current)
    return parts if len(parts) > 1 else None


class TarShardSource:
    """Random access to the samples of webdataset tar shards (see the module docstring).

    min_size drops samples whose json metadata says min(width, height) < min_size;
    max_aspect_ratio drops those with max / min side above it; caption_required drops samples with
    neither a .txt caption nor a json caption / text. Samples without size metadata pass the size
    filters. Dropped samples are counted in `.filtered` (and `.filtered_by_reason`).
    """

    def __init__(self, shards: str | Sequence[str], *, min_size: int | None = None,
                 max_aspect_ratio: float | None = None, caption_required: bool = False):
        self.shards = expand_shards(shards)
        self.min_size, self.max_aspect_ratio, self.caption_required = min_size, max_aspect_ratio, caption_required
        self._shard_names = _shard_names(self.shards)
        self.filtered_by_reason = {"min_size": 0, "max_aspect_ratio": 0, "no_caption": 0}
        self.lost_members: dict[str, int] = {}
        keys, shard_ids, rows = [], [], []
        for shard_id, path in enumerate(self.shards):
            for key, members in self._index_shard(path):
                keys.append(key)
                shard_ids.append(shard_id)
                rows.append(members)
        self._keys = keys
        self._shard_ids = np.asarray(shard_ids, np.int32)
        # (n, fields, 2): offset and size of each sample's image / txt / json / cls member; -1 when absent.
        self._members = np.asarray(rows, np.int64).reshape(len(rows), len(_FIELDS), 2)
        self._files: OrderedDict[int, int] = OrderedDict()
        self._pid = os.getpid()

    @property
    def filtered(self) -> int:
        """How many samples the size / caption filters dropped while indexing."""
        return sum(self.filtered_by_reason.values())

    def __len__(self) -> int:
        return len(self._keys)

    def __getitem__(self, index: int) -> Record:
        index = int(index)
        if not 0 <= index < len(self._keys):
            raise IndexError(f"index {index} out of range for {len(self._keys)} samples in {len(self.shards)} shards")
        shard_id = int(self._shard_ids[index])
        key = f"{self._shard_names[shard_id]}/{self._keys[index]}"
        image_span, txt_span, json_span, cls_span = self._members[index]
        if image_span[0] < 0:
            raise BadRecord(key, f"no image member ({', '.join('.' + s for s in IMAGE_SUFFIXES)}) for this key "
                                 f"in shard {self.shards[shard_id]!r}")
        record: Record = {"key": key, "image": self._read(shard_id, image_span, key)}
        meta = _parse_json(self._read(shard_id, json_span, key), key) if json_span[0] >= 0 else {}
        if txt_span[0] >= 0:
            record["caption"] = _utf8(self._read(shard_id, txt_span, key), key, "caption").strip()
        elif _json_caption(meta) is not None:
            record["caption"] = _json_caption(meta)
        if cls_span[0] >= 0:
            label = _utf8(self._read(shard_id, cls_span, key), key, "class label").strip()
            if not re.fullmatch(r"-?\d+", label):
                raise BadRecord(key, f"the .cls member must hold an integer class label, got {label[:40]!r}")
            record["label"] = int(label)
        if meta:
            record["meta"] = meta
        return record

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_files"] = OrderedDict()  # descriptors belong to the process that opened them
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._pid = os.getpid()

    def __del__(self):
        try:
            self._close_files()
        except Exception:  # interpreter shutdown: the OS reclaims descriptors anyway
            pass

    def __repr__(self) -> str:
        return f"TarShardSource({len(self.shards)} shards, {len(self)} samples, {self.filtered} filtered)"

    def _read(self, shard_id: int, span: np.ndarray, key: str) -> bytes:
        offset, size = int(span[0]), int(span[1])
        try:
            data = os.pread(self._descriptor(shard_id), size, offset)
        except OSError as error:
            raise BadRecord(key, f"cannot read shard {self.shards[shard_id]!r}: {error}") from error
        if len(data) != size:
            raise BadRecord(key, f"shard {self.shards[shard_id]!r} ended after {len(data)} of {size} bytes "
                                 f"at offset {offset} (the file changed since it was indexed?)")
        return data

    def _descriptor(self, shard_id: int) -> int:
        if self._pid != os.getpid():  # a forked copy: descriptors are the parent's business
            self._files = OrderedDict()
            self._pid = os.getpid()
        if shard_id in self._files:
            self._files.move_to_end(shard_id)
            return self._files[shard_id]
        if len(self._files) >= _MAX_OPEN_FILES:
            os.close(self._files.popitem(last=False)[1])
        descriptor = os.open(self.shards[shard_id], os.O_RDONLY)
        self._files[shard_id] = descriptor
        return descriptor

    def _close_files(self) -> None:
        files = getattr(self, "_files", None)
        if files and getattr(self, "_pid", None) == os.getpid():
            for descriptor in files.values():
                try:
                    os.close(descriptor)
                except OSError:
                    pass
            files.clear()

    def _index_shard(self, path: str) -> list[tuple[str, list[int]]]:
        """[(key, [image offset, size, txt offset, size, json ..., cls ...])] of one shard, filtered."""
        groups, lost, damage = _read_members(path)
        if lost or damage:
            self.lost_members[path] = lost
            warnings.warn(f"tar shard {path!r} is truncated or corrupt ({damage or 'data cut short'}): indexed "
                          f"{len(groups)} samples, lost {lost} member(s)", RuntimeWarning, stacklevel=3)
        kept = []
        with open(path, "rb") as file:
            for key, members in groups.items():
                reason = self._filter_reason(file, members)
                if reason is not None:
                    self.filtered_by_reason[reason] += 1
                    continue
                kept.append((key, [value for field in _FIELDS for value in members.get(field, (-1, -1))]))
        return kept

    def _filter_reason(self, file, members: dict[str, tuple[int, int]]) -> str | None:
        if self.min_size is None and self.max_aspect_ratio is None and not self.caption_required:
            return None
        meta = {}
        if "json" in members:
            file.seek(members["json"][0])
            try:
                meta = json.loads(file.read(members["json"][1]))
            except (json.JSONDecodeError, UnicodeDecodeError):
                meta = {}  # left for access time, where it becomes a BadRecord
            meta = meta if isinstance(meta, dict) else {}
        width, height = meta.get("width"), meta.get("height")
        if isinstance(width, (int, float)) and isinstance(height, (int, float)) and width > 0 and height > 0:
            if self.min_size is not None and min(width, height) < self.min_size:
                return "min_size"
            if self.max_aspect_ratio is not None and max(width, height) / min(width, height) > self.max_aspect_ratio:
                return "max_aspect_ratio"
        if self.caption_required and members.get("txt", (0, 0))[1] == 0 and not _json_caption(meta):
            return "no_caption"
        return None


def _read_members(path: str) -> tuple[dict[str, dict[str, tuple[int, int]]], int, str]:
    """Groups {key: {field: (offset, size)}} of a shard, how many members were lost, and what went wrong."""
    size = os.path.getsize(path)
    groups: dict[str, dict[str, tuple[int, int]]] = {}
    lost, damage, last_complete = 0, "", True
    if size == 0:
        return groups, 0, "the file is empty"
    with open(path, "rb") as file:
        if file.read(2) == b"\x1f\x8b":
            raise ValueError(f"tar shard {path!r} is gzip-compressed; random access needs uncompressed .tar "
                             f"shards (decompress them with gunzip)")
        file.seek(0)
        try:
            tar = tarfile.open(fileobj=file, mode="r:")
        except tarfile.ReadError as error:
            return groups, 1, f"no readable tar header at the start ({error})"
        try:
            for member in tar:
                if not member.isfile():
                    continue
                last_complete = member.offset_data + member.size <= size
                if not last_complete:
                    lost += 1
                    continue
                directory, _, name = member.name.rpartition("/")
                stem, _, suffix = name.partition(".")
                field = "image" if suffix.lower() in IMAGE_SUFFIXES else suffix.lower()
                if field in _FIELDS and stem:
                    key = f"{directory}/{stem}" if directory else stem
                    groups.setdefault(key, {}).setdefault(field, (member.offset_data, member.size))
        except (tarfile.ReadError, EOFError, OSError) as error:
            damage = f"{error} after byte {tar.offset}"
            if last_complete:  # else the error is that incomplete member, already counted
                lost += 1
        else:
            # tarfile stops quietly at a cut header: anything but zero padding after the last member
            # is the start of a member that was lost.
            file.seek(tar.offset)
            if file.read().strip(b"\0"):
                lost += 1
                damage = f"a member header is cut off after byte {tar.offset}"
    return groups, lost, damage


def _shard_names(shards: list[str]) -> list[str]:
    """Shard paths relative to their common folder, without `.tar`: the prefix of every key."""
    if not shards:
        return []
    common = os.path.commonpath([os.path.dirname(os.path.abspath(path)) for path in shards])
    names = []
    for path in shards:
        relative = os.path.relpath(os.path.abspath(path), common)
        names.append(relative[:-4] if relative.endswith(".tar") else relative)
    return names


def _json_caption(meta: dict) -> str | None:
    """The caption a LAION json carries ("caption", else "text"), stripped; None without one."""
    for field in ("caption", "text"):
        if isinstance(meta.get(field), str):
            return meta[field].strip()
    return None


def _utf8(data: bytes, key: str, what: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise BadRecord(key, f"the {what} is not UTF-8 text: {error}") from error


def _parse_json(data: bytes, key: str) -> dict:
    try:
        content = json.loads(_utf8(data, key, "json metadata"))
    except json.JSONDecodeError as error:
        raise BadRecord(key, f"the .json member is not valid JSON: {error}") from error
    if not isinstance(content, dict):
        raise BadRecord(key, f"the .json member must hold a JSON object, got a {type(content).__name__}")
    return content
