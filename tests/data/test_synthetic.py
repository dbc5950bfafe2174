"""The built-in coloured-shapes dataset and the checker that reads its classes back."""
import pickle

import numpy as np
import pytest
from scipy import ndimage

from ldm_jax.data import shapes_checker, synthetic
from ldm_jax.data.synthetic import PALETTE, SyntheticShapes


def test_records_have_the_documented_fields_and_types():
    source = SyntheticShapes(8, image_size=32, seed=1)
    record = source[3]
    assert set(record) == {"key", "image", "label", "caption", "segmentation", "boxes", "meta"}
    assert record["key"] == "shapes-1/00000003"
    assert record["image"].shape == (32, 32, 3) and record["image"].dtype == np.uint8
    assert record["segmentation"].shape == (32, 32) and record["segmentation"].dtype == np.uint8
    assert isinstance(record["label"], int) and 0 <= record["label"] < source.num_classes
    assert set(record["meta"]) == {"shape", "colour", "background", "bbox"}
    assert record["boxes"] == [{"category": record["label"], "bbox": record["meta"]["bbox"]}]
    assert len(source) == 8


def test_records_are_deterministic_for_seed_and_index_and_differ_across_indices():
    first, again = SyntheticShapes(20, image_size=32, seed=7), SyntheticShapes(20, image_size=32, seed=7)
    for index in (0, 5, 19):
        a, b = first[index], again[index]
        np.testing.assert_array_equal(a["image"], b["image"])
        assert (a["label"], a["caption"], a["meta"]) == (b["label"], b["caption"], b["meta"])
    images = [first[i]["image"] for i in range(20)]
    assert all(not np.array_equal(images[i], images[j]) for i in range(20) for j in range(i + 1, 20))
    other_seed = SyntheticShapes(20, image_size=32, seed=8)
    assert not np.array_equal(other_seed[0]["image"], first[0]["image"])


def test_every_block_of_num_classes_records_holds_each_class_once():
    source = SyntheticShapes(36, image_size=16)
    assert source.num_classes == 12
    for block in range(3):
        labels = sorted(source[i]["label"] for i in range(12 * block, 12 * block + 12))
        assert labels == list(range(12))


def test_class_names_and_captions_name_the_class():
    source = SyntheticShapes(24, image_size=16)
    assert source.classes[0] == "red circle" and source.classes[-1] == "yellow triangle"
    for index in range(24):
        record = source[index]
        shape, colour = record["meta"]["shape"], record["meta"]["colour"]
        assert source.classes[record["label"]] == f"{colour} {shape}"
        assert synthetic.class_label(shape, colour) == record["label"]
        assert shape in record["caption"] and colour in record["caption"]
        assert record["meta"]["background"] != colour


def test_image_segmentation_and_box_agree():
    source = SyntheticShapes(12, image_size=48, seed=2)
    for index in range(12):
        record = source[index]
        inside = record["segmentation"] > 0
        shape_index = source.shapes.index(record["meta"]["shape"])
        assert set(np.unique(record["segmentation"])) == {0, 1 + shape_index}
        assert (record["image"][inside] == PALETTE[record["meta"]["colour"]]).all()
        assert (record["image"][~inside] == PALETTE[record["meta"]["background"]]).all()
        x0, y0, w, h = record["meta"]["bbox"]
        assert 0 < x0 and 0 < y0 and x0 + w < 1 and y0 + h < 1
        rows, cols = np.nonzero(inside)
        assert rows.min() >= np.floor(y0 * 48) and rows.max() < np.ceil((y0 + h) * 48)
        assert cols.min() >= np.floor(x0 * 48) and cols.max() < np.ceil((x0 + w) * 48)


def test_geometry_does_not_depend_on_resolution_and_the_source_pickles():
    small, large = SyntheticShapes(4, image_size=32, seed=3), SyntheticShapes(4, image_size=64, seed=3)
    assert small[2]["meta"] == large[2]["meta"] and small[2]["caption"] == large[2]["caption"]
    restored = pickle.loads(pickle.dumps(small))
    np.testing.assert_array_equal(restored[1]["image"], small[1]["image"])


