"""ImageTransform: decode, resize, crop, flip, [-1, 1]; segmentation and boxes follow the image."""
import io

import numpy as np
import pytest
from PIL import Image

from ldm_jax.data.records import BadRecord
from ldm_jax.data.synthetic import PALETTE, SyntheticShapes
from ldm_jax.data.transforms import ImageTransform, crop_origin, from_model_range, resized_shape, to_model_range


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _gradient(height: int, width: int) -> np.ndarray:
    rows, cols = np.mgrid[0:height, 0:width]
    return np.stack([rows * 255 // max(1, height - 1), cols * 255 // max(1, width - 1),
                     np.full_like(rows, 90)], axis=-1).astype(np.uint8)


@pytest.mark.parametrize("options", [{}, {"random_crop": True, "flip": True}, {"resample": "area"}])
def test_output_fields_dtypes_shapes_and_range(options):
    record = SyntheticShapes(4, image_size=48)[1]
    example = ImageTransform(24, **options)(record, np.random.default_rng(0))
    assert set(example) == {"key", "image", "label", "caption", "segmentation", "boxes"}  # "meta" dropped
    assert example["image"].shape == (24, 24, 3) and example["image"].dtype == np.float32
    assert -1.0 <= example["image"].min() and example["image"].max() <= 1.0
    assert example["label"].dtype == np.int32 and int(example["label"]) == record["label"]
    assert example["caption"] == record["caption"] and example["key"] == record["key"]
    assert example["segmentation"].shape == (24, 24) and example["segmentation"].dtype == np.uint8


def test_no_resize_no_crop_is_exact_scaling():
    image = _gradient(16, 16)
    example = ImageTransform(16)({"key": "k", "image": image}, None)
    np.testing.assert_allclose(example["image"], image.astype(np.float32) / 127.5 - 1.0)
    np.testing.assert_array_equal(from_model_range(to_model_range(image)), image)


def test_smaller_side_is_resized_and_the_centre_is_cropped():
    image = _gradient(40, 80)  # resized to 20 x 40, centre crop columns 10..30
    assert resized_shape(40, 80, 20) == (20, 40)
    example = ImageTransform(20)({"key": "k", "image": image}, None)
    expected = np.asarray(Image.fromarray(image).resize((40, 20), Image.Resampling.BICUBIC))[:, 10:30]
    np.testing.assert_allclose(example["image"], expected.astype(np.float32) / 127.5 - 1.0, atol=1e-6)


def test_flip_mirrors_image_segmentation_and_boxes_together():
    record = SyntheticShapes(6, image_size=32, seed=4)[2]
    plain = ImageTransform(32)(record)
    flips = [ImageTransform(32, flip=True)(record, np.random.default_rng(seed)) for seed in range(16)]
    mirrored = [e for e in flips if not np.array_equal(e["image"], plain["image"])]
    assert 0 < len(mirrored) < 16  # both outcomes happen
    for example in mirrored:
        np.testing.assert_array_equal(example["image"], plain["image"][:, ::-1])
        np.testing.assert_array_equal(example["segmentation"], plain["segmentation"][:, ::-1])
        (x0, y0, w, h), = [box["bbox"] for box in example["boxes"]]
        (px0, py0, pw, ph), = [box["bbox"] for box in plain["boxes"]]
        assert (x0, y0, w, h) == pytest.approx((1.0 - px0 - pw, py0, pw, ph))


def _wide(record: dict) -> dict:
    """The record on a 64 x 96 canvas (background added on the right), so crops can move."""
    image, segmentation = record["image"], record["segmentation"]
    background = np.broadcast_to(np.asarray(PALETTE[record["meta"]["background"]], np.uint8), (64, 32, 3))
    x0, y0, w, h = record["meta"]["bbox"]
    return {**record, "image": np.concatenate([image, background], axis=1),
            "segmentation": np.concatenate([segmentation, np.zeros((64, 32), np.uint8)], axis=1),
            "boxes": [{"category": record["label"], "bbox": (x0 * 64 / 96, y0, w * 64 / 96, h)}]}


