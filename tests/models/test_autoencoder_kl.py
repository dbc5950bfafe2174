"""AutoencoderKL, Encoder and Decoder against the reference fixture `ae_kl`, plus other sizes."""
import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import yaml

from ldm_jax.convert import state_dict
from ldm_jax.models.abstract import abstract_module_params
from ldm_jax.models.autoencoder import AutoencoderKL, autoencoder_kl_from_reference, example_inputs
from ldm_jax.models.first_stage import DDConfig
from tests.conftest import assert_matches_reference, case_weights, nchw_to_nhwc


def load_case(fixtures, case):
    params = yaml.safe_load((fixtures / f"{case}.yaml").read_text())["model"]["params"]
    arrays = dict(np.load(fixtures / f"{case}.npz"))
    return params, case_weights(fixtures, case), arrays


@pytest.fixture(scope="module")
def ae_kl(compvis_fixtures):
    params, weights, ref = load_case(compvis_fixtures, "ae_kl")
    model = autoencoder_kl_from_reference(params)
    variables = {"params": state_dict.load_params(
        abstract_module_params(model, *example_inputs(model)), weights, source="ae_kl.safetensors")}

    @jax.jit
    def run(x, noise, rng):
        def outputs(m, x, noise):
            encoder_out = m.encoder(x)
            posterior = m.encode(x)
            sample = posterior.sample_from_noise(noise)
            dec, forward_posterior = m(x)
            sampled_dec, _ = m(x, sample_posterior=True, rng=rng)
            drawn = posterior.sample_from_noise(jax.random.normal(rng, posterior.mean.shape))
            return {"encoder_out": encoder_out, "moments": m.quant_conv(encoder_out),
                    "posterior_mean": posterior.mean, "posterior_logvar": posterior.logvar,
                    "posterior_std": posterior.std, "decoded_mean": m.decode(posterior.mode()),
                    "forward_dec": dec, "posterior_sample": sample, "decoded_sample": m.decode(sample),
                    "kl": posterior.kl(), "forward_mean": forward_posterior.mean,
                    "sampled_dec": sampled_dec, "decoded_drawn": m.decode(drawn)}
        return model.apply(variables, x, noise, method=outputs)

    out = run(nchw_to_nhwc(ref["x"]), nchw_to_nhwc(ref["sample_noise"]), jax.random.key(3))
    return model, variables, jax.device_get(out), ref


@pytest.mark.parametrize("name", ["encoder_out", "moments", "posterior_mean", "posterior_logvar",
                                  "posterior_std", "decoded_mean", "forward_dec", "posterior_sample",
                                  "decoded_sample", "kl"])
def test_matches_reference(ae_kl, name):
    _, _, out, ref = ae_kl
    assert_matches_reference(out[name], nchw_to_nhwc(ref[name]), name)


def test_forward_returns_the_posterior(ae_kl):
    _, _, out, _ = ae_kl
    np.testing.assert_array_equal(out["forward_mean"], out["posterior_mean"])


def test_sampling_draws_from_the_posterior(ae_kl):
    model, variables, out, ref = ae_kl
    np.testing.assert_allclose(out["sampled_dec"], out["decoded_drawn"], atol=1e-5)
    assert not np.allclose(out["sampled_dec"], out["decoded_mean"], atol=1e-3)
    with pytest.raises(ValueError, match="rng"):
        model.apply(variables, nchw_to_nhwc(ref["x"]), sample_posterior=True)


def test_state_dict_round_trip(ae_kl, compvis_fixtures):
    _, variables, _, _ = ae_kl
    weights = case_weights(compvis_fixtures, "ae_kl")
    exported = state_dict.to_state_dict(variables["params"])
    assert sorted(exported) == sorted(weights)
    for key, value in weights.items():
        np.testing.assert_array_equal(exported[key], value, err_msg=key)


def random_params(module, *inputs, seed=0):
    """Random parameters of the fixtures' scale, drawn in numpy: compiling `init` costs far more."""
    rng = np.random.default_rng(seed)
    flat = flax.traverse_util.flatten_dict(abstract_module_params(module, *inputs))

    def draw(path, spec):
        if path[-1] == "kernel":
            fan_in = int(np.prod(spec.shape[:-1]))
            return rng.normal(size=spec.shape) / np.sqrt(fan_in)
        if path[-1] == "scale":
            return 1 + 0.2 * rng.normal(size=spec.shape)
        return 0.1 * rng.normal(size=spec.shape)

    return flax.traverse_util.unflatten_dict(
        {path: jnp.asarray(draw(path, spec), spec.dtype) for path, spec in flat.items()})


OTHER = dict(ch=32, out_ch=2, ch_mult=[1, 2, 2], num_res_blocks=2, attn_resolutions=[8], dropout=0.0,
             in_channels=1, resolution=16, z_channels=3, double_z=True)


def build(attn_type="vanilla", **kwargs):
    ddconfig = dict(OTHER, attn_type=attn_type)
    return autoencoder_kl_from_reference({"embed_dim": 5, "ddconfig": ddconfig, "monitor": "val/rec_loss",
                                          "lossconfig": {"target": "torch.nn.Identity"}}, **kwargs)


