"""Tiny test images in every format the sources meet, good and broken, and writers for the three
dataset layouts (an image folder, webdataset tar shards).

Every image is a flat colour (or a known pattern) so a test can compare a decoded pixel with the
value it must have.
"""
import io
import json
import pathlib
import struct
import tarfile
import zlib

import numpy as np
from PIL import Image

RED = (255, 0, 0)
GREEN = (0, 255, 0)
BLUE = (0, 0, 255)


def encode(image: Image.Image | np.ndarray, fmt: str, **save_args) -> bytes:
    """`image` encoded as `fmt` ("JPEG", "PNG", "WEBP", "GIF", "BMP") by PIL."""
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    buffer = io.BytesIO()
    image.save(buffer, fmt, **save_args)
    return buffer.getvalue()


def solid(color, size=(8, 6), mode: str = "RGB") -> Image.Image:
    """A (width, height) = `size` image of one colour."""
    return Image.new(mode, size, color)


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims `width` x `height` RGB pixels but holds almost no data: a decompression
    bomb as far as the header is concerned."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header)
            + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + _png_chunk(b"IEND", b""))


def png16(array: np.ndarray) -> bytes:
    """A 16-bit PNG of a uint16 array, (H, W) grayscale or (H, W, 3) RGB, written by hand (PIL
    cannot write 16-bit RGB)."""
    array = np.asarray(array, np.uint16)
    color_type = 0 if array.ndim == 2 else 2
    height, width = array.shape[:2]
    rows = array.reshape(height, -1).astype(">u2").tobytes()
    row_bytes = len(rows) // height
    raw = b"".join(b"\x00" + rows[i * row_bytes:(i + 1) * row_bytes] for i in range(height))
    header = struct.pack(">IIBBBBB", width, height, 16, color_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", zlib.compress(raw))
            + _png_chunk(b"IEND", b""))


def palette_png(indices: np.ndarray, palette: list[tuple[int, int, int]], transparent: int | None = None) -> bytes:
    """A palette ("P") PNG of class indices; `transparent` makes that index fully transparent."""
    image = Image.fromarray(np.asarray(indices, np.uint8), mode="P")
    image.putpalette([channel for color in palette for channel in color])
    extra = {} if transparent is None else {"transparency": transparent}
    return encode(image, "PNG", **extra)


def exif_rotated_jpeg() -> bytes:
    """A 4 x 2 (w x h) JPEG, left half red, right half blue, with EXIF orientation 6 (display
    rotated 90 degrees clockwise): it must decode as 2 x 4 with red on top."""
    array = np.zeros((16, 32, 3), np.uint8)
    array[:, :16] = RED
    array[:, 16:] = BLUE
    exif = Image.Exif()
    exif[0x0112] = 6
    return encode(array, "JPEG", quality=95, exif=exif.tobytes())


def known_colour_cases() -> dict[str, tuple[bytes, tuple[int, int, int]]]:
    """name -> (encoded file, the RGB value every pixel must decode to)."""
    gray16 = png16(np.full((4, 5), 32896, np.uint16))  # 32896 / 65535 * 255 = 128.0; clipping would give 255
    rgb16 = png16(np.broadcast_to(np.array([65535, 32896, 0], np.uint16), (4, 5, 3)))
    return {
        "jpeg": (encode(solid(RED), "JPEG", quality=95), RED),
        "png": (encode(solid(GREEN), "PNG"), GREEN),
        "png16_gray": (gray16, (128, 128, 128)),
        "png16_rgb": (rgb16, (255, 128, 0)),
        "palette": (palette_png(np.ones((6, 8)), [RED, BLUE]), BLUE),
        "palette_transparent": (palette_png(np.zeros((6, 8)), [RED, BLUE], transparent=0), (255, 255, 255)),
        "grayscale": (encode(solid(77, mode="L"), "PNG"), (77, 77, 77)),
        "gray_alpha": (encode(solid((0, 0), mode="LA"), "PNG"), (255, 255, 255)),
        "rgba_half": (encode(solid((0, 0, 255, 128), mode="RGBA"), "PNG"), (127, 127, 255)),
        "cmyk_jpeg": (encode(solid((0, 255, 255, 0), mode="CMYK"), "JPEG", quality=100), RED),
        "webp": (encode(solid(BLUE), "WEBP", lossless=True), BLUE),
        "gif": (encode(solid(GREEN).convert("P"), "GIF"), GREEN),
        "bmp": (encode(solid(RED), "BMP"), RED),
    }


def broken_files() -> dict[str, bytes]:
    """name -> bytes that must not decode: each a different way a crawled file goes wrong."""
    rng = np.random.default_rng(0)
    jpeg = encode((rng.random((32, 32, 3)) * 255).astype(np.uint8), "JPEG", quality=90)
    return {
        "empty.jpg": b"",
        "truncated.jpg": jpeg[: len(jpeg) // 2],
        "text_named.jpg": b"this is a caption, not an image\n",
        "header_only.png": encode(solid(RED), "PNG")[:40],
    }


def write_image_folder(root: pathlib.Path, files: dict[str, bytes]) -> pathlib.Path:
    """Writes {relative path: bytes} under `root` (creating sub-folders) and returns `root`."""
    for relative, data in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def write_tar(path: pathlib.Path, members: list[tuple[str, bytes]]) -> pathlib.Path:
    """A tar file holding `members` (name, bytes) in the given order."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 0
            tar.addfile(info, io.BytesIO(data))
    return path


def laion_members(keys: list[str], *, ext: str = "jpg", sizes: dict[str, tuple[int, int]] | None = None
                  ) -> list[tuple[str, bytes]]:
    """webdataset members for `keys`: `<key>.<ext>` (a solid image whose red channel is the key's
    index * 10), `<key>.txt` (caption "caption <key>") and `<key>.json` (LAION-style metadata)."""
    members = []
    for index, key in enumerate(keys):
        width, height = (sizes or {}).get(key, (8, 6))
        fmt = {"jpg": "JPEG", "jpeg": "JPEG", "png": "PNG", "webp": "WEBP"}[ext]
        image = encode(solid((index * 10, 0, 0), (width, height)), fmt, **({"quality": 95} if fmt == "JPEG" else {}))
        meta = {"caption": f"caption {key}", "width": width, "height": height, "similarity": 0.3, "punsafe": 0.01}
        members += [(f"{key}.{ext}", image), (f"{key}.txt", f"caption {key}".encode()),
                    (f"{key}.json", json.dumps(meta).encode())]
    return members
