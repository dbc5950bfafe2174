"""The demo (`ldm-jax demo`, `make demo`): the tiny variant end to end on the built-in data and on a
user's folder (class folders without captions, captions without classes), and its building blocks."""
import json

import numpy as np
import pytest
from PIL import Image

from ldm_jax import cli
from ldm_jax.data import shapes_checker, synthetic
from ldm_jax.data.config import default_data_config, pipeline_from_config
from ldm_jax.demo import config as demo_config
from ldm_jax.demo import data_plan
from ldm_jax.evaluation import feature_net
from ldm_jax.models import tokenizers
from tests.data.make_files import encode, solid, write_image_folder


def test_word_vocab_round_trips_through_the_bert_tokenizer(tmp_path):
    path = tokenizers.write_word_vocab(synthetic.caption_words(), tmp_path / "vocab.txt")
    tokenizer = tokenizers.bert_tokenizer(path, demo_config.MAX_TOKENS)
    ids = tokenizer(["a red circle on a black background", "", "a purple circle"])
    vocab = path.read_text().split()
    assert tokenizer.vocab_size == len(demo_config.VOCABULARY) == len(vocab)
    assert [vocab[i] for i in ids[0][:9]] == ["[CLS]", "a", "red", "circle", "on", "a", "black", "background", "[SEP]"]
    assert list(ids[1][:3]) == [vocab.index("[CLS]"), vocab.index("[SEP]"), vocab.index("[PAD]")]
    assert vocab[ids[2][2]] == "[UNK]"  # "purple" is not a caption word
    with pytest.raises(ValueError, match="lowercase"):
        tokenizers.write_word_vocab(["Red"], tmp_path / "bad.txt")


def test_caption_checker_reads_shape_colour_and_background():
    dataset = synthetic.SyntheticShapes(48, image_size=32, seed=5)
    records = [dataset[i] for i in range(len(dataset))]
    assert all(shapes_checker.matches_caption(r["image"], r["caption"]) for r in records)
    wrong = [r for r in records if "background" in r["caption"]][0]
    other = next(c for c in ("white", "black", "gray") if c != wrong["meta"]["background"])
    assert not shapes_checker.matches_caption(wrong["image"], wrong["caption"].replace(wrong["meta"]["background"], other))
    assert shapes_checker.caption_parts("a circle in green on gray") == ("circle", "green", "gray")
    with pytest.raises(ValueError, match="cannot read"):
        shapes_checker.caption_parts("a happy dog")


def test_feature_net_learns_the_builtin_classes():
    data = default_data_config()
    data.update(name="builtin", image_size=16, num_records=1024, batch_size=32)
    params, losses = feature_net.train_feature_net(pipeline_from_config(data), num_classes=12, steps=60, seed=0)
    assert losses[-1] < 0.5 * losses[0]
    data.update(split="validation", shuffle=False)
    batch = next(pipeline_from_config(data))
    outputs = feature_net.feature_fn(params, num_classes=12, batch_size=32)(batch["image"])
    assert outputs["features"].shape == (32, 128)
    assert np.mean(outputs["logits"].argmax(-1) == batch["label"]) > 0.3  # chance: 1/12


@pytest.mark.slow
def test_tiny_demo_writes_the_whole_output_folder(tmp_path):
    out = tmp_path / "out"
    assert cli.main(["demo", "--out", str(out), "--config", "configs/demo.py:tiny", "--no-progress"]) == 0
    report = json.loads((out / "report.json").read_text())
    metrics = report["metrics"]
    assert set(metrics["stages"]) == {"autoencoder", "ldm", "pixel"}
    assert metrics["stages"]["ldm"]["steps"] == 2 and metrics["stages"]["ldm"]["batch_size"] == 8
    assert np.isfinite(metrics["reconstruction"]["psnr"]) and 0 < metrics["reconstruction"]["ssim"] <= 1
    adherence = metrics["prompt_adherence"]
    assert set(adherence) == {"ldm", "ldm_guidance_1", "ldm_unconditional", "pixel", "ldm_captions"}
    assert all(0.0 <= row["accuracy"] <= 1.0 for row in adherence.values())
    quality = metrics["sample_quality"]
    assert set(quality["fid"]) == {"ldm", "pixel", "real_train"}
    assert set(quality["adherence"]) == {"ldm", "ldm_guidance_1", "ldm_unconditional", "pixel"}
    for name in ("reconstructions.png", "samples_ldm.png", "samples_pixel.png", "vocab.txt", "report.md",
                 "ldm/model.safetensors", "pixel/model.safetensors", "autoencoder/first_stage.safetensors"):
        assert (out / name).exists(), name
    assert len(list((out / "samples" / "ldm").glob("*.png"))) == 12 + len(demo_config.CAPTION_PROMPTS)
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert {line["stage"] for line in lines} == {"autoencoder", "ldm", "pixel", "evaluation"}
    markdown = (out / "report.md").read_text()
    for heading in ("## Reconstruction", "## Prompt adherence (the built-in", "## Prompt adherence and sample quality",
                    "## Targets"):
        assert heading in markdown
    # A rerun into the same folder trains nothing again and, seeded, reports the same numbers. (Training
    # from scratch is deterministic too: tests/training/test_loop.py compares whole runs bit for bit.)
    logs = {stage: (out / stage / "metrics.jsonl").read_text() for stage in metrics["stages"]}
    assert cli.main(["demo", "--out", str(out), "--config", "configs/demo.py:tiny", "--no-progress"]) == 0
    assert {stage: (out / stage / "metrics.jsonl").read_text() for stage in metrics["stages"]} == logs
    assert json.loads((out / "report.json").read_text())["metrics"] == metrics


