"""`config.data`: validation errors that name the field, and every dataset / task built from a config."""
import numpy as np
import pytest

from ldm_jax.data.config import (DataConfigError, default_data_config, pipeline_from_config, source_from_config,
                                 transform_from_config, validate_data_config)
from tests.data.make_files import encode, laion_members, solid, write_image_folder, write_tar


def config(**fields):
    data = default_data_config()
    data.update(dict(image_size=16, num_records=12, batch_size=4, read_threads=0))
    data.update(fields)
    return data


def first_batch(data):
    with pipeline_from_config(data, process_index=0, process_count=1) as pipeline:
        return next(pipeline)


def test_the_default_config_is_valid_and_reads_the_builtin_dataset():
    validate_data_config(default_data_config())
    batch = first_batch(config())
    assert batch["image"].shape == (4, 16, 16, 3) and batch["image"].dtype == np.float32
    assert -1.0 <= batch["image"].min() and batch["image"].max() <= 1.0
    assert batch["label"].shape == (4,) and batch["caption"].shape == (4,)
    validation = source_from_config(config(split="validation"))
    assert validation[0]["key"] != source_from_config(config())[0]["key"]  # another seed: other records


def test_builtin_backgrounds_restrict_the_background_colours():
    source = source_from_config(config(backgrounds="white, gray"))
    assert {source[i]["meta"]["background"] for i in range(len(source))} <= {"white", "gray"}
    with pytest.raises(DataConfigError, match="backgrounds"):
        validate_data_config(config(backgrounds="white,purple"))


def test_an_unknown_field_suggests_the_closest_name():
    data = default_data_config()
    data.imgae_size = 64
    with pytest.raises(DataConfigError, match=r"config\.data\.imgae_size: unknown field; did you mean "
                                              r"config\.data\.image_size\?"):
        validate_data_config(data)


def test_wrong_types_are_named_with_what_was_expected():
    with pytest.raises(DataConfigError) as error:
        validate_data_config({"flip": 1, "num_epochs": 2.5, "batch_size": "64", "max_bad_fraction": 0})
    message = str(error.value)
    assert "3 problems" in message
    assert "config.data.flip: expected bool, got int 1" in message
    assert "config.data.num_epochs: expected int or None, got float 2.5" in message
    assert "config.data.batch_size: expected int, got str '64'" in message  # an int for a float field is fine


def test_unknown_dataset_lists_the_known_ones():
    with pytest.raises(DataConfigError, match=r"config\.data\.name: unknown dataset 'imagenet'; known datasets: "
                                              r"builtin, folder, tar, tfds"):
        validate_data_config({"name": "imagenet"})


@pytest.mark.parametrize("name", ["folder", "tfds"])
def test_folder_and_tfds_need_an_existing_data_dir(name, tmp_path):
    with pytest.raises(DataConfigError, match=rf"config\.data\.data_dir: the {name} dataset needs data_dir"):
        validate_data_config(config(name=name, tfds_name="pets"))
    with pytest.raises(DataConfigError, match=r"config\.data\.data_dir: .* does not exist"):
        validate_data_config(config(name=name, tfds_name="pets", data_dir=str(tmp_path / "missing")))


def test_folder_splits_need_a_heldout_fraction(tmp_path):
    with pytest.raises(DataConfigError) as error:
        validate_data_config(config(name="folder", data_dir=str(tmp_path), split="validation",
                                    class_caption_probability=1.5, task="caption", tokenizer=str(tmp_path)))
    assert "config.data.split: a folder's splits are train and validation (validation needs heldout_fraction" \
        in str(error.value)
    assert "config.data.class_caption_probability: must be in [0, 1], got 1.5" in str(error.value)
    with pytest.raises(DataConfigError, match=r"config\.data\.heldout_fraction: must be in \[0, 1\), got 1"):
        validate_data_config(config(name="folder", data_dir=str(tmp_path), heldout_fraction=1.0))
    validate_data_config(config(name="folder", data_dir=str(tmp_path), split="validation", heldout_fraction=0.1))


