"""Task inputs from clean examples: one-hot maps, caption tokens, COCO layouts, SR and inpainting inputs."""
import json

import numpy as np
import pytest

from ldm_jax import layout
from ldm_jax.data import conditioning, degradations
from ldm_jax.data.records import BadRecord
from ldm_jax.data.synthetic import SyntheticShapes
from ldm_jax.data.transforms import ImageTransform
from ldm_jax.models import tokenizers


@pytest.fixture
def example():
    return ImageTransform(32)(SyntheticShapes(3, image_size=32, seed=9)[1])


def test_semantic_onehot_sums_to_one_and_marks_the_label():
    segmentation = np.random.default_rng(0).integers(0, 4, (6, 7)).astype(np.uint8)
    onehot = conditioning.semantic_onehot(segmentation, 4)
    assert onehot.shape == (6, 7, 4) and onehot.dtype == np.float32
    np.testing.assert_array_equal(onehot.sum(axis=-1), 1.0)
    np.testing.assert_array_equal(onehot.argmax(axis=-1), segmentation)
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        conditioning.semantic_onehot(segmentation, 3)
    with pytest.raises(ValueError, match="integer"):
        conditioning.semantic_onehot(segmentation.astype(np.float32), 4)


def test_semantic_example_adds_the_onehot_map(example):
    result = conditioning.semantic_example(example, n_classes=4)
    assert result["segmentation_onehot"].shape == (32, 32, 4)
    np.testing.assert_array_equal(result["segmentation_onehot"].argmax(-1), example["segmentation"])
    assert "segmentation_onehot" not in example  # a new dict, the input is left alone
    out_of_range = {**example, "segmentation": np.full_like(example["segmentation"], 5)}
    with pytest.raises(BadRecord, match=r"\[0, 4\)") as raised:
        conditioning.semantic_example(out_of_range, n_classes=4)
    assert raised.value.key == example["key"]


def _bert(tmp_path):
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "a", "red", "green", "blue", "yellow", "circle", "square",
             "triangle", "on", "in", "background", "picture", "of", "white", "black", "gray", "magenta", "cyan"]
    (tmp_path / "vocab.txt").write_text("\n".join(words) + "\n")
    return tokenizers.bert_tokenizer(tmp_path, max_length=12), {w: i for i, w in enumerate(words)}


def test_caption_tokens_come_from_the_tokenizer(tmp_path, example):
    tokenizer, vocab = _bert(tmp_path)
    tokens = conditioning.tokenize_captions(["a red circle", "a blue square on a gray background"], tokenizer)
    assert tokens.shape == (2, 12) and tokens.dtype == np.int32
    assert list(tokens[0, :5]) == [vocab["[CLS]"], vocab["a"], vocab["red"], vocab["circle"], vocab["[SEP]"]]
    assert (tokens[0, 5:] == vocab["[PAD]"]).all()
    result = conditioning.caption_example(example, tokenizer)
    np.testing.assert_array_equal(result["caption_tokens"], tokenizer(example["caption"])[0])
    assert vocab["[UNK]"] not in result["caption_tokens"]  # every caption word is in the vocabulary
    with pytest.raises(BadRecord, match="caption"):
        conditioning.caption_example({"key": "k", "image": example["image"]}, tokenizer)


def test_a_labelled_folder_example_is_captioned_by_its_class_name_as_often_as_asked(tmp_path, example):
    tokenizer, _ = _bert(tmp_path)
    labelled = {**example, "class_name": "red_circle"}  # a folder's class: its name becomes "red circle"
    class_tokens, caption_tokens = tokenizer("red circle")[0], tokenizer(example["caption"])[0]
    always = conditioning.caption_example({k: v for k, v in labelled.items() if k != "caption"}, tokenizer,
                                          class_caption_probability=1.0)
    np.testing.assert_array_equal(always["caption_tokens"], class_tokens)
    rng = np.random.default_rng(0)
    drawn = [conditioning.caption_example(labelled, tokenizer, rng, 0.5)["caption_tokens"] for _ in range(400)]
    as_class = np.mean([np.array_equal(tokens, class_tokens) for tokens in drawn])
    assert 0.4 < as_class < 0.6
    assert all(np.array_equal(t, class_tokens) or np.array_equal(t, caption_tokens) for t in drawn)
    with pytest.raises(BadRecord, match="class_name"):  # unlabelled data has no class to caption with
        conditioning.caption_example(example, tokenizer, rng, 1.0)


