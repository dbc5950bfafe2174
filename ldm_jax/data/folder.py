"""A folder of image files as a grain random-access source.

    root/                         labels="auto": the root holds only class folders, so
      cat/001.jpg  001.txt        "cat" -> 0, "dog" -> 1 (sorted folder names, `.classes`)
      dog/a/002.png  002.json     captions from sidecars: <stem>.txt, or <stem>.json {"caption": ...}

Files are found recursively and sorted by their path relative to `root`, so the same folder always
gives the same order (and the same index -> record mapping on every host). `heldout_fraction` holds
out that share of every class (split "validation"; the rest is split "train"), chosen by a hash of
each path: the same images on every machine, and adding a file moves at most one out of the split.
Hidden files and folders (names starting with ".", e.g. `.ipynb_checkpoints`, macOS `._x.jpg` forks)
are ignored. Items carry the raw file bytes; decoding happens later in the pipeline's workers.
"""
import hashlib
import json
import math
import os
import pathlib
from typing import Sequence

from ldm_jax.data.records import BadRecord, Record

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif")
LABEL_MODES = ("auto", "folders", "none")
SPLITS = ("train", "validation")
_CAPTION_SUFFIXES = (".txt", ".json")


class ImageFolderSource:
    """Random access to the images under `root` (recursive, sorted), with folder labels and captions.

    labels: "auto" uses the first-level sub-folders as classes when every image lies in one;
    "folders" requires that; "none" never labels. `key` is the image path relative to `root`;
    labelled records carry their class folder's name as "class_name" too.
    split, heldout_fraction: "validation" is `heldout_fraction` of each class (at least one image
    of each when the fraction is above 0), "train" the rest.
    """

    def __init__(self, root: str | os.PathLike, *, extensions: Sequence[str] = IMAGE_EXTENSIONS,
                 labels: str = "auto", split: str = "train", heldout_fraction: float = 0.0):
        self.root = pathlib.Path(root)
        if labels not in LABEL_MODES:
            raise ValueError(f"labels must be one of {LABEL_MODES}, got {labels!r}")
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if not 0.0 <= heldout_fraction < 1.0:
            raise ValueError(f"heldout_fraction must be in [0, 1), got {heldout_fraction!r}")
        if split == "validation" and not heldout_fraction:
            raise ValueError("split 'validation' of an image folder needs heldout_fraction > 0 (nothing is held "
                             "out otherwise)")
        if not self.root.exists():
            raise FileNotFoundError(f"image folder {str(self.root)!r} does not exist")
        if not self.root.is_dir():
            raise NotADirectoryError(f"image folder {str(self.root)!r} is a file, not a folder")
        self.extensions = tuple(ext.lower() if ext.startswith(".") else f".{ext.lower()}" for ext in extensions)
        self._paths, self._captions = _scan(self.root, self.extensions)
        if not self._paths:
            raise FileNotFoundError(f"no images found under {str(self.root)!r}: looked recursively for files "
                                    f"ending in {', '.join(self.extensions)} (case-insensitive)")
        self.classes: list[str] = _classes(self._paths, labels, self.root)
        class_index = {name: index for index, name in enumerate(self.classes)}
        self._labels = [class_index[path.split("/", 1)[0]] for path in self._paths] if self.classes else None
        if heldout_fraction:
            heldout = heldout_indices(self._paths, self._labels, heldout_fraction)
            keep = [i for i in range(len(self._paths)) if (i in heldout) == (split == "validation")]
            self._paths, self._captions = [self._paths[i] for i in keep], [self._captions[i] for i in keep]
            self._labels = None if self._labels is None else [self._labels[i] for i in keep]

    def __len__(self) -> int:
        return len(self._paths)

    def __getitem__(self, index: int) -> Record:
        index = int(index)
        if not 0 <= index < len(self._paths):
            raise IndexError(f"index {index} out of range for {len(self._paths)} images under {str(self.root)!r}")
        key = self._paths[index]
        try:
            image = (self.root / key).read_bytes()
        except OSError as error:
            raise BadRecord(key, f"cannot read the file: {error}") from error
        record: Record = {"key": key, "image": image}
        if self._labels is not None:
            record["label"] = self._labels[index]
            record["class_name"] = self.classes[self._labels[index]]
        sidecar = self._captions[index]
        if sidecar is not None:
            caption, meta = _read_caption(self.root / sidecar, key)
            if caption is not None:
                record["caption"] = caption
            if meta:
                record["meta"] = meta
        return record

    def __repr__(self) -> str:
        labels = f", {len(self.classes)} classes" if self.classes else ""
        return f"ImageFolderSource({str(self.root)!r}, {len(self)} images{labels})"