def test_tar_needs_shards_that_exist(tmp_path):
    with pytest.raises(DataConfigError, match=r"config\.data\.shards: the tar dataset needs shards"):
        validate_data_config(config(name="tar", shards=" "))
    with pytest.raises(DataConfigError, match=r"config\.data\.shards: no tar shards match"):
        validate_data_config(config(name="tar", shards=str(tmp_path / "*.tar")))


def test_task_options_are_checked(tmp_path):
    with pytest.raises(DataConfigError) as error:
        validate_data_config(config(task="super_resolution", sr_factor=3, degradation="blur"))
    assert "config.data.sr_factor: must be >= 2 and divide image_size 16" in str(error.value)
    assert "config.data.degradation: must be one of bicubic, bsr, bsr_light" in str(error.value)
    with pytest.raises(DataConfigError, match=r"config\.data\.num_classes: the semantic task needs"):
        validate_data_config(config(task="semantic"))
    with pytest.raises(DataConfigError, match=r"config\.data\.tokenizer: the caption task needs"):
        validate_data_config(config(task="caption"))
    with pytest.raises(DataConfigError, match=r"config\.data\.task: unknown task 'inpaint'; known tasks: image"):
        validate_data_config(config(task="inpaint"))


def test_tasks_add_their_inputs():
    low = first_batch(config(task="super_resolution", sr_factor=4))["low_res"]
    assert low.shape == (4, 4, 4, 3) and low.dtype == np.float32
    inpainting = first_batch(config(task="inpainting"))
    assert inpainting["mask"].shape == (4, 16, 16, 1) and set(np.unique(inpainting["mask"])) <= {0.0, 1.0}
    assert inpainting["masked_image"].shape == (4, 16, 16, 3)
    onehot = first_batch(config(task="semantic", num_classes=4))["segmentation_onehot"]
    assert onehot.shape == (4, 16, 16, 4) and np.all(onehot.sum(-1) == 1)
    assert first_batch(config(task="layout"))["layout_tokens"].shape == (4, 92)


def test_caption_task_tokenizes_with_the_configured_tokenizer(tmp_path):
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "a", "on", "picture", "of", "background", "in"]
    words += ["red", "green", "blue", "yellow", "circle", "square", "triangle", "white", "black", "gray",
              "magenta", "cyan"]
    (tmp_path / "vocab.txt").write_text("\n".join(words) + "\n")
    batch = first_batch(config(task="caption", tokenizer=str(tmp_path), tokenizer_kind="bert", max_length=12))
    tokens = batch["caption_tokens"]
    assert tokens.shape == (4, 12) and tokens.dtype == np.int32
    assert np.all(tokens[:, 0] == words.index("[CLS]"))
    assert words.index("[UNK]") not in tokens  # every caption word is in the vocabulary


def test_folder_and_tar_datasets_from_config(tmp_path):
    files = {f"{name}/{i}.png": encode(solid(colour, (20, 18)), "PNG")
             for name, colour in (("blue", (0, 0, 255)), ("red", (255, 0, 0))) for i in range(4)}
    root = write_image_folder(tmp_path / "images", files)
    transform = transform_from_config(config(name="folder", data_dir=str(root)))
    batch = first_batch(config(name="folder", data_dir=str(root), batch_size=8, shuffle=False))
    assert list(batch["label"]) == [0, 0, 0, 0, 1, 1, 1, 1]
    assert np.allclose(batch["image"][4:, ..., 0], 1.0) and np.allclose(batch["image"][:4, ..., 2], 1.0)
    assert hasattr(transform, "finish_batch")  # the image task moves uint8 pixels, scaled once per batch

    keys = [f"{i:04d}" for i in range(6)]
    write_tar(tmp_path / "shards" / "00000.tar", laion_members(keys[:3], sizes={k: (32, 20) for k in keys}))
    write_tar(tmp_path / "shards" / "00001.tar", laion_members(keys[3:], sizes={k: (32, 20) for k in keys}))
    tar = config(name="tar", shards=str(tmp_path / "shards" / "{00000..00001}.tar"), batch_size=6, shuffle=False)
    batch = first_batch(tar)
    assert sorted(batch["caption"]) == [f"caption {key}" for key in keys]
    assert len(source_from_config(config(name="tar", shards=tar.shards, min_size=24))) == 0  # all 20 px high