def _write_coco(path):
    data = {
        "images": [{"id": 7, "width": 200, "height": 100, "file_name": "a.jpg"},
                   {"id": 9, "width": 50, "height": 50, "file_name": "b.jpg"}],
        "categories": [{"id": 18, "name": "dog"}, {"id": 1, "name": "person"}, {"id": 3, "name": "car"}],
        "annotations": [
            {"id": 1, "image_id": 7, "category_id": 18, "bbox": [20, 10, 100, 50], "iscrowd": 0},
            {"id": 2, "image_id": 7, "category_id": 1, "bbox": [0, 0, 200, 100], "iscrowd": 1},
            {"id": 3, "image_id": 9, "category_id": 3, "bbox": [5, 10, 25, 20]},
        ],
    }
    path.write_text(json.dumps(data))
    return path


def test_coco_layouts_are_relative_boxes_with_contiguous_categories(tmp_path):
    path = _write_coco(tmp_path / "instances.json")
    layouts = conditioning.coco_layouts(path)
    assert set(layouts) == {7, 9}
    dog, people = layouts[7]
    # Categories sorted by id: person (1) -> 0, car (3) -> 1, dog (18) -> 2.
    assert dog == layout.Box(2, (0.1, 0.1, 0.5, 0.5), False)
    assert people == layout.Box(0, (0.0, 0.0, 1.0, 1.0), True)
    assert layouts[9] == [layout.Box(1, (0.1, 0.2, 0.5, 0.4), False)]
    instances = conditioning.read_coco_instances(path)
    assert instances.category_names == ("person", "car", "dog") and instances.category_ids == (1, 3, 18)
    tokens = layout.layout_tokens(layouts[7], n_classes=3, max_objects=4)
    assert tokens.shape == (14,) and list(tokens[[0, 3]]) == [2, 0 + 3]  # the crowd box's group modifier


def test_coco_errors_name_the_annotation(tmp_path):
    path = _write_coco(tmp_path / "instances.json")
    data = json.loads(path.read_text())
    data["annotations"][2]["category_id"] = 99
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="annotation 3.*category_id 99"):
        conditioning.coco_layouts(path)
    with pytest.raises(ValueError, match="'images'"):
        conditioning.parse_coco_instances({"annotations": [], "categories": []})


def test_layout_example_encodes_the_boxes(example):
    result = conditioning.layout_example(example, n_classes=12, max_objects=3)
    np.testing.assert_array_equal(result["layout_tokens"],
                                  layout.layout_tokens(example["boxes"], n_classes=12, max_objects=3))
    with pytest.raises(BadRecord, match="layout"):
        conditioning.layout_example({**example, "boxes": []})


@pytest.mark.parametrize("mode", ["bicubic", "bsr", "bsr_light"])
def test_super_resolution_example_adds_a_low_resolution_image(example, mode):
    result = conditioning.super_resolution_example(example, np.random.default_rng(0), factor=4, mode=mode)
    low = result["low_res"]
    assert low.shape == (8, 8, 3) and low.dtype == np.float32
    assert -1.0 <= low.min() and low.max() <= 1.0
    again = conditioning.super_resolution_example(example, np.random.default_rng(0), factor=4, mode=mode)
    np.testing.assert_array_equal(low, again["low_res"])
    if mode == "bicubic":
        expected = degradations.bicubic_degradation((example["image"] + 1.0) / 2.0, 4) * 2.0 - 1.0
        np.testing.assert_allclose(low, expected, atol=1e-6)


def test_super_resolution_example_rejects_unknown_modes_and_odd_sizes(example):
    with pytest.raises(ValueError, match="degradation"):
        conditioning.super_resolution_example(example, np.random.default_rng(0), mode="sinc")
    with pytest.raises(ValueError, match="divide"):
        conditioning.super_resolution_example({**example, "image": example["image"][:30]}, np.random.default_rng(0))


@pytest.mark.parametrize("fill", [0.0, -1.0])
def test_inpainting_example_adds_mask_and_masked_image(example, fill):
    result = conditioning.inpainting_example(example, np.random.default_rng(1), coverage=(0.2, 0.4), fill=fill)
    mask, masked = result["mask"], result["masked_image"]
    assert mask.shape == (32, 32, 1) and masked.shape == (32, 32, 3)
    assert 0.2 <= mask.mean() <= 0.4
    inside = mask[:, :, 0] == 1.0
    assert (masked[inside] == fill).all()
    np.testing.assert_array_equal(masked[~inside], example["image"][~inside])
