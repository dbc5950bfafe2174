"""ClassEmbedder and SpatialRescaler against torch (nn.Embedding, F.interpolate, Conv2d)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from ldm_jax.convert.state_dict import load_params, to_state_dict
from ldm_jax.models.abstract import abstract_module_params
from ldm_jax.models import conditioners
from tests.conftest import assert_matches_reference, nchw_to_nhwc


def test_class_embedder_rows_and_null_class():
    module = conditioners.class_embedder_from_reference({"embed_dim": 16, "n_classes": 11, "key": "class_label"})
    table = np.random.default_rng(0).normal(size=(11, 16)).astype(np.float32)
    abstract = abstract_module_params(module, *conditioners.example_inputs(module))
    params = load_params(abstract, {"embedding.weight": table})
    labels = np.array([3, 0, 10])
    out = module.apply({"params": params}, labels)
    assert out.shape == (3, 1, 16)
    np.testing.assert_array_equal(out[:, 0], table[labels])
    uncond = module.apply({"params": params}, conditioners.unconditional_class_labels(module, 2))
    np.testing.assert_array_equal(uncond[:, 0], np.stack([table[10]] * 2))
    assert module.key == "class_label"


def test_class_embedder_label_dropout():
    module = conditioners.ClassEmbedder(embed_dim=4, n_classes=6, ucg_rate=0.5)
    variables = module.init(jax.random.key(0), *conditioners.example_inputs(module))
    labels = jnp.arange(1000) % 5
    table = np.asarray(variables["params"]["embedding"]["embedding"].value)
    no_drop = module.apply(variables, labels)
    np.testing.assert_array_equal(no_drop[:, 0], table[labels])
    dropped = module.apply(variables, labels, ucg_rng=jax.random.key(1))
    is_null = np.all(np.asarray(dropped[:, 0]) == table[5], axis=-1)
    assert 0.4 < is_null.mean() < 0.6
    np.testing.assert_array_equal(np.asarray(dropped)[~is_null, 0], table[np.asarray(labels)[~is_null]])


def test_class_embedder_params_errors():
    with pytest.raises(ValueError, match="embed_dim"):
        conditioners.class_embedder_from_reference({"n_classes": 10})
    with pytest.raises(ValueError, match="unknown ClassEmbedder params"):
        conditioners.class_embedder_from_reference({"embed_dim": 4, "classes": 10})


@pytest.mark.parametrize("method", ["nearest", "bilinear", "bicubic", "area"])
@pytest.mark.parametrize("size", [(8, 8), (7, 13)])
@pytest.mark.parametrize("multiplier", [0.5, 0.3, 1.7])
def test_interpolate_matches_torch(method, size, multiplier):
    x = np.random.default_rng(1).normal(size=(2, 3, *size)).astype(np.float32)
    expected = torch.nn.functional.interpolate(torch.from_numpy(x), scale_factor=multiplier, mode=method).numpy()
    out = conditioners.interpolate(jnp.asarray(nchw_to_nhwc(x)), multiplier, method)
    assert_matches_reference(out, nchw_to_nhwc(expected), f"{method} x{multiplier} of {size}", rel=1e-5)


def test_linear_and_trilinear_match_torch():
    rng = np.random.default_rng(2)
    for method, shape in (("linear", (1, 2, 11)), ("trilinear", (1, 2, 5, 6, 7))):
        x = rng.normal(size=shape).astype(np.float32)
        expected = torch.nn.functional.interpolate(torch.from_numpy(x), scale_factor=0.5, mode=method).numpy()
        out = conditioners.interpolate(jnp.asarray(np.moveaxis(x, 1, -1)), 0.5, method)
        assert_matches_reference(out, np.moveaxis(expected, 1, -1), method, rel=1e-5)


@pytest.mark.parametrize("bias", [False, True])
def test_spatial_rescaler_matches_torch(bias):
    params = {"n_stages": 2, "method": "bilinear", "multiplier": 0.5, "in_channels": 3, "out_channels": 5,
              "bias": bias}
    module = conditioners.spatial_rescaler_from_reference(params)
    torch.manual_seed(0)
    mapper = torch.nn.Conv2d(3, 5, 1, bias=bias)
    state_dict = {f"channel_mapper.{k}": v.detach().numpy() for k, v in mapper.state_dict().items()}
    abstract = abstract_module_params(module, *conditioners.example_inputs(module))
    variables = {"params": load_params(abstract, state_dict)}
    assert set(to_state_dict(variables["params"])) == set(state_dict)
    x = np.random.default_rng(3).normal(size=(2, 3, 30, 20)).astype(np.float32)
    with torch.no_grad():
        h = torch.from_numpy(x)
        for _ in range(2):
            h = torch.nn.functional.interpolate(h, scale_factor=0.5, mode="bilinear")
        expected = mapper(h).numpy()
    out = jax.jit(module.apply)(variables, nchw_to_nhwc(x))
    assert out.shape == (2, 7, 5, 5)
    assert_matches_reference(out, nchw_to_nhwc(expected), "spatial rescaler", rel=1e-5)


def test_spatial_rescaler_without_channel_mapper_has_no_params():
    module = conditioners.SpatialRescaler(n_stages=3, method="area", multiplier=0.5, in_channels=4)
    (x,) = conditioners.example_inputs(module)
    assert module.init(jax.random.key(0), x) == {}
    image = np.random.default_rng(4).normal(size=(1, 16, 16, 4)).astype(np.float32)
    out = module.apply({}, image)
    # Three area halvings average 8x8 blocks.
    np.testing.assert_allclose(out, image.reshape(1, 2, 8, 2, 8, 4).mean((2, 4)), atol=1e-5)


def test_spatial_rescaler_errors():
    with pytest.raises(ValueError, match="method"):
        conditioners.spatial_rescaler_from_reference({"method": "lanczos"})
    with pytest.raises(ValueError, match="unknown SpatialRescaler params"):
        conditioners.spatial_rescaler_from_reference({"antialias": True})
    with pytest.raises(ValueError, match="spatial axes"):
        conditioners.interpolate(jnp.zeros((1, 4, 4, 3)), 0.5, "linear")
    module = conditioners.SpatialRescaler(in_channels=3, out_channels=2)
    with pytest.raises(ValueError, match="3 input channels"):
        module.init(jax.random.key(0), jnp.zeros((1, 8, 8, 4)))