def _class_folder(root, *, per_class: int = 12, captions: bool = False):
    """Small greyscale images (8x8, upscaled by the demo) in three class folders; with `captions`, a
    <stem>.txt beside each. Their words are the built-in vocabulary's (see `test_tiny_demo_on_a_folder`)."""
    yy, xx = np.mgrid[:8, :8]
    shapes = {"white_square": (np.maximum(abs(yy - 3.5), abs(xx - 3.5)) < 3) * 230,
              "gray_circle": ((yy - 3.5) ** 2 + (xx - 3.5) ** 2 < 9) * 90,
              "white_triangle": ((yy >= 1) & (abs(xx - 3.5) <= (yy - 1) / 1.6)) * 230}
    rng = np.random.default_rng(0)
    files = {}
    for name, shape in shapes.items():
        for index in range(per_class):
            pixels = np.clip(shape + rng.integers(0, 20, shape.shape), 0, 255).astype(np.uint8)
            files[f"{name}/{index:03d}.png"] = encode(Image.fromarray(pixels, mode="L"), "PNG")
            if captions:
                files[f"{name}/{index:03d}.txt"] = f"a {name.replace('_', ' ')} drawn small".encode()
    return write_image_folder(root, files)


def _captioned_folder(root, count: int = 24):
    """RGB 28x28 images in one folder, no classes, each with a caption."""
    files = {}
    for index in range(count):
        caption, colour = ("a red picture", (200, 20, 20)) if index % 2 else ("a blue picture", (20, 20, 200))
        files[f"{index:03d}.png"] = encode(solid(colour, size=(28, 28)), "PNG")
        files[f"{index:03d}.txt"] = caption.encode()
    return write_image_folder(root, files)


def test_folder_plan_uses_class_names_captions_or_both(tmp_path):
    config = demo_config.get_config("tiny")
    config.data.update(name="folder", data_dir=str(_class_folder(tmp_path / "classes")))
    plan = data_plan.plan_data(config)
    assert plan.class_prompts == ["gray circle", "white square", "white triangle"] and plan.caption_prompts == []
    assert plan.data_settings == {"class_caption_probability": 1.0}
    assert "36 readable images" in plan.description and "3 classes" in plan.description
    assert "36 greyscale" in plan.description and "smallest side 8 px" in plan.description

    config.data.data_dir = str(_class_folder(tmp_path / "both", captions=True))
    plan = data_plan.plan_data(config)
    assert plan.data_settings == {"class_caption_probability": data_plan.MIXED_CLASS_CAPTIONS}
    assert plan.class_prompts == ["gray circle", "white square", "white triangle"]
    assert plan.caption_prompts and all(p.endswith("drawn small") for p in plan.caption_prompts)

    config.data.data_dir = str(_captioned_folder(tmp_path / "captions"))
    plan = data_plan.plan_data(config)
    assert plan.data_settings == {"class_caption_probability": 0.0} and plan.caption_prompts == []
    assert set(plan.class_prompts) == {"a red picture", "a blue picture"}  # captions of held-out images


def test_folder_plan_refuses_what_would_fail_later(tmp_path):
    config = demo_config.get_config("tiny")
    config.data.update(name="folder", data_dir=str(_class_folder(tmp_path / "few", per_class=4)))
    with pytest.raises(ValueError, match=r"fewer than 10 readable images \('gray_circle': 4"):
        data_plan.plan_data(config)
    root = _captioned_folder(tmp_path / "uncaptioned")
    (root / "000.txt").unlink()
    config.data.data_dir = str(root)
    with pytest.raises(ValueError, match="neither class sub-folders nor a caption beside every image"):
        data_plan.plan_data(config)
    root = _class_folder(tmp_path / "broken")
    (root / "gray_circle" / "000.png").write_bytes(b"not a png")
    config.data.data_dir = str(root)
    with pytest.raises(ValueError, match=r"(?s)1 of 36 images .* cannot be read.*gray_circle/000.png"):
        data_plan.plan_data(config)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["classes", "captions"])
def test_tiny_demo_on_a_folder(tmp_path, kind):
    data = _class_folder(tmp_path / "data") if kind == "classes" else _captioned_folder(tmp_path / "data")
    out = tmp_path / "out"
    # The built-in vocabulary as the user's tokenizer: the models have the built-in demo's shapes, so
    # after the test above their programs come from the persistent compilation cache.
    vocab = tokenizers.write_word_vocab(synthetic.caption_words(), tmp_path / "vocab.txt")
    assert cli.main(["demo", "--out", str(out), "--config", "configs/demo.py:tiny", "--data-dir", str(data),
                     f"--config.tokenizer={vocab}", "--no-progress"]) == 0
    report = json.loads((out / "report.json").read_text())
    settings, metrics = report["settings"], report["metrics"]
    assert settings["data_description"].startswith(str(data))
    assert metrics["prompt_adherence"] == {}  # the built-in checker does not read other data
    markdown = (out / "report.md").read_text()
    assert "coloured shapes" not in markdown and "backgrounds" not in markdown
    quality = metrics["sample_quality"]
    if kind == "classes":
        assert settings["prompts"] == ["gray circle", "white square", "white triangle"]
        assert quality["num_heldout"] == 6  # 10% of each class of 12, rounded up: never trained on
        assert set(quality["adherence"]) == {"ldm", "ldm_guidance_1", "ldm_unconditional", "pixel"}
        assert set(quality["fid"]) == {"ldm", "pixel", "real_train"}
        assert {"ldm_fid_below_pixel_fid", "real_images_fid_floor_below_both"} <= set(report["checks"])
        assert len(list((out / "samples" / "ldm").glob("*.png"))) == 3
    else:
        assert set(settings["prompts"]) <= {"a red picture", "a blue picture"}
        assert quality == {} and "no labels to train the feature net" in markdown
