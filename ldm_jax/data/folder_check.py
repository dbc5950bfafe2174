"""Checking an image folder before training on it: every image decoded once, counted per class.

    check = check_folder("/data/pets")      # a FolderCheck
    print(check.describe())                  # "1797 images (0 unreadable) in 10 classes ..."

What a run on the folder would meet minutes later (unreadable files, classes with a handful of
images, captions on some images only) is known up front, so a caller can refuse or choose what to
train on before any work is done.
"""
import dataclasses
import os

from tqdm.auto import tqdm

from ldm_jax.data.decode import decode_picture
from ldm_jax.data.folder import ImageFolderSource
from ldm_jax.data.records import BadRecord


@dataclasses.dataclass(frozen=True)
class FolderCheck:
    """What `check_folder` found: counts of readable images, per class and with captions."""
    root: str
    num_readable: int
    unreadable: dict[str, str]       # image path (relative to root) -> why it cannot be read
    class_counts: dict[str, int]     # readable images per class folder ({} when there are no classes)
    num_captioned: int               # readable images with a caption sidecar
    num_greyscale: int               # readable images stored in one channel
    smallest_side: int               # the smallest width or height among readable images

    @property
    def has_classes(self) -> bool:
        return len(self.class_counts) > 1

    @property
    def all_captioned(self) -> bool:
        return self.num_readable > 0 and self.num_captioned == self.num_readable

    def describe(self) -> str:
        classes = (f"in {len(self.class_counts)} classes ({min(self.class_counts.values())}-"
                   f"{max(self.class_counts.values())} images each)" if self.has_classes else "without class folders")
        unreadable = ""
        if self.unreadable:
            shown = ", ".join(list(self.unreadable)[:3])
            unreadable = f", {len(self.unreadable)} unreadable ({shown}{', ...' if len(self.unreadable) > 3 else ''})"
        return (f"{self.root}: {self.num_readable} readable images{unreadable} {classes}; "
                f"{self.num_captioned} with captions, {self.num_greyscale} greyscale, smallest side "
                f"{self.smallest_side} px")


def check_folder(root: str | os.PathLike, *, progress: bool = False) -> FolderCheck:
    """Decodes every image under `root` (as `ImageFolderSource` lists them, labels "auto")."""
    source = ImageFolderSource(root)
    unreadable, class_counts = {}, {name: 0 for name in source.classes}
    num_captioned = num_greyscale = 0
    smallest = None
    for index in tqdm(range(len(source)), desc="checking images", disable=not progress, leave=False):
        try:
            record = source[index]
            picture = decode_picture(record["image"], record["key"])
        except BadRecord as error:
            unreadable[error.key] = error.reason
            continue
        if "class_name" in record:
            class_counts[record["class_name"]] += 1
        num_captioned += bool(record.get("caption"))
        num_greyscale += _is_greyscale(picture.image)
        side = min(picture.width, picture.height)
        smallest = side if smallest is None else min(smallest, side)
    return FolderCheck(root=str(root), num_readable=len(source) - len(unreadable), unreadable=unreadable,
                       class_counts=class_counts, num_captioned=num_captioned, num_greyscale=num_greyscale,
                       smallest_side=smallest or 0)


def _is_greyscale(image) -> bool:
    """Whether the (RGB-converted) picture has equal channels: greyscale files read as RGB."""
    red, green, blue = image.split()
    return red.tobytes() == green.tobytes() == blue.tobytes()
