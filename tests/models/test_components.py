"""components.build / example_inputs / count_params against the reference fixtures' weights."""
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import yaml

from ldm_jax.convert import compvis, state_dict
from ldm_jax.models import components
from tests.conftest import case_weights

# fixture case -> component kind
CASES = {"ae_kl": "autoencoder_kl", "ae_vq": "vq", "unet_crossattn": "unet", "unet_class": "unet",
         "unet_sd2": "unet", "bert_embedder": "bert_embedder"}


def _fixture(folder, case):
    params = yaml.safe_load((folder / f"{case}.yaml").read_text())["model"]["params"]
    weights = case_weights(folder, case)
    return params, compvis.component_state_dict(CASES[case], weights)


@pytest.mark.parametrize("case", sorted(CASES))
def test_count_params_equals_the_reference_weights(compvis_fixtures, case):
    kind = CASES[case]
    params, weights = _fixture(compvis_fixtures, case)
    expected = sum(int(np.prod(value.shape)) for value in weights.values())
    assert components.count_params({"kind": kind, "params": params}) == expected


@pytest.mark.parametrize("case", ["ae_vq", "unet_class"])
def test_built_module_loads_the_reference_weights(compvis_fixtures, case):
    params, weights = _fixture(compvis_fixtures, case)
    component = {"kind": CASES[case], "params": params}
    loaded = state_dict.load_params(components.abstract_params(component), weights, source=case)
    assert sum(int(np.prod(v.shape)) for v in _leaves(loaded)) == components.count_params(component)


def _leaves(tree):
    for value in tree.values():
        yield from (_leaves(value) if isinstance(value, dict) else (value,))


def test_example_inputs_are_batch_one():
    module = components.build({"kind": "class_embedder", "params": {"embed_dim": 8, "n_classes": 3}})
    (labels,) = components.example_inputs("class_embedder", module)
    assert labels.shape == (1,)
    assert components.count_params({"kind": "class_embedder", "params": {"embed_dim": 8, "n_classes": 3}}) == 24


def test_build_accepts_config_dicts_and_module_options():
    component = ml_collections.ConfigDict({"kind": "spatial_rescaler",
                                           "params": {"n_stages": 1, "in_channels": 5, "out_channels": 2}})
    assert components.count_params(component) == 10
    unet = components.build({"kind": "unet", "params": {"image_size": 8,
        "in_channels": 4, "out_channels": 4, "model_channels": 32, "attention_resolutions": [2],
        "num_res_blocks": 1, "channel_mult": [1, 2], "num_heads": 2}}, dtype=jnp.bfloat16)
    assert unet.dtype == jnp.bfloat16


@pytest.mark.parametrize("component, message", [
    ({"kind": "gan", "params": {}}, "unknown component kind 'gan'"),
    ({"kind": "unet"}, "missing \\['params'\\]"),
    ({"kind": "class_embedder", "params": {"embed_dim": 4}, "extra": 1}, "unexpected \\['extra'\\]"),
    ({"kind": "class_embedder", "params": {"embed_dim": 4, "n_clases": 3}}, "class_embedder: .*n_clases"),
])
def test_bad_components_are_named(component, message):
    with pytest.raises(ValueError, match=message):
        components.build(component)
