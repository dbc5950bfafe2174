"""The demo (`ldm-jax demo`, `make demo`): the tiny variant end to end, and its building blocks."""
import json

import numpy as np
import pytest

from ldm_jax import cli
from ldm_jax.data import shapes_checker, synthetic
from ldm_jax.data.config import default_data_config, pipeline_from_config
from ldm_jax.demo import config as demo_config
from ldm_jax.evaluation import feature_net
from ldm_jax.models import tokenizers


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

