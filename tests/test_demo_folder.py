"""The demo on the user's own image folder: the check and plan before training, and the tiny demo
end to end on class folders without captions and on captions without classes."""
import json

import numpy as np
import pytest
from PIL import Image

from ldm_jax import cli
from ldm_jax.demo import config as demo_config
from ldm_jax.demo import data_plan
from tests.data.make_files import encode, solid, write_image_folder


def _class_folder(root, *, per_class: int = 12, captions: bool = False):
    """Small greyscale images (8x8, upscaled by the demo) in three class folders: a bright square, a
    dark disc, a vertical bar; with `captions`, a <stem>.txt beside each."""
    yy, xx = np.mgrid[:8, :8]
    shapes = {"bright_square": (np.maximum(abs(yy - 3.5), abs(xx - 3.5)) < 3) * 230,
              "dark_disc": ((yy - 3.5) ** 2 + (xx - 3.5) ** 2 < 9) * 90,
              "bar": (abs(xx - 3.5) < 1.5) * 160}
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
    """RGB 28x28 images in one folder, no classes, each with a caption. Five words, as many as the class
    folders' names: the same vocabulary size, so the tiny demo's programs compile once for both."""
    files = {}
    for index in range(count):
        caption, colour = ("a red picture", (200, 20, 20)) if index % 2 else ("a blue image", (20, 20, 200))
        files[f"{index:03d}.png"] = encode(solid(colour, size=(28, 28)), "PNG")
        files[f"{index:03d}.txt"] = caption.encode()
    return write_image_folder(root, files)


def test_folder_plan_uses_class_names_captions_or_both(tmp_path):
    config = demo_config.get_config("tiny")
    config.data.update(name="folder", data_dir=str(_class_folder(tmp_path / "classes")))
    plan = data_plan.plan_data(config)
    assert plan.class_prompts == ["bar", "bright square", "dark disc"] and plan.caption_prompts == []
    assert plan.data_settings == {"class_caption_probability": 1.0}
    assert "36 readable images" in plan.description and "3 classes" in plan.description
    assert "36 greyscale" in plan.description and "smallest side 8 px" in plan.description

    config.data.data_dir = str(_class_folder(tmp_path / "both", captions=True))
    plan = data_plan.plan_data(config)
    assert plan.data_settings == {"class_caption_probability": data_plan.MIXED_CLASS_CAPTIONS}
    assert plan.class_prompts == ["bar", "bright square", "dark disc"]
    assert plan.caption_prompts and all(p.endswith("drawn small") for p in plan.caption_prompts)

    config.data.data_dir = str(_captioned_folder(tmp_path / "captions"))
    plan = data_plan.plan_data(config)
    assert plan.data_settings == {"class_caption_probability": 0.0} and plan.caption_prompts == []
    assert set(plan.class_prompts) == {"a red picture", "a blue image"}  # captions of held-out images


def test_folder_plan_refuses_what_would_fail_later(tmp_path):
    config = demo_config.get_config("tiny")
    config.data.update(name="folder", data_dir=str(_class_folder(tmp_path / "few", per_class=4)))
    with pytest.raises(ValueError, match=r"fewer than 10 readable images \('bar': 4"):
        data_plan.plan_data(config)
    root = _captioned_folder(tmp_path / "uncaptioned")
    (root / "000.txt").unlink()
    config.data.data_dir = str(root)
    with pytest.raises(ValueError, match="neither class sub-folders nor a caption beside every image"):
        data_plan.plan_data(config)
    root = _class_folder(tmp_path / "broken")
    (root / "bar" / "000.png").write_bytes(b"not a png")
    config.data.data_dir = str(root)
    with pytest.raises(ValueError, match=r"(?s)1 of 36 images .* cannot be read.*bar/000.png"):
        data_plan.plan_data(config)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["classes", "captions"])
def test_tiny_demo_on_a_folder(tmp_path, kind):
    data = _class_folder(tmp_path / "data") if kind == "classes" else _captioned_folder(tmp_path / "data")
    out = tmp_path / "out"
    assert cli.main(["demo", "--out", str(out), "--config", "configs/demo.py:tiny", "--data-dir", str(data),
                     "--no-progress"]) == 0
    report = json.loads((out / "report.json").read_text())
    settings, metrics = report["settings"], report["metrics"]
    assert settings["data_description"].startswith(str(data))
    assert metrics["prompt_adherence"] == {}  # the built-in checker does not read other data
    markdown = (out / "report.md").read_text()
    assert "coloured shapes" not in markdown and "backgrounds" not in markdown
    quality = metrics["sample_quality"]
    if kind == "classes":
        assert settings["prompts"] == ["bar", "bright square", "dark disc"]
        assert quality["num_heldout"] == 6  # 10% of each class of 12, rounded up: never trained on
        assert set(quality["adherence"]) == {"ldm", "ldm_guidance_1", "ldm_unconditional", "pixel"}
        assert set(quality["fid"]) == {"ldm", "pixel", "real_train"}
        assert {"ldm_fid_below_pixel_fid", "real_images_fid_floor_below_both"} <= set(report["checks"])
        assert len(list((out / "samples" / "ldm").glob("*.png"))) == 3
    else:
        assert set(settings["prompts"]) <= {"a red picture", "a blue image"}
        assert quality == {} and "no labels to train the feature net" in markdown
