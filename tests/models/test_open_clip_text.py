"""SD 2's OpenCLIP text tower against a small torch model with open_clip's module layout.

There is no fixture for it: the torch model below follows open_clip's attribute names (so its
state_dict has the checkpoint's key layout) and FrozenOpenCLIPEmbedder's forward, built from
torch.nn.MultiheadAttention, LayerNorm and Linear.
"""
from collections import OrderedDict

import jax
import numpy as np
import pytest
import torch
from torch import nn

from ldm_jax.convert import compvis
from ldm_jax.convert.state_dict import load_params
from ldm_jax.models.abstract import abstract_module_params
from ldm_jax.models import open_clip_text
from tests.conftest import assert_matches_reference


class _TorchBlock(nn.Module):
    def __init__(self, width, heads):
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(OrderedDict(
            [("c_fc", nn.Linear(width, 4 * width)), ("gelu", nn.GELU()), ("c_proj", nn.Linear(4 * width, width))]))

    def forward(self, x, attn_mask):  # x: (L, N, D), as open_clip's blocks
        h = self.ln_1(x)
        x = x + self.attn(h, h, h, need_weights=False, attn_mask=attn_mask)[0]
        return x + self.mlp(self.ln_2(x))


class _TorchTransformer(nn.Module):
    def __init__(self, width, layers, heads):
        super().__init__()
        self.resblocks = nn.ModuleList([_TorchBlock(width, heads) for _ in range(layers)])


class _TorchTextTower(nn.Module):
    """open_clip CLIP without `visual`, run as FrozenOpenCLIPEmbedder.encode_with_transformer."""

    def __init__(self, width, layers, heads, context_length, vocab_size, embed_dim):
        super().__init__()
        self.token_embedding = nn.Embedding(vocab_size, width)
        self.positional_embedding = nn.Parameter(torch.empty(context_length, width))
        self.transformer = _TorchTransformer(width, layers, heads)
        self.ln_final = nn.LayerNorm(width)
        self.text_projection = nn.Parameter(torch.empty(width, embed_dim))
        self.logit_scale = nn.Parameter(torch.ones([]))
        mask = torch.full((context_length, context_length), float("-inf")).triu_(1)
        self.register_buffer("attn_mask", mask, persistent=False)

    def forward(self, text, layer_idx):
        x = (self.token_embedding(text) + self.positional_embedding).permute(1, 0, 2)
        blocks = self.transformer.resblocks
        for block in blocks[:len(blocks) - layer_idx]:
            x = block(x, self.attn_mask)
        return self.ln_final(x.permute(1, 0, 2))

    def encode_text(self, text):
        x = self.forward(text, 0)
        return x[torch.arange(x.shape[0]), text.argmax(dim=-1)] @ self.text_projection


SMALL = dict(width=32, layers=3, heads=4, context_length=77, vocab_size=300, embed_dim=24)


@pytest.fixture(scope="module")
def torch_tower():
    torch.manual_seed(0)
    tower = _TorchTextTower(**SMALL).eval()
    with torch.no_grad():
        for name, p in tower.named_parameters():
            fan_in = int(np.prod(p.shape[1:])) if p.ndim >= 2 else 1
            p.copy_(torch.randn(p.shape) / np.sqrt(fan_in) if p.ndim >= 2 else 0.2 * torch.randn(p.shape) + (
                1.0 if name.endswith(("ln_1.weight", "ln_2.weight", "ln_final.weight")) else 0.0))
    return tower


def _tokens():
    rng = np.random.default_rng(3)
    ids = np.zeros((2, 77), np.int64)  # open_clip pads with 0
    for row, n in enumerate((5, 20)):
        ids[row, 0] = 298
        ids[row, 1:n + 1] = rng.integers(1, 298, n)
        ids[row, n + 1] = 299  # EOT, the highest id
    return ids