@pytest.mark.parametrize("attn_type", ["vanilla", "none"])
def test_other_configuration(attn_type):
    model = build(attn_type)
    assert model.ddconfig.downsampling_factor == 4
    x = jax.random.uniform(jax.random.key(1), (2, 24, 16, 1), minval=-1, maxval=1)
    variables = {"params": random_params(model, *example_inputs(model))}
    keys = set(state_dict.expected_keys(variables["params"]))
    # level 1 changes width 32 -> 64 (nin_shortcut); the decoder has num_res_blocks + 1 blocks per level;
    # attention sits at resolution 8 = level 1, one block per ResnetBlock, plus the mid block.
    assert "encoder.down.1.block.0.nin_shortcut.weight" in keys
    assert "encoder.down.1.block.1.nin_shortcut.weight" not in keys
    assert "decoder.up.0.block.2.conv2.weight" in keys and "decoder.up.0.block.3.conv2.weight" not in keys
    assert "decoder.up.2.upsample.conv.weight" in keys and "decoder.up.0.upsample.conv.weight" not in keys
    assert "encoder.down.2.downsample.conv.weight" not in keys
    attn = {k for k in keys if ".attn" in k and k.endswith("q.weight")}
    if attn_type == "vanilla":
        assert attn == {"encoder.down.1.attn.0.q.weight", "encoder.down.1.attn.1.q.weight",
                        "encoder.mid.attn_1.q.weight", "decoder.mid.attn_1.q.weight",
                        "decoder.up.1.attn.0.q.weight", "decoder.up.1.attn.1.q.weight",
                        "decoder.up.1.attn.2.q.weight"}
    else:
        assert not attn
    assert variables["params"]["quant_conv"]["kernel"].shape == (1, 1, 6, 10)

    dec, posterior = jax.jit(model.apply)(variables, x)
    assert posterior.mean.shape == (2, 6, 4, 5) and posterior.logvar.shape == (2, 6, 4, 5)
    assert dec.shape == (2, 24, 16, 2)
    assert posterior.kl().shape == (2,)
    assert np.isfinite(np.asarray(dec)).all()


def test_remat_and_bfloat16_match_float32():
    config = DDConfig.from_reference(dict(OTHER, ch_mult=[1, 2], num_res_blocks=1))
    encoder = config.encoder()
    x = jax.random.uniform(jax.random.key(1), (1, 8, 8, 1), minval=-1, maxval=1)
    params = {"params": random_params(encoder, x)}
    reference = jax.jit(encoder.apply)(params, x)
    rematted = jax.jit(config.encoder(remat=True).apply)(params, x)
    np.testing.assert_allclose(rematted, reference, atol=1e-5)
    half = jax.jit(config.encoder(dtype=jnp.bfloat16).apply)(params, x)
    assert half.dtype == jnp.bfloat16
    scale = float(np.abs(reference).max())
    assert float(np.abs(np.asarray(half, np.float32) - reference).max()) < 0.1 * scale


def test_reference_params_are_validated():
    with pytest.raises(ValueError, match="unknown AutoencoderKL param"):
        autoencoder_kl_from_reference({"embed_dim": 4, "ddconfig": OTHER, "n_embed": 3})
    with pytest.raises(ValueError, match="unknown ddconfig param"):
        autoencoder_kl_from_reference({"embed_dim": 4, "ddconfig": dict(OTHER, chmult=[1])})
    with pytest.raises(ValueError, match="attn_type"):
        DDConfig.from_reference(dict(OTHER, use_linear_attn=True))
    with pytest.raises(ValueError, match="double_z"):
        model = AutoencoderKL(DDConfig.from_reference(dict(OTHER, double_z=False)), 3)
        model.init(jax.random.key(0), *example_inputs(model))


def test_num_groups_lets_narrow_models_normalise_groups_of_channels():
    ddconfig = {"double_z": True, "z_channels": 3, "resolution": 16, "in_channels": 3, "out_ch": 3, "ch": 16,
                "ch_mult": [1, 2], "num_res_blocks": 1, "attn_resolutions": [8], "dropout": 0.0}
    x = jax.random.normal(jax.random.key(0), (2, 16, 16, 3))
    with pytest.raises(ValueError, match="16 channels do not split into 32 groups"):
        autoencoder_kl_from_reference({"ddconfig": ddconfig, "embed_dim": 3}).init(jax.random.key(1), x)
    model = autoencoder_kl_from_reference({"ddconfig": {**ddconfig, "num_groups": 8}, "embed_dim": 3})
    variables = model.init(jax.random.key(1), x)
    posterior = model.apply(variables, x, method="encode")
    assert posterior.mean.shape == (2, 8, 8, 3)
    assert model.apply(variables, posterior.mode(), method="decode").shape == x.shape
    assert DDConfig.from_reference({**ddconfig, "num_groups": 8}).num_groups == 8