def test_random_crops_keep_image_segmentation_and_boxes_aligned():
    source = SyntheticShapes(8, image_size=64, seed=5)
    transform = ImageTransform(40, random_crop=True, flip=True, resample="area")  # 64 x 96 -> 40 x 60 -> crop
    origins = set()
    for index in range(8):
        record = _wide(source[index])
        example = transform(record, np.random.default_rng(index))
        pixels = from_model_range(example["image"])
        inside = example["segmentation"] > 0
        colour = np.asarray(PALETTE[record["meta"]["colour"]], np.int32)
        # Nearest-resized labels and area-resized pixels agree away from the edges of the shape.
        core = inside & np.roll(inside, 1, 0) & np.roll(inside, -1, 0) & np.roll(inside, 1, 1) & np.roll(inside, -1, 1)
        assert np.abs(pixels[core].astype(np.int32) - colour).max(initial=0) <= 2
        assert bool(example["boxes"]) == inside.any()  # the box is dropped when the shape is cropped away
        if example["boxes"]:
            x0, y0, w, h = example["boxes"][0]["bbox"]
            origins.add(round(x0, 3))
            rows, cols = np.nonzero(inside)
            assert rows.min() >= np.floor(y0 * 40) - 1 and rows.max() <= np.ceil((y0 + h) * 40)
            assert cols.min() >= np.floor(x0 * 40) - 1 and cols.max() <= np.ceil((x0 + w) * 40)
    assert len(origins) > 3  # the crops moved


def test_random_transform_is_deterministic_for_a_generator_seed():
    record = {"key": "k", "image": _gradient(50, 70)}
    transform = ImageTransform(32, random_crop=True, flip=True)
    a = transform(record, np.random.default_rng(3))
    b = transform(record, np.random.default_rng(3))
    np.testing.assert_array_equal(a["image"], b["image"])
    with pytest.raises(ValueError, match="rng"):
        transform(record, None)


def test_boxes_outside_the_crop_are_dropped():
    record = {"key": "k", "image": _gradient(20, 40),
              "boxes": [{"category": 1, "bbox": (0.0, 0.0, 0.2, 0.5)},      # left edge, cropped away
                        {"category": 2, "bbox": (0.4, 0.25, 0.2, 0.5), "is_group_of": True}]}
    example = ImageTransform(20)(record, None)
    assert len(example["boxes"]) == 1
    box = example["boxes"][0]
    assert box["category"] == 2 and box["is_group_of"] is True
    assert box["bbox"] == pytest.approx((0.3, 0.25, 0.4, 0.5))


def test_encoded_bytes_are_decoded_and_segmentation_png_too():
    image = _gradient(24, 24)
    labels = (np.arange(24 * 24).reshape(24, 24) % 5).astype(np.uint8)
    example = ImageTransform(24)({"key": "k", "image": _png(image), "segmentation": _png(labels)}, None)
    np.testing.assert_array_equal(from_model_range(example["image"]), image)
    np.testing.assert_array_equal(example["segmentation"], labels)


def test_grey_arrays_become_rgb_and_wide_label_maps_stay_int32():
    grey = _gradient(16, 16)[:, :, 0]
    labels = np.full((16, 16), 300, np.int64)
    example = ImageTransform(8)({"key": "k", "image": grey, "segmentation": labels}, None)
    assert example["image"].shape == (8, 8, 3)
    assert example["segmentation"].dtype == np.int32 and (example["segmentation"] == 300).all()


@pytest.mark.parametrize("record, reason", [
    ({"key": "small", "image": np.zeros((10, 30, 3), np.uint8)}, "min_size"),
    ({"key": "float", "image": np.zeros((32, 32, 3), np.float32)}, "uint8"),
    ({"key": "shape", "image": np.zeros((32, 32, 4), np.uint8)}, "(H, W, 3)"),
    ({"key": "none"}, "encoded bytes"),
    ({"key": "seg", "image": np.zeros((32, 32, 3), np.uint8), "segmentation": np.zeros((16, 16), np.uint8)},
     "segmentation"),
    ({"key": "label", "image": np.zeros((32, 32, 3), np.uint8), "label": "cat"}, "label"),
    ({"key": "caption", "image": np.zeros((32, 32, 3), np.uint8), "caption": 5}, "caption"),
])
def test_bad_records_raise_bad_record_naming_the_key(record, reason):
    with pytest.raises(BadRecord, match=reason) as raised:
        ImageTransform(16, min_size=16)(record, None)
    assert raised.value.key == record["key"]


def test_invalid_options_fail_at_construction():
    with pytest.raises(ValueError, match="resample"):
        ImageTransform(16, resample="cubic-ish")
    with pytest.raises(ValueError, match="size"):
        ImageTransform(0)


