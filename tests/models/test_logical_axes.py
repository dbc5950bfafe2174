"""Every parameter of every model carries logical axis names, so configs can shard any of them."""
import flax.linen as nn
import jax
import pytest
from flax import traverse_util

from ldm_jax import zoo
from ldm_jax.models import components

SMALL_COMPONENTS = {
    "autoencoder_kl": {"embed_dim": 4, "ddconfig": dict(
        double_z=True, z_channels=4, resolution=32, in_channels=3, out_ch=3, ch=32, ch_mult=[1, 2],
        num_res_blocks=1, attn_resolutions=[16], dropout=0.0)},
    "vq": {"embed_dim": 3, "n_embed": 16, "ddconfig": dict(
        double_z=False, z_channels=3, resolution=32, in_channels=3, out_ch=3, ch=32, ch_mult=[1, 2],
        num_res_blocks=1, attn_resolutions=[16], dropout=0.0)},
    "unet": dict(image_size=8, in_channels=4, out_channels=4, model_channels=32, attention_resolutions=[2],
                 num_res_blocks=1, channel_mult=[1, 2], num_heads=2, use_spatial_transformer=True,
                 context_dim=16, num_classes=3),
    "bert_embedder": dict(n_embed=32, n_layer=1, vocab_size=50, max_seq_len=8),
    "clip_text": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                      max_position_embeddings=8, vocab_size=50, hidden_act="quick_gelu", layer_norm_eps=1e-5),
    "open_clip_text": dict(zoo.open_clip_vit_h14()["params"], width=32, layers=2, heads=2, embed_dim=16),
    "class_embedder": dict(embed_dim=8, n_classes=4),
    "spatial_rescaler": dict(n_stages=1, in_channels=5, out_channels=3),
}


@pytest.mark.parametrize("kind", sorted(SMALL_COMPONENTS))
def test_every_parameter_has_logical_axis_names(kind):
    module = components.build({"kind": kind, "params": SMALL_COMPONENTS[kind]})
    inputs = components.example_inputs(kind, module)
    variables = jax.eval_shape(lambda: module.init(jax.random.key(0), *inputs))
    flat = traverse_util.flatten_dict(variables["params"], is_leaf=lambda _, v: isinstance(v, nn.Partitioned))
    assert flat
    for path, leaf in flat.items():
        assert isinstance(leaf, nn.Partitioned), f"{kind}: {'/'.join(path)} has no logical axis names"
        assert len(leaf.names) == leaf.value.ndim, f"{kind}: {'/'.join(path)} names {leaf.names}"
