"""decode_image / decode_segmentation: every format to the right colours, every broken file to a BadRecord."""
import pickle

import numpy as np
import pytest
from PIL import Image, ImageFile

from ldm_jax.data.decode import decode_image, decode_picture, decode_segmentation
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


def photo(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A smooth, nearly grey field with light grain and a saturated red block off the centre (upper
    left), so that a picture turned or shifted the wrong way shows."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(40, 200, (5, 6, 1)) + rng.integers(-20, 20, (5, 6, 3))
    array = np.asarray(Image.fromarray(coarse.astype(np.uint8)).resize((width, height), Image.Resampling.BICUBIC),
                       np.float32)
    array[height // 5:height // 3, width // 7:width // 2] = (250, 20, 20)
    return np.clip(array + rng.normal(0.0, 4.0, array.shape), 0, 255).astype(np.uint8)


def jpeg_with_orientation(array: np.ndarray, orientation: int = 1) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(array, "JPEG", quality=95, exif=exif.tobytes())


def red_centre(pixels: np.ndarray, box=None) -> tuple[float, float]:
    """Centre (x, y) of the red block's mass, relative to the picture's `box` in `pixels` (default:
    all of them); area averaging (a reduced-scale decode) keeps it in place."""
    redness = np.clip(pixels[..., 0].astype(np.float64) - pixels[..., 1] - 100.0, 0.0, None)
    rows, cols = np.indices(redness.shape) + 0.5
    x0, y0, x1, y1 = box or (0, 0, pixels.shape[1], pixels.shape[0])
    x, y = (cols * redness).sum() / redness.sum(), (rows * redness).sum() / redness.sum()
    return (x - x0) / (x1 - x0), (y - y0) / (y1 - y0)


@pytest.mark.parametrize("min_side, scale", [(0, 1), (32, 4), (60, 2), (66, 1), (131, 1)])
def test_big_jpegs_decode_at_the_smallest_dct_scale_that_keeps_min_side(min_side, scale):
    picture = decode_picture(jpeg_with_orientation(photo(203, 131)), "big.jpg", min_side=min_side)
    assert picture.image.size == (-(-203 // scale), -(-131 // scale))  # a partial block rounds up
    assert picture.image.mode == "RGB" and min(picture.image.size) >= min_side
    assert (picture.width, picture.height) == (203, 131)  # always the full size
    assert picture.box == pytest.approx((0, 0, 203 / scale, 131 / scale))


def test_other_formats_always_decode_at_full_size():
    picture = decode_picture(encode(photo(203, 131), "PNG"), "big.png", min_side=32)
    assert picture.image.size == (203, 131) and picture.box == (0, 0, 203, 131)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_dct_scaled_decoding_keeps_the_exif_orientation(orientation):
    data = jpeg_with_orientation(photo(203, 131), orientation)
    full = decode_image(data, "turned.jpg")
    picture = decode_picture(data, "turned.jpg", min_side=32)  # 1/4 scale: 51 x 33 pixels before turning
    assert (picture.height, picture.width) == full.shape[:2]
    assert full.shape[:2] == ((203, 131) if orientation >= 5 else (131, 203))
    reduced = np.asarray(picture.image)
    assert reduced.shape[:2] == ((51, 33) if orientation >= 5 else (33, 51))
    # The red block sits at the same place of the picture (to a fraction of a full-size pixel).
    assert red_centre(reduced, picture.box) == pytest.approx(red_centre(full), abs=1.5 / 203)
    # The partial block that a 1/4-scale decode rounds up (203 = 50.75 * 4) ends up wherever the turn puts it.
    flipped_x = orientation in (2, 3, 6, 7)
    flipped_y = orientation in (3, 4, 7, 8)
    assert picture.box[0] == (0.25 if flipped_x else 0.0) and picture.box[1] == (0.25 if flipped_y else 0.0)


def test_truncated_jpeg_is_caught_when_decoded_at_a_reduced_scale():
    data = jpeg_with_orientation(photo(203, 131))
    for cut in (len(data) - 2, len(data) // 3):
        with pytest.raises(BadRecord, match="truncated"):
            decode_picture(data[:cut], "cut.jpg", min_side=32)


def test_each_file_is_decoded_exactly_once(monkeypatch):
    jpeg, png = jpeg_with_orientation(photo(64, 48), 6), encode(photo(64, 48), "PNG")
    decoders = []
    real = Image._getdecoder  # what PIL's ImageFile.load calls once per decode

    def counting(*args, **kwargs):
        decoders.append(args[1])
        return real(*args, **kwargs)

    monkeypatch.setattr(Image, "_getdecoder", counting)
    decode_image(jpeg, "a.jpg")
    decode_picture(jpeg, "a.jpg", min_side=16)
    decode_image(png, "b.png")
    assert decoders == ["jpeg", "jpeg", "zip"]