def heldout_indices(paths: Sequence[str], labels: Sequence[int] | None, fraction: float) -> set[int]:
    """The indices of `fraction` of each class's paths (of all paths without labels), rounded up: those
    whose SHA-256 ranks lowest: stratified, deterministic, and an added file moves at most one out."""
    groups: dict[int, list[int]] = {}
    for index in range(len(paths)):
        groups.setdefault(0 if labels is None else labels[index], []).append(index)
    heldout = set()
    for members in groups.values():
        ranked = sorted(members, key=lambda i: hashlib.sha256(paths[i].encode("utf-8")).digest())
        heldout.update(ranked[:math.ceil(fraction * len(members))])
    return heldout


def class_prompt(class_name: str) -> str:
    """The text a class folder's name stands for: "golden_retriever" -> "golden retriever"."""
    return " ".join(class_name.replace("_", " ").split())


def _scan(root: pathlib.Path, extensions: tuple[str, ...]) -> tuple[list[str], list[str | None]]:
    """Sorted relative POSIX paths of the images under `root`, and each one's caption sidecar."""
    found: list[tuple[str, str | None]] = []
    for directory, subdirs, files in os.walk(root):
        subdirs[:] = [name for name in subdirs if not name.startswith(".")]
        relative_dir = pathlib.Path(directory).relative_to(root).as_posix()
        prefix = "" if relative_dir == "." else relative_dir + "/"
        names = set(files)
        for name in files:
            stem, suffix = os.path.splitext(name)
            if name.startswith(".") or suffix.lower() not in extensions:
                continue
            sidecar = next((stem + ext for ext in _CAPTION_SUFFIXES if stem + ext in names), None)
            found.append((prefix + name, None if sidecar is None else prefix + sidecar))
    found.sort(key=lambda item: item[0])
    return [path for path, _ in found], [sidecar for _, sidecar in found]


def _classes(paths: list[str], labels: str, root: pathlib.Path) -> list[str]:
    if labels == "none":
        return []
    loose = [path for path in paths if "/" not in path]
    if loose:
        if labels == "folders":
            raise ValueError(f"labels='folders' needs every image in a class sub-folder of {str(root)!r}, but "
                             f"{len(loose)} lie in the root itself (e.g. {loose[0]!r}); use labels='none'")
        return []
    return sorted({path.split("/", 1)[0] for path in paths})


def _read_caption(path: pathlib.Path, key: str) -> tuple[str | None, dict]:
    """(caption, other metadata) from a `.txt` or `.json` sidecar of the image `key`."""
    try:
        text = path.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise BadRecord(key, f"cannot read the caption file {path.name!r}: {error}") from error
    if path.suffix == ".txt":
        return text.strip(), {}
    try:
        content = json.loads(text)
    except json.JSONDecodeError as error:
        raise BadRecord(key, f"caption file {path.name!r} is not valid JSON: {error}") from error
    if not isinstance(content, dict):
        raise BadRecord(key, f"caption file {path.name!r} must hold a JSON object with a \"caption\" or \"text\" "
                             f"field, got a {type(content).__name__}")
    caption = next((content[field] for field in ("caption", "text") if isinstance(content.get(field), str)), None)
    meta = {name: value for name, value in content.items() if name not in ("caption", "text")}
    return (caption.strip() if caption is not None else None), meta