def _load(module, tower):
    checkpoint = {f"cond_stage_model.model.{k}": v.numpy() for k, v in tower.state_dict().items()}
    checkpoint["cond_stage_model.model.visual.proj"] = np.zeros(3, np.float32)  # image tower: dropped
    state_dict = compvis.component_state_dict("open_clip_text", checkpoint)
    return load_params(abstract_module_params(module, *open_clip_text.example_inputs(module)), state_dict)


@pytest.mark.parametrize("layer, layer_idx", [("penultimate", 1), ("last", 0)])
def test_matches_torch_reference(torch_tower, layer, layer_idx):
    module = open_clip_text.open_clip_text_from_reference(
        {"arch": "tiny", "layer": layer, "version": "none", "device": "cpu", "freeze": True, **SMALL})
    params = _load(module, torch_tower)
    ids = _tokens()
    with torch.no_grad():
        expected = torch_tower(torch.from_numpy(ids), layer_idx).numpy()
        expected_pooled = torch_tower.encode_text(torch.from_numpy(ids)).numpy()
    features, pooled = jax.jit(lambda p, t: module.apply(p, t, return_pooled=True))({"params": params}, ids)
    assert_matches_reference(features, expected, f"{layer} features")
    assert_matches_reference(pooled, expected_pooled, "pooled")
    assert_matches_reference(jax.jit(module.apply)({"params": params}, ids), expected, f"{layer} features")


def test_vit_h_text_tower_parameter_count():
    module = open_clip_text.open_clip_text_from_reference({"arch": "ViT-H-14", "layer": "penultimate"})
    shapes = abstract_module_params(module, *open_clip_text.example_inputs(module))
    flax_count = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes))
    assert flax_count == 354_032_640
    # The reference module's parameters hold exactly one more number: logit_scale (ignored).
    with torch.device("meta"):
        reference = _TorchTextTower(width=1024, layers=24, heads=16, context_length=77, vocab_size=49408,
                                    embed_dim=1024)
    assert sum(p.numel() for p in reference.parameters()) == flax_count + 1


def test_other_sizes_skip_the_last_block_and_are_causal():
    module = open_clip_text.open_clip_text_from_reference(
        {"arch": "ViT-B-32", "width": 48, "layers": 2, "heads": 6, "context_length": 12, "vocab_size": 50,
         "embed_dim": 16, "layer": "penultimate"})
    ids = np.array([[48, 3, 4, 5, 49, 0, 0, 0, 0, 0, 0, 0]])
    variables = module.init(jax.random.key(0), ids)
    assert set(variables["params"]["transformer"]) == {"resblocks:0", "resblocks:1"}
    apply = jax.jit(lambda v, t: module.apply(v, t, return_pooled=True))
    features, pooled = apply(variables, ids)
    assert features.shape == (1, 12, 48) and pooled.shape == (1, 16)
    # Penultimate: the last block's weights do not affect the features, only the pooled embedding.
    params = jax.tree.map(lambda x: x, variables["params"])
    params["transformer"]["resblocks:1"] = jax.tree.map(lambda x: x + 1.0, params["transformer"]["resblocks:1"])
    features2, pooled2 = apply({"params": params}, ids)
    np.testing.assert_array_equal(features2, features)
    assert np.abs(pooled2 - pooled).max() > 1e-3
    changed = ids.copy()
    changed[0, 7] = 9
    np.testing.assert_allclose(apply(variables, changed)[0][:, :7], features[:, :7], atol=1e-6)


def test_params_errors():
    with pytest.raises(ValueError, match="unknown OpenCLIP arch"):
        open_clip_text.open_clip_text_from_reference({"arch": "RN50"})
    with pytest.raises(ValueError, match="unknown FrozenOpenCLIPEmbedder params"):
        open_clip_text.open_clip_text_from_reference({"arch": "ViT-H-14", "pooled": True})
    with pytest.raises(ValueError, match="layer"):
        open_clip_text.open_clip_text_from_reference({"arch": "ViT-H-14", "layer": "pooled"})