def _photo_jpeg(width: int, height: int, orientation: int = 1, seed: int = 0) -> bytes:
    """A photo-like JPEG (smooth colours, grain, a sharp red block off the centre) with an EXIF orientation."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (5, 6, 3), dtype=np.uint8)
    array = np.asarray(Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC), np.float32)
    array[height // 5:height // 3, width // 7:width // 2] = (250, 20, 20)
    array = np.clip(array + rng.normal(0.0, 4.0, array.shape), 0, 255).astype(np.uint8)
    exif = Image.Exif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", quality=95, exif=exif.tobytes())
    return buffer.getvalue()


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of two images in [-1, 1]."""
    return float(10 * np.log10(4.0 / max(np.mean((a.astype(np.float64) - b) ** 2), 1e-20)))


@pytest.mark.parametrize("orientation", [1, 3, 6, 7])
@pytest.mark.parametrize("options", [{}, {"random_crop": True, "flip": True}])
def test_fast_downscale_stays_close_to_the_exact_path(orientation, options):
    # 203 x 131 to 32: decoded at 1/4 scale (51 x 33), a partial block rounded up at two edges.
    record = {"key": "k", "image": _photo_jpeg(203, 131, orientation)}
    for seed in range(3):
        fast = ImageTransform(32, **options)(record, np.random.default_rng(seed))["image"]
        exact = ImageTransform(32, fast_downscale=False, **options)(record, np.random.default_rng(seed))["image"]
        assert fast.shape == exact.shape == (32, 32, 3)
        assert _psnr(fast, exact) > 35.0


def test_fast_downscale_of_a_large_png_stays_close_to_the_exact_path():
    # PNGs decode at full size; a 10x downscale first shrinks by an integer factor (reducing_gap).
    array = np.asarray(Image.open(io.BytesIO(_photo_jpeg(640, 480))))
    record = {"key": "k", "image": _png(array)}
    fast, exact = ImageTransform(48)(record), ImageTransform(48, fast_downscale=False)(record)
    assert _psnr(fast["image"], exact["image"]) > 35.0


def test_exact_path_equals_resize_then_crop_of_the_full_image():
    data = _photo_jpeg(203, 131)
    full = Image.open(io.BytesIO(data)).convert("RGB")
    resized = np.asarray(full.resize((50, 32), Image.Resampling.BICUBIC))  # smaller side 131 -> 32
    transform = ImageTransform(32, random_crop=True, fast_downscale=False)
    lefts = set()
    for seed in range(6):
        top, left = crop_origin(32, 50, 32, np.random.default_rng(seed))  # the draw the transform makes
        assert top == 0
        lefts.add(left)
        pixels = from_model_range(transform({"key": "k", "image": data}, np.random.default_rng(seed))["image"])
        # Resampling only the cropped region: the same filter taps, up to fixed-point rounding.
        assert np.abs(pixels.astype(int) - resized[:, left:left + 32]).max() <= 1
    assert len(lefts) > 2


def test_worker_example_and_finish_batch_give_the_call_bit_for_bit():
    transform = ImageTransform(24, random_crop=True, flip=True)
    records = [{"key": f"k{i}", "image": _photo_jpeg(90 + 7 * i, 60, i % 8 + 1, seed=i), "label": i} for i in range(4)]
    compact = [transform.worker_example(record, np.random.default_rng(i)) for i, record in enumerate(records)]
    assert all(example["image"].dtype == np.uint8 for example in compact)
    finished = transform.finish_batch({"image": np.stack([example["image"] for example in compact])})
    direct = np.stack([transform(record, np.random.default_rng(i))["image"] for i, record in enumerate(records)])
    assert finished["image"].dtype == np.float32
    np.testing.assert_array_equal(finished["image"], direct)


def test_segmentation_stays_aligned_with_a_jpeg_decoded_at_a_reduced_scale():
    # The image is a 160 x 120 JPEG (decoded at 1/4 scale for size 24), its labels a full-size PNG.
    data = _photo_jpeg(160, 120)
    labels = np.zeros((120, 160), np.uint8)
    labels[120 // 5:120 // 3, 160 // 7:160 // 2] = 1  # where _photo_jpeg puts the red block
    record = {"key": "k", "image": data, "segmentation": _png(labels)}
    transform = ImageTransform(24, random_crop=True, flip=True)
    for seed in range(4):
        example = transform(record, np.random.default_rng(seed))
        pixels, inside = from_model_range(example["image"]).astype(int), example["segmentation"] == 1
        core = inside & np.roll(inside, 1, 0) & np.roll(inside, -1, 0) & np.roll(inside, 1, 1) & np.roll(inside, -1, 1)
        assert core.any()
        assert (pixels[core, 0] > 200).all() and (pixels[core, 1] < 70).all()
