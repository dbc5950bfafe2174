"""LDM's BERT-like TransformerEmbedder against the reference fixture, and at other sizes."""
import jax
import numpy as np
import pytest
import yaml
from safetensors.numpy import load_file

from ldm_jax.convert import compvis
from ldm_jax.convert.state_dict import expected_keys, load_params
from ldm_jax.models.abstract import abstract_module_params
from ldm_jax.models import bert_embedder
from tests.conftest import assert_matches_reference


def _reference_params(fixtures):
    return yaml.safe_load((fixtures / "bert_embedder.yaml").read_text())["model"]["params"]


def test_matches_reference_fixture(compvis_fixtures):
    module = bert_embedder.bert_embedder_from_reference(_reference_params(compvis_fixtures))
    state_dict = compvis.component_state_dict("bert_embedder", load_file(compvis_fixtures / "bert_embedder.safetensors"))
    params = load_params(abstract_module_params(module, *bert_embedder.example_inputs(module)), state_dict)
    arrays = np.load(compvis_fixtures / "bert_embedder.npz")
    out = jax.jit(module.apply)({"params": params}, arrays["tokens"])
    assert_matches_reference(out, arrays["embeddings"], "embeddings")


def test_key_layout_is_the_reference_one(compvis_fixtures):
    module = bert_embedder.bert_embedder_from_reference(_reference_params(compvis_fixtures))
    keys = set(expected_keys(abstract_module_params(module, *bert_embedder.example_inputs(module))))
    reference = set(load_file(compvis_fixtures / "bert_embedder.safetensors"))
    assert keys == reference - {"transformer.to_logits.weight", "transformer.to_logits.bias"}
    assert "transformer.attn_layers.layers.3.1.net.0.0.weight" in keys  # feed-forward of the second layer


def test_other_sizes_build_and_attend_bidirectionally():
    # BERTEmbedder's params (tokenizer switch, dropout) are accepted; 3 layers, another width and vocab.
    module = bert_embedder.bert_embedder_from_reference(
        {"n_embed": 48, "n_layer": 3, "vocab_size": 100, "max_seq_len": 16, "use_tokenizer": True,
         "embedding_dropout": 0.0, "device": "cpu"})
    tokens = np.arange(2 * 16).reshape(2, 16) % 100
    variables = module.init(jax.random.key(1), tokens)
    entries = variables["params"]["transformer"]["attn_layers"]
    assert {k.split(":")[1] for k in entries} == {str(i) for i in range(6)}  # (attention, feed-forward) x 3
    apply = jax.jit(module.apply)
    out = apply(variables, tokens)
    assert out.shape == (2, 16, 48)
    # The final LayerNorm (unit scale, zero bias at init) normalises every token.
    np.testing.assert_allclose(out.mean(-1), 0.0, atol=1e-5)
    np.testing.assert_allclose(out.std(-1), 1.0, atol=1e-3)
    # An encoder, not a causal model: changing the last token changes the first position's output.
    changed = tokens.copy()
    changed[:, -1] = (changed[:, -1] + 1) % 100
    assert np.abs(apply(variables, changed)[:, 0] - out[:, 0]).max() > 1e-4
    # Shorter sequences use the first positions of the table.
    assert apply(variables, tokens[:, :5]).shape == (2, 5, 48)


def test_rejects_unknown_params_and_overlong_inputs():
    with pytest.raises(ValueError, match="unknown.*heads"):
        bert_embedder.bert_embedder_from_reference({"n_embed": 32, "n_layer": 1, "heads": 4})
    with pytest.raises(ValueError, match="n_layer"):
        bert_embedder.bert_embedder_from_reference({"n_embed": 32})
    module = bert_embedder.TransformerEmbedder(n_embed=32, n_layer=1, vocab_size=10, max_seq_len=4)
    with pytest.raises(ValueError, match="max_seq_len"):
        module.init(jax.random.key(0), np.zeros((1, 5), np.int32))
