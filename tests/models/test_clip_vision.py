"""The CLIP image tower and the CLIP weight converter against transformers' CLIPModel and open_clip's
VisionTransformer / TextTransformer (random weights, tiny widths), the full sizes' parameter counts, and
CLIP's preprocessing against PIL."""
import json

import jax
import numpy as np
import pytest
import torch
from PIL import Image

from ldm_jax.convert import clip_weights
from ldm_jax.convert.state_dict import CheckpointMismatchError
from ldm_jax.models import clip_vision
from ldm_jax.models.abstract import abstract_module_params
from tests.conftest import assert_matches_reference
from tests.evaluation.reference_packages import open_clip_transformer

transformers = pytest.importorskip("transformers")

IMAGE, PATCH, WIDTH, TEXT_WIDTH, HEADS, EMBED, VOCAB, CONTEXT = 32, 8, 64, 48, 4, 24, 300, 16
HEAD_OVERRIDES = {"vision": {"heads": HEADS}, "text": {"heads": HEADS}}


def _randomize(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Every tensor random (norms and biases too), so that no parity check passes by a zero."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=generator)
            if name.endswith("bias") or p.ndim == 1 and "norm" not in name and "ln_" not in name:
                p.copy_(0.1 * noise)
            elif p.ndim == 1:   # a norm's scale
                p.copy_(1.0 + 0.2 * noise)
            else:
                table = "embedding" in name and p.ndim == 2   # token / position tables: unit rows
                p.copy_(noise if table else noise / np.sqrt(np.prod(p.shape[1:])))
    return module.eval()


def _state_dict(module: torch.nn.Module, prefix: str = "") -> dict[str, np.ndarray]:
    return {prefix + key: value.numpy() for key, value in module.state_dict().items()}


def _images(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((2, IMAGE, IMAGE, 3)).astype(np.float32)


def _tokens() -> np.ndarray:
    """Two prompts ending in the highest id (CLIP's EOS), padded as open_clip does (0) and as SD v1 (EOS)."""
    ids = np.zeros((2, CONTEXT), np.int64)
    rng = np.random.default_rng(1)
    ids[:, 0] = VOCAB - 2
    ids[0, 1:4], ids[0, 4] = rng.integers(1, VOCAB - 2, 3), VOCAB - 1
    ids[1, 1:10], ids[1, 10:] = rng.integers(1, VOCAB - 2, 9), VOCAB - 1
    return ids


def _embeddings(towers: clip_weights.CLIPTowers, images: np.ndarray, tokens: np.ndarray):
    image = jax.jit(towers.vision.apply)({"params": towers.vision_params}, images)
    text = jax.jit(lambda p, t: towers.text.apply(p, t, return_pooled=True)[1])({"params": towers.text_params}, tokens)
    return np.asarray(image), np.asarray(text)


@pytest.fixture(scope="module")
def hf_clip():
    """A tiny transformers CLIPModel (OpenAI's layout and quick_gelu)."""
    text = dict(hidden_size=TEXT_WIDTH, intermediate_size=4 * TEXT_WIDTH, num_hidden_layers=2,
                num_attention_heads=HEADS, max_position_embeddings=CONTEXT, vocab_size=VOCAB,
                bos_token_id=VOCAB - 2, eos_token_id=VOCAB - 1)
    vision = dict(hidden_size=WIDTH, intermediate_size=4 * WIDTH, num_hidden_layers=2, num_attention_heads=HEADS,
                  image_size=IMAGE, patch_size=PATCH)
    config = transformers.CLIPConfig(text_config=text, vision_config=vision, projection_dim=EMBED)
    torch.manual_seed(0)
    return _randomize(transformers.CLIPModel(config), 0)


def test_transformers_clip_model(hf_clip):
    towers = clip_weights.towers_from_state_dict(_state_dict(hf_clip), HEAD_OVERRIDES)
    assert towers.layout == "transformers" and towers.vision.quick_gelu and towers.text.quick_gelu
    assert (towers.vision.image_size, towers.vision.patch_size, towers.vision.layers) == (IMAGE, PATCH, 2)
    images, tokens = _images(), _tokens()
    with torch.no_grad():
        expected_image = hf_clip.get_image_features(pixel_values=torch.from_numpy(images).permute(0, 3, 1, 2))
        expected_text = hf_clip.get_text_features(input_ids=torch.from_numpy(tokens))
    image, text = _embeddings(towers, images, tokens)
    assert_matches_reference(image, _pooled(expected_image), "image embedding", rel=1e-5)
    assert_matches_reference(text, _pooled(expected_text), "text embedding", rel=1e-5)


def _pooled(output) -> np.ndarray:
    """transformers 5 returns a model output whose pooler_output is the projected embedding."""
    return (output if isinstance(output, torch.Tensor) else output.pooler_output).numpy()


def test_transformers_vision_model_with_projection_alone(hf_clip):
    state = {key: value for key, value in _state_dict(hf_clip).items()
             if key.startswith(("vision_model.", "visual_projection."))}
    towers = clip_weights.towers_from_state_dict(state, HEAD_OVERRIDES)
    assert towers.text is None and towers.vision_params["conv1"]["kernel"].shape == (PATCH, PATCH, 3, WIDTH)


@pytest.fixture(scope="module")
def open_clip_towers():
    """open_clip's own ViT and text transformer (GELU, as the LAION weights), in a CLIP state dict."""
    reference = open_clip_transformer()
    torch.manual_seed(0)
    vision = _randomize(reference.VisionTransformer(image_size=IMAGE, patch_size=PATCH, width=WIDTH, layers=2,
                                                     heads=HEADS, mlp_ratio=4.0, output_dim=EMBED), 1)
    text = _randomize(reference.TextTransformer(context_length=CONTEXT, vocab_size=VOCAB, width=TEXT_WIDTH,
                                                heads=HEADS, layers=2, output_dim=EMBED), 2)
    # As open_clip's training checkpoints hold it: under "state_dict", each key prefixed "module.".
    state = {**_state_dict(vision, "module.visual."), **_state_dict(text, "module."),
             "module.logit_scale": np.ones((), np.float32)}
    return vision, text, state


def test_open_clip_towers(open_clip_towers):
    vision, text, state = open_clip_towers
    towers = clip_weights.towers_from_state_dict(state, HEAD_OVERRIDES)
    assert towers.layout == "open_clip" and not towers.vision.quick_gelu and not towers.text.quick_gelu
    images, tokens = _images(2), _tokens()
    with torch.no_grad():
        expected_image = vision(torch.from_numpy(images).permute(0, 3, 1, 2)).numpy()
        expected_text = text(torch.from_numpy(tokens)).numpy()
    image, embedded = _embeddings(towers, images, tokens)
    assert_matches_reference(image, expected_image, "image embedding", rel=1e-5)
    assert_matches_reference(embedded, expected_text, "text embedding", rel=1e-5)
    # The activation matters: OpenAI's quick_gelu on the same weights gives other embeddings.
    quick = clip_weights.towers_from_state_dict(state, {name: {"heads": HEADS, "quick_gelu": True}
                                                        for name in ("vision", "text")})
    assert np.abs(_embeddings(quick, images, tokens)[0] - image).max() > 1e-3


def test_unknown_and_misshapen_checkpoints_are_named(open_clip_towers):
    with pytest.raises(CheckpointMismatchError, match="not a CLIP checkpoint"):
        clip_weights.towers_from_state_dict({"model.diffusion_model.x": np.zeros(1)})
    _, _, state = open_clip_towers
    broken = {**state, "module.visual.ln_pre.bias": np.zeros(3, np.float32)}
    with pytest.raises(CheckpointMismatchError, match="visual.ln_pre.bias|ln_pre.bias"):
        clip_weights.towers_from_state_dict(broken, HEAD_OVERRIDES)


def test_heads_and_activation_from_the_config_beside(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({
        "vision_config": {"num_attention_heads": 16, "hidden_act": "gelu"},
        "text_config": {"num_attention_heads": 12}}))
    assert clip_weights.config_overrides(tmp_path) == {"vision": {"heads": 16, "quick_gelu": False},
                                                       "text": {"heads": 12, "quick_gelu": True}}
    (tmp_path / "open_clip_config.json").write_text(json.dumps({"model_cfg": {
        "vision_cfg": {"width": 1280, "head_width": 80}, "text_cfg": {"heads": 16}}}))
    assert clip_weights.config_overrides(tmp_path) == {"vision": {"heads": 16, "quick_gelu": False},
                                                       "text": {"heads": 16, "quick_gelu": False}}


def _count(tree) -> int:
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def test_full_size_parameter_counts():
    """ViT-L/14 (OpenAI, transformers' layout) and ViT-H/14 (OpenCLIP) as jax.eval_shape trees, against the
    torch models built on the meta device."""
    ours = {name: _count(abstract_module_params(module, *clip_vision.example_inputs(module)))
            for name, module in ((name, clip_vision.CLIPVisionTransformer(**sizes))
                                 for name, sizes in clip_vision.VISION_TOWERS.items())}
    with torch.device("meta"):
        vit_l = transformers.CLIPVisionModelWithProjection(transformers.CLIPVisionConfig(
            hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16, image_size=224,
            patch_size=14, projection_dim=768))
        vit_h = open_clip_transformer().VisionTransformer(image_size=224, patch_size=14, width=1280, layers=32,
                                                          heads=16, mlp_ratio=4.0, output_dim=1024)
    assert ours["ViT-L-14"] == sum(p.numel() for p in vit_l.parameters()) == 303_966_208
    assert ours["ViT-H-14"] == sum(p.numel() for p in vit_h.parameters()) == 632_076_800


def test_preprocess_matches_pil_bicubic():
    """OpenAI's preprocess on 8-bit images: PIL's bicubic resize of the short side, centre crop, normalise."""
    rng = np.random.default_rng(4)
    base = rng.integers(0, 256, (12, 18, 3)).astype(np.float64)
    pixels = np.asarray(Image.fromarray(base.astype(np.uint8)).resize((72, 48), Image.BICUBIC))   # smooth
    ours = np.asarray(clip_vision.preprocess(pixels[None].astype(np.float32) / 127.5 - 1.0, image_size=20))[0]
    resized = np.asarray(Image.fromarray(pixels).resize((30, 20), Image.BICUBIC), np.float32) / 255.0
    expected = (resized[:, 5:25] - np.asarray(clip_vision.MEAN)) / np.asarray(clip_vision.STD)
    assert ours.shape == (20, 20, 3)
    # PIL rounds to 8 bits, between its two passes too: within 2 levels of 255 (half a level on average).
    levels = np.abs(ours - expected) * np.asarray(clip_vision.STD) * 255
    assert levels.max() < 2.0 and levels.mean() < 0.5
    same = np.asarray(clip_vision.preprocess(np.zeros((1, 20, 20, 3), np.float32), image_size=20))
    np.testing.assert_allclose(same[0, 0, 0], (0.5 - np.asarray(clip_vision.MEAN)) / np.asarray(clip_vision.STD),
                               rtol=1e-6)