def test_noise_option_perturbs_pixels_mildly():
    clean, noisy = SyntheticShapes(2, image_size=32), SyntheticShapes(2, image_size=32, noise_std=6.0)
    difference = noisy[0]["image"].astype(float) - clean[0]["image"].astype(float)
    assert 2.0 < difference.std() < 8.0
    np.testing.assert_array_equal(noisy[0]["segmentation"], clean[0]["segmentation"])


def test_bad_arguments_and_indices_fail_clearly():
    with pytest.raises(IndexError):
        SyntheticShapes(3, image_size=16)[3]
    with pytest.raises(ValueError, match="shapes"):
        SyntheticShapes(3, shapes=("hexagon",))
    with pytest.raises(ValueError, match="colour"):
        SyntheticShapes(3, colours=("white",))
    with pytest.raises(ValueError, match="outside"):
        synthetic.class_parts(12)


# -- the checker -------------------------------------------------------------------------------------

def _records(size: int, count: int, seed: int):
    source = SyntheticShapes(count, image_size=size, seed=seed)
    return [source[i] for i in range(count)]


@pytest.mark.parametrize("size", [32, 64])
def test_checker_is_accurate_on_clean_images(size):
    records = _records(size, 120, seed=11)
    images = np.stack([r["image"] for r in records])
    labels = [r["label"] for r in records]
    assert shapes_checker.accuracy(images, labels) >= 0.98
    # Model outputs in [-1, 1] read the same.
    assert shapes_checker.accuracy(images.astype(np.float32) / 127.5 - 1.0, labels) >= 0.98


@pytest.mark.parametrize("size", [32, 64])
def test_checker_is_robust_to_mild_noise_and_blur(size):
    records = _records(size, 120, seed=12)
    rng = np.random.default_rng(0)
    sigma = size / 32.0
    degraded = []
    for record in records:
        blurred = ndimage.gaussian_filter(record["image"].astype(np.float32), (sigma, sigma, 0))
        noisy = blurred + rng.normal(0.0, 10.0, blurred.shape)
        degraded.append(np.clip(np.round(noisy), 0, 255).astype(np.uint8))
    assert shapes_checker.accuracy(degraded, [r["label"] for r in records]) >= 0.95


def test_checker_names_the_class_and_rejects_the_wrong_one():
    record = _records(32, 1, seed=13)[0]
    shape, colour = record["meta"]["shape"], record["meta"]["colour"]
    assert shapes_checker.classify(record["image"]) == (shape, colour)
    assert shapes_checker.matches(record["image"], record["label"])
    assert shapes_checker.matches(record["image"], f"{colour} {shape}")
    assert not shapes_checker.matches(record["image"], (record["label"] + 1) % 12)


def test_checker_rejects_garbage_rather_than_guessing():
    rng = np.random.default_rng(1)
    for _ in range(5):
        assert shapes_checker.classify(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)) is None
        assert shapes_checker.classify(rng.uniform(-1, 1, (64, 64, 3)).astype(np.float32)) is None
    for value in (0, 128, 255):
        assert shapes_checker.classify(np.full((32, 32, 3), value, np.uint8)) is None
    two_shapes = np.full((64, 64, 3), PALETTE["white"], np.uint8)
    two_shapes[synthetic.shape_mask("circle", (0.05, 0.05, 0.4, 0.4), 64, 64)] = PALETTE["red"]
    two_shapes[synthetic.shape_mask("square", (0.55, 0.55, 0.4, 0.4), 64, 64)] = PALETTE["blue"]
    assert shapes_checker.classify(two_shapes) is None
    bar = np.full((64, 64, 3), PALETTE["black"], np.uint8)
    bar[28:36, 8:56] = PALETTE["green"]
    assert shapes_checker.classify(bar) is None
    white_disc = np.full((64, 64, 3), PALETTE["gray"], np.uint8)
    white_disc[synthetic.shape_mask("circle", (0.3, 0.3, 0.4, 0.4), 64, 64)] = PALETTE["white"]
    assert shapes_checker.classify(white_disc) is None


def test_checker_respects_the_colour_subset():
    source = SyntheticShapes(12, image_size=32, colours=("magenta", "cyan"))
    record = source[0]
    assert shapes_checker.matches(record["image"], record["label"], colours=source.colours)
    assert shapes_checker.classify(record["image"]) is None  # magenta / cyan are not default classes
