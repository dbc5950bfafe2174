"""SD v1's CLIP text encoder (Hugging Face CLIPTextModel layout) against the reference fixtures."""
import json

import jax
import numpy as np
import pytest
from safetensors.numpy import load_file

from ldm_jax.convert import compvis
from ldm_jax.convert.state_dict import load_params
from ldm_jax.models.abstract import abstract_module_params
from ldm_jax.models import clip_text
from tests.conftest import assert_matches_reference, case_weights


@pytest.fixture(scope="module")
def fixture_model(compvis_fixtures):
    config = json.loads((compvis_fixtures / "clip_text_config.json").read_text())
    module = clip_text.clip_text_from_reference(config)
    state_dict = compvis.component_state_dict("clip_text", case_weights(compvis_fixtures, "clip_text"))
    params = load_params(abstract_module_params(module, *clip_text.example_inputs(module)), state_dict)
    return config, params, np.load(compvis_fixtures / "clip_text.npz")


def test_matches_reference_fixture(fixture_model):
    config, params, arrays = fixture_model
    module = clip_text.clip_text_from_reference(config)
    out = jax.jit(lambda p, ids: module.apply(p, ids, return_all=True))({"params": params}, arrays["input_ids"])
    assert_matches_reference(out["last_hidden_state"], arrays["last_hidden_state"], "last_hidden_state")
    assert_matches_reference(out["pooler_output"], arrays["pooler_output"], "pooler_output")
    assert_matches_reference(np.stack(out["hidden_states"]), arrays["hidden_states"], "hidden_states")
    # The default call is FrozenCLIPEmbedder's output.
    default = jax.jit(module.apply)({"params": params}, arrays["input_ids"])
    assert_matches_reference(default, arrays["last_hidden_state"], "FrozenCLIPEmbedder output")


def test_layer_choices(fixture_model):
    config, params, arrays = fixture_model
    ids = arrays["input_ids"]

    def run(**kwargs):
        return np.asarray(clip_text.clip_text_from_reference(config, **kwargs).apply({"params": params}, ids))

    assert_matches_reference(run(layer="hidden", layer_idx=-2), arrays["hidden_states"][-2], "hidden -2")
    assert_matches_reference(run(layer="hidden", layer_idx=0), arrays["hidden_states"][0], "hidden 0")
    assert_matches_reference(run(layer="pooled")[:, 0], arrays["pooler_output"], "pooled")
    # Clip skip: the final norm of the penultimate layer, which is not the last layer's output.
    penultimate = run(layer="penultimate")
    hidden = arrays["hidden_states"][-2]
    mean, var = hidden.mean(-1, keepdims=True), hidden.var(-1, keepdims=True)
    scale = params["final_layer_norm"]["scale"]
    bias = params["final_layer_norm"]["bias"]
    assert_matches_reference(penultimate, (hidden - mean) / np.sqrt(var + 1e-5) * scale + bias, "penultimate")
    assert np.abs(penultimate - arrays["last_hidden_state"]).max() > 1e-2


def test_full_checkpoint_prefix(compvis_fixtures):
    """The text encoder inside an SD v1 checkpoint: keys under cond_stage_model.transformer.text_model."""
    config = json.loads((compvis_fixtures / "clip_text_config.json").read_text())
    module = clip_text.clip_text_from_reference(config)
    state_dict = compvis.component_state_dict("clip_text", load_file(compvis_fixtures / "full_ckpt.safetensors"))
    params = load_params(abstract_module_params(module, *clip_text.example_inputs(module)), state_dict)
    arrays = np.load(compvis_fixtures / "full_ckpt.npz")
    out = jax.jit(module.apply)({"params": params}, arrays["chk_clip_input_ids"])
    assert_matches_reference(out, arrays["chk_clip_last_hidden_state"], "chk_clip_last_hidden_state")


def test_key_prefixes_of_transformers_4_and_5():
    tensor = np.zeros(1)
    v4 = {"text_model.final_layer_norm.weight": tensor, "text_model.embeddings.position_ids": tensor}
    v5 = {"final_layer_norm.weight": tensor}
    sd = {"cond_stage_model.transformer.text_model.final_layer_norm.weight": tensor, "model.x": tensor}
    for state_dict in (v4, v5, sd):
        assert set(compvis.component_state_dict("clip_text", state_dict)) == {"final_layer_norm.weight"}


def test_sd_v1_text_encoder_parameter_count():
    module = clip_text.clip_text_from_reference(clip_text.SD_V1_TEXT_CONFIG)
    shapes = abstract_module_params(module, *clip_text.example_inputs(module))
    assert sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes)) == 123_060_480


def test_other_sizes_are_causal():
    config = {"hidden_size": 48, "intermediate_size": 96, "num_hidden_layers": 3, "num_attention_heads": 3,
              "max_position_embeddings": 16, "vocab_size": 300, "hidden_act": "gelu", "layer_norm_eps": 1e-6}
    module = clip_text.clip_text_from_reference({"text_config": config, "model_type": "clip"})
    ids = np.array([[298, 5, 7, 9, 299, 299, 299, 299, 299, 299]])
    variables = module.init(jax.random.key(0), ids)
    apply = jax.jit(lambda v, x: module.apply(v, x, return_all=True))
    out = apply(variables, ids)
    assert out["last_hidden_state"].shape == (1, 10, 48)
    assert len(out["hidden_states"]) == 4
    np.testing.assert_allclose(out["pooler_output"], out["last_hidden_state"][:, 4], atol=0)
    # Causal: changing token 6 leaves positions 0..5 unchanged and changes position 6.
    changed = ids.copy()
    changed[0, 6] = 11
    other = apply(variables, changed)["last_hidden_state"]
    np.testing.assert_allclose(other[:, :6], out["last_hidden_state"][:, :6], atol=1e-6)
    assert np.abs(other[:, 6] - out["last_hidden_state"][:, 6]).max() > 1e-3


def test_config_errors():
    with pytest.raises(ValueError, match="position_embedding_type"):
        clip_text.clip_text_from_reference({**clip_text.SD_V1_TEXT_CONFIG, "position_embedding_type": "rotary"})
    with pytest.raises(ValueError, match="hidden_act"):
        clip_text.clip_text_from_reference({**clip_text.SD_V1_TEXT_CONFIG, "hidden_act": "relu"})
    with pytest.raises(ValueError, match="model_type"):
        clip_text.clip_text_from_reference({"model_type": "clip_vision_model"})
    with pytest.raises(ValueError, match="layer_idx"):
        clip_text.clip_text_from_reference(clip_text.SD_V1_TEXT_CONFIG, layer="hidden")


def test_frozen_clip_embedder_params(compvis_fixtures):
    params = {"version": "tiny-random-clip-text", "device": "cpu", "max_length": 77}
    config = json.loads((compvis_fixtures / "clip_text_config.json").read_text())
    module = clip_text.frozen_clip_embedder_from_reference(params, config)
    assert (module.hidden_size, module.num_hidden_layers, module.layer) == (64, 2, "last")
    with pytest.raises(ValueError, match="text_config"):
        clip_text.frozen_clip_embedder_from_reference(params)
    sd_v1 = clip_text.frozen_clip_embedder_from_reference({"version": "openai/clip-vit-large-patch14"})
    assert (sd_v1.hidden_size, sd_v1.vocab_size) == (768, 49408)
    with pytest.raises(ValueError, match="unknown FrozenCLIPEmbedder params"):
        clip_text.frozen_clip_embedder_from_reference({"n_repeat": 2})
