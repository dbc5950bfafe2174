"""decode_image / decode_segmentation: every format to the right colours, every broken file to a BadRecord."""
import pickle

import numpy as np
import pytest
from PIL import ImageFile

from ldm_jax.data.decode import decode_image, decode_segmentation
from ldm_jax.data.records import BadRecord
from tests.data.make_files import (BLUE, GREEN, RED, broken_files, encode, exif_rotated_jpeg, known_colour_cases,
                                   palette_png, png16, png_header_only, solid)

CASES = known_colour_cases()


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_format_decodes_to_its_known_colour(name):
    data, expected = CASES[name]
    image = decode_image(data, name)
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[-1] == 3
    assert image.flags["C_CONTIGUOUS"]
    tolerance = 3 if "jpeg" in name else 0  # lossy: a flat colour comes back within a step or two
    difference = np.abs(image.astype(int) - np.asarray(expected)).max()
    assert difference <= tolerance, f"{name}: got {image[0, 0]}, expected {expected}"


def test_sixteen_bit_is_scaled_not_clipped():
    values = np.array([[0, 257, 32896, 65535]], np.uint16)  # -> 0, 1, 128, 255
    image = decode_image(png16(values), "gray16")
    np.testing.assert_array_equal(image[0, :, 0], [0, 1, 128, 255])


def test_sizes_follow_the_file():
    image = decode_image(encode(solid(RED, size=(7, 3)), "PNG"), "wide")
    assert image.shape == (3, 7, 3)


def test_exif_orientation_is_applied():
    image = decode_image(exif_rotated_jpeg(), "rotated")
    assert image.shape == (32, 16, 3)  # stored 32 wide x 16 high, shown rotated a quarter turn
    assert np.abs(image[2, 8].astype(int) - RED).max() <= 8  # the left (red) half ends up on top
    assert np.abs(image[-3, 8].astype(int) - BLUE).max() <= 8


def test_gif_gives_its_first_frame():
    frames = [solid(GREEN).convert("P"), solid(BLUE).convert("P")]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=10)
    np.testing.assert_array_equal(decode_image(data, "anim.gif")[0, 0], GREEN)


@pytest.mark.parametrize("name, reason", [
    ("empty.jpg", "empty file"),
    ("truncated.jpg", "truncated or corrupt JPEG"),
    ("text_named.jpg", "not an image file"),
    ("header_only.png", "truncated or corrupt PNG"),
])
def test_broken_files_raise_bad_record_with_a_reason(name, reason):
    with pytest.raises(BadRecord) as caught:
        decode_image(broken_files()[name], name)
    assert caught.value.key == name
    assert reason in caught.value.reason
    assert pickle.loads(pickle.dumps(caught.value)).reason == caught.value.reason


def test_truncated_jpeg_is_caught_without_touching_pil_globals():
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    data = encode((np.random.default_rng(1).random((40, 40, 3)) * 255).astype(np.uint8), "JPEG")
    for cut in (len(data) - 2, len(data) - 50, len(data) // 3):
        with pytest.raises(BadRecord, match="truncated"):
            decode_image(data[:cut], "cut.jpg")
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_decompression_bombs_are_refused_before_decoding():
    with pytest.raises(BadRecord, match="decompression bomb"):
        decode_image(png_header_only(100_000, 100_000), "bomb.png")  # beyond PIL's own hard limit
    with pytest.raises(BadRecord, match="larger than the limit"):
        decode_image(png_header_only(10_000, 10_000), "big.png")  # beyond ours
    with pytest.raises(BadRecord, match="larger than the limit of 100 pixels"):
        decode_image(encode(solid(RED, size=(20, 20)), "PNG"), "small.png", max_pixels=100)


def test_non_bytes_input_is_a_bad_record():
    with pytest.raises(BadRecord, match="expected the bytes"):
        decode_image("path/to/file.jpg", "a string")


def test_arrays_are_normalised_to_rgb():
    grey = np.full((2, 3), 9, np.uint8)
    np.testing.assert_array_equal(decode_image(grey, "grey"), np.full((2, 3, 3), 9))
    np.testing.assert_array_equal(decode_image(grey[..., None], "grey1"), np.full((2, 3, 3), 9))
    rgba = np.zeros((2, 2, 4), np.uint8)  # fully transparent black -> white
    np.testing.assert_array_equal(decode_image(rgba, "rgba"), np.full((2, 2, 3), 255))
    wide = np.full((1, 1, 3), 65535, np.uint16)
    np.testing.assert_array_equal(decode_image(wide, "u16"), np.full((1, 1, 3), 255))
    rgb = np.arange(12, dtype=np.uint8).reshape(2, 2, 3)
    np.testing.assert_array_equal(decode_image(rgb, "rgb"), rgb)


@pytest.mark.parametrize("array, reason", [
    (np.zeros((2, 2, 3), np.float32), "dtype float32"),
    (np.zeros((2, 2, 2), np.uint8), "shape (2, 2, 2)"),
    (np.zeros((4,), np.uint8), "shape (4,)"),
])
def test_unusable_arrays_are_bad_records(array, reason):
    with pytest.raises(BadRecord, match=reason.replace("(", r"\(").replace(")", r"\)")):
        decode_image(array, "array")


def test_segmentation_from_a_palette_png_gives_indices_not_colours():
    indices = (np.arange(12).reshape(3, 4) % 3).astype(np.uint8)
    seg = decode_segmentation(palette_png(indices, [RED, GREEN, BLUE]), "seg.png")
    assert seg.shape == (3, 4) and seg.dtype == np.uint8
    np.testing.assert_array_equal(seg, indices)


def test_segmentation_from_grey_png_16_bit_png_and_arrays():
    grey = np.array([[0, 1], [2, 150]], np.uint8)
    np.testing.assert_array_equal(decode_segmentation(encode(grey, "PNG"), "grey"), grey)
    many = np.array([[0, 300], [1000, 2]], np.uint16)
    np.testing.assert_array_equal(decode_segmentation(png16(many), "many"), many)
    np.testing.assert_array_equal(decode_segmentation(grey[..., None], "array"), grey)


@pytest.mark.parametrize("data, reason", [
    (encode(solid(RED), "PNG"), "single-channel"),
    (np.zeros((2, 2), np.float32), "integer array"),
    (np.zeros((2, 2, 3), np.uint8), "integer array"),
    (b"", "empty file"),
])
def test_unusable_segmentation_maps_are_bad_records(data, reason):
    with pytest.raises(BadRecord, match=reason):
        decode_segmentation(data, "seg")
