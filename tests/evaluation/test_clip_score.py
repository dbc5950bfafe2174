"""`ldm-jax evaluate --metrics clip_score`: the score's definition, samples with prompts scored end to end
against transformers' CLIPModel (random weights, tiny), and the settings it needs named."""
import json

import numpy as np
import pytest
import torch

from ldm_jax import cli
from ldm_jax.data.synthetic import SyntheticShapes
from ldm_jax.evaluation import features
from ldm_jax.evaluation.clip_score import clip_score
from ldm_jax.evaluation.evaluate import EvaluationSettings, evaluate
from ldm_jax.evaluation.scoring import resolve_metrics
from ldm_jax.models import clip_vision, tokenizers
from tests.conftest import tiny_clip_vocab

transformers = pytest.importorskip("transformers")

PROMPTS = ["a red cat", "cat on a mat", "two blue squares"]


def test_clip_score_of_known_angles():
    image = np.array([[1.0, 0.0], [0.0, 2.0], [3.0, 0.0], [1.0, 1.0]])
    text = np.array([[2.0, 0.0], [1.0, 0.0], [-1.0, 0.0], [1.0, 0.0]])
    np.testing.assert_allclose(clip_score(image, text), [100.0, 0.0, 0.0, 100 / np.sqrt(2)], rtol=1e-6)
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        clip_score(image, text[:3])


@pytest.fixture(scope="module")
def hf_clip_folder(tmp_path_factory):
    """A tiny random transformers CLIPModel saved as the hub repository holds it: model.safetensors,
    config.json (4 heads: not the width / 64 default) and the tokenizer's vocab.json + merges.txt."""
    folder = tmp_path_factory.mktemp("clip")
    tiny_clip_vocab(folder / "vocab")
    for name in ("vocab.json", "merges.txt"):
        (folder / name).write_bytes((folder / "vocab" / name).read_bytes())
    config = transformers.CLIPConfig(
        text_config=dict(hidden_size=32, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                         max_position_embeddings=20, vocab_size=1000, bos_token_id=998, eos_token_id=999),
        vision_config=dict(hidden_size=32, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                           image_size=32, patch_size=8),
        projection_dim=16)
    torch.manual_seed(0)
    model = transformers.CLIPModel(config).eval()
    model.save_pretrained(folder)
    return folder, model


def _samples(tmp_path, count=10) -> tuple[str, str, np.ndarray]:
    source = SyntheticShapes(count, image_size=16, seed=3)
    images = np.stack([source[i]["image"] for i in range(count)])
    features.save_image_batch(tmp_path / "samples.npz", [images], count)
    (tmp_path / "prompts.txt").write_text("\n".join(PROMPTS) + "\n")
    return str(tmp_path / "samples.npz"), str(tmp_path / "prompts.txt"), images


def test_samples_with_prompts_against_transformers(hf_clip_folder, tmp_path):
    folder, model = hf_clip_folder
    samples, prompts, images = _samples(tmp_path)
    settings = EvaluationSettings(samples=samples, prompts=prompts, metrics=("clip_score",), batch_size=4,
                                  clip_weights=str(folder / "model.safetensors"))
    results = evaluate(settings, tmp_path / "out", progress=False)
    assert results["clip_model"]["layout"] == "transformers"
    assert results["clip_model"]["vision"]["heads"] == 4 and results["clip_model"]["text"]["heads"] == 4
    # The reference: transformers' embeddings of the same pixels and tokens, sample j with prompt j % 3.
    pixels = np.array(clip_vision.preprocess(images.astype(np.float32) / 127.5 - 1.0, 32))   # writable, for torch
    tokens = tokenizers.clip_tokenizer(folder, 20)([PROMPTS[j % 3] for j in range(len(images))])
    with torch.no_grad():
        image = model.get_image_features(pixel_values=torch.from_numpy(pixels).permute(0, 3, 1, 2)).pooler_output
        text = model.get_text_features(input_ids=torch.from_numpy(tokens).long()).pooler_output
    expected = 100 * torch.clamp(torch.nn.functional.cosine_similarity(image, text), min=0).numpy()
    assert expected.std() > 1.0   # the samples score differently: the pairing is checked
    np.testing.assert_allclose(results["metrics"]["clip_score"], expected.mean(), rtol=1e-5)
    np.testing.assert_allclose(results["metrics"]["clip_score_std"], expected.std(), rtol=1e-4)


@pytest.mark.parametrize("kind, prompted, weights, message", [
    ("samples", True, None, "clip_score needs CLIP weights: clip_weights"),
    ("samples", False, "clip.safetensors", "clip_score needs each sample's prompt: prompts"),
    ("diffusion", False, "clip.safetensors", "only text-to-image models have here; score a class-conditional"),
])
def test_what_clip_score_needs_is_named(kind, prompted, weights, message):
    settings = EvaluationSettings(samples="samples.npz", metrics=("clip_score",), clip_weights=weights)
    with pytest.raises(ValueError, match=message):
        resolve_metrics(settings, kind, 12, prompted=prompted)
    # Asked for nothing in particular, the default metrics leave it out.
    defaults = EvaluationSettings(samples="samples.npz", clip_weights=weights, features="builtin", data="builtin")
    assert "clip_score" not in resolve_metrics(defaults, kind, 12, prompted=prompted)
    assert "clip_score" in resolve_metrics(
        EvaluationSettings(samples="samples.npz", clip_weights="clip.safetensors", features="builtin"),
        kind, 12, prompted=True)


def test_autoencoders_have_no_clip_score():
    settings = EvaluationSettings(checkpoint="ae.ckpt", metrics=("clip_score",), clip_weights="clip.safetensors")
    with pytest.raises(ValueError, match="clip_score applies to generated samples"):
        resolve_metrics(settings, "autoencoder", 12)


def test_cli_flags(hf_clip_folder, tmp_path, capsys):
    folder, _ = hf_clip_folder
    samples, prompts, _ = _samples(tmp_path, count=4)
    out = str(tmp_path / "out")
    assert cli.main(["evaluate", "--samples", samples, "--metrics", "clip_score", "--out", out]) == 2
    assert "clip_score needs CLIP weights: --clip-weights" in capsys.readouterr().err
    assert cli.main(["evaluate", "--samples", samples, "--prompts", prompts, "--metrics", "clip_score",
                     "--clip-weights", str(folder / "model.safetensors"), "--clip-tokenizer", str(tmp_path),
                     "--out", out, "--no-progress"]) == 2
    assert "--clip-tokenizer: no CLIP vocabulary at" in capsys.readouterr().err
    assert cli.main(["evaluate", "--samples", samples, "--prompts", prompts, "--metrics", "clip_score",
                     "--clip-weights", str(folder / "model.safetensors"), "--clip-tokenizer", str(folder / "vocab"),
                     "--batch-size", "4", "--out", out, "--no-progress"]) == 0
    assert "clip_score" in capsys.readouterr().out
    assert json.loads((tmp_path / "out" / "results.json").read_text())["metrics"]["clip_score"] > 0
