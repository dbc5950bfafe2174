"""VQModel (VQModelInterface semantics) and VectorQuantizer against the reference fixture `ae_vq`."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import yaml
from safetensors.numpy import load_file

from ldm_jax.convert import compvis, state_dict
from ldm_jax.models.abstract import abstract_module_params
from ldm_jax.models.autoencoder import example_inputs, vq_from_reference
from ldm_jax.models.quantizer import VectorQuantizer
from tests.conftest import assert_matches_reference, nchw_to_nhwc


@pytest.fixture(scope="module")
def ae_vq(compvis_fixtures):
    params = yaml.safe_load((compvis_fixtures / "ae_vq.yaml").read_text())["model"]["params"]
    ref = dict(np.load(compvis_fixtures / "ae_vq.npz"))
    model = vq_from_reference(params)
    weights = load_file(str(compvis_fixtures / "ae_vq.safetensors"))
    variables = {"params": state_dict.load_params(
        abstract_module_params(model, *example_inputs(model)), weights, source="ae_vq.safetensors")}

    @jax.jit
    def run(x, indices_bhw):
        def outputs(m, x, indices_bhw):
            h = m.encode(x)
            z_q, emb_loss, info = m.quantize_with_info(h)
            z_q_again, indices_bhw_out = m.quantize(h)
            dec, forward_loss, forward_info = m(x)
            return {"encoder_out": m.encoder(x), "h": h, "z_q": z_q, "emb_loss": emb_loss,
                    "indices": info.indices, "perplexity": info.perplexity, "indices_bhw": indices_bhw_out,
                    "z_q_again": z_q_again,
                    "codebook_entry_from_indices": m.quantizer.get_codebook_entry(
                        info.indices, (*h.shape[:-1], m.embed_dim)),
                    "decoded_from_h": m.decode(h), "decoded_from_zq": m.decode(z_q, force_not_quantize=True),
                    "decoded_from_h_not_quantized": m.decode(h, force_not_quantize=True),
                    "decoded_from_code": m.decode_code(indices_bhw), "forward_dec": dec,
                    "forward_loss": forward_loss, "forward_indices": forward_info.indices}
        return model.apply(variables, x, indices_bhw, method=outputs)

    out = jax.device_get(run(nchw_to_nhwc(ref["x"]), ref["indices_bhw"].astype(np.int32)))
    return model, variables, out, ref


@pytest.mark.parametrize("name", ["encoder_out", "h", "emb_loss", "codebook_entry_from_indices",
                                  "decoded_from_h", "decoded_from_zq", "decoded_from_h_not_quantized"])
def test_matches_reference(ae_vq, name):
    _, _, out, ref = ae_vq
    assert_matches_reference(out[name], nchw_to_nhwc(ref[name]), name)


def test_quantisation_matches_reference_exactly(ae_vq):
    _, _, out, ref = ae_vq
    np.testing.assert_array_equal(out["indices"], ref["indices"])
    np.testing.assert_array_equal(out["indices_bhw"], ref["indices_bhw"])
    np.testing.assert_allclose(out["z_q"], nchw_to_nhwc(ref["z_q"]), rtol=0, atol=1e-5)
    np.testing.assert_array_equal(out["z_q_again"], out["z_q"])


def test_forward_and_decode_code_agree_with_decoding_z_q(ae_vq):
    _, _, out, ref = ae_vq
    np.testing.assert_array_equal(out["forward_indices"], out["indices"])
    np.testing.assert_allclose(out["forward_loss"], out["emb_loss"], rtol=1e-6)
    for name in ("forward_dec", "decoded_from_code"):
        assert_matches_reference(out[name], nchw_to_nhwc(ref["decoded_from_zq"]), name)
    # 94 distinct codes are used; perplexity is exp(entropy) of their usage.
    assert 1.0 < float(out["perplexity"]) <= 94.0


def test_accepts_the_vqmodel_param_set(ae_vq, compvis_fixtures, tmp_path):
    model, _, out, _ = ae_vq
    params = yaml.safe_load((compvis_fixtures / "ae_vq.yaml").read_text())["model"]["params"]
    used = np.unique(out["indices"]).astype(np.int64)
    np.save(tmp_path / "used.npy", used)
    params.update(ckpt_path=None, ignore_keys=[], image_key="image", colorize_nlabels=None,
                  batch_resize_range=None, scheduler_config=None, lr_g_factor=1.0,
                  remap=str(tmp_path / "used.npy"), sane_index_shape=True, use_ema=False)
    remapped = vq_from_reference(params)
    assert remapped.remap == tuple(used.tolist()) and remapped.sane_index_shape
    weights = dict(load_file(str(compvis_fixtures / "ae_vq.safetensors")), **{"quantize.used": used})
    state_dict.load_params(abstract_module_params(remapped, *example_inputs(remapped)),
                           compvis.component_state_dict("vq", weights))
    with pytest.raises(ValueError, match="unknown VQModel param"):
        vq_from_reference(dict(params, beta=0.5))


def random_quantizer_inputs(n_e=16, e_dim=3):
    quantizer = VectorQuantizer(n_e, e_dim)
    z = jax.random.normal(jax.random.key(0), (2, 4, 4, e_dim))
    params = nn.unbox(quantizer.init(jax.random.key(1), z))
    return quantizer, params, z


def test_remap_round_trips():
    quantizer, params, z = random_quantizer_inputs()
    z_q, _, info = quantizer.apply(params, z)
    raw = np.asarray(info.indices)
    # Every chosen code is "used", plus unused ones, in a shuffled order.
    used = np.random.default_rng(0).permutation(np.union1d(raw, [0, 15]))
    remapping = VectorQuantizer(16, 3, remap=tuple(used.tolist()), sane_index_shape=True)
    z_q_remapped, _, remapped_info = remapping.apply(params, z, jax.random.key(2))
    remapped = np.asarray(remapped_info.indices)
    assert remapped.shape == (2, 4, 4) and remapped.max() < len(used)
    np.testing.assert_array_equal(used[remapped].reshape(-1), raw)
    np.testing.assert_array_equal(z_q_remapped, z_q)
    entries = remapping.apply(params, remapped_info.indices, (2, 4, 4, 3), method="get_codebook_entry")
    np.testing.assert_array_equal(entries, params["params"]["embedding"]["embedding"][raw].reshape(2, 4, 4, 3))
    np.testing.assert_allclose(entries, z_q, atol=1e-6)


@pytest.mark.parametrize("unknown_index", ["extra", 7, "random"])
def test_remap_unknown_codes(unknown_index):
    quantizer, params, z = random_quantizer_inputs()
    raw = np.asarray(quantizer.apply(params, z)[2].indices)
    codes = np.unique(raw)
    known = codes[: len(codes) // 2]
    remapping = VectorQuantizer(16, 3, remap=tuple(known.tolist()), unknown_index=unknown_index)
    if unknown_index == "random":
        with pytest.raises(ValueError, match="rng"):
            remapping.apply(params, z)
    indices = np.asarray(remapping.apply(params, z, jax.random.key(5))[2].indices)
    is_known = np.isin(raw, known)
    np.testing.assert_array_equal(known[indices[is_known]], raw[is_known])
    if unknown_index == "extra":
        assert remapping.re_embed == len(known) + 1
        assert (indices[~is_known] == len(known)).all()
        # The extra index reads back as the first used code.
        entry = remapping.apply(params, jnp.array([len(known)]), method="get_codebook_entry")
        np.testing.assert_array_equal(entry[0], params["params"]["embedding"]["embedding"][known[0]])
    elif unknown_index == 7:
        assert (indices[~is_known] == 7).all()
    else:
        assert ((indices[~is_known] >= 0) & (indices[~is_known] < len(known))).all()


@pytest.mark.parametrize("legacy", [True, False])
def test_loss_weighting_and_straight_through_gradients(legacy):
    quantizer = VectorQuantizer(16, 3, beta=0.25, legacy=legacy)
    _, params, z = random_quantizer_inputs()

    def loss_and_sum(params, z):
        z_q, loss, _ = quantizer.apply(params, z)
        return loss, z_q

    (loss, z_q), (grad_params, grad_z) = jax.value_and_grad(loss_and_sum, argnums=(0, 1), has_aux=True)(params, z)
    mse = float(np.mean((np.asarray(z_q) - np.asarray(z)) ** 2))
    np.testing.assert_allclose(loss, 1.25 * mse, rtol=1e-5)
    # d loss / d z: the commitment term (weight 1 if legacy else beta) pulls z towards the code.
    commitment_weight = 1.0 if legacy else 0.25
    np.testing.assert_allclose(grad_z, commitment_weight * 2 * (z - z_q) / z.size, atol=1e-7)
    codebook_grad = grad_params["params"]["embedding"]["embedding"]
    assert float(np.abs(codebook_grad).sum()) > 0
    # Straight-through: z_q's gradient flows to z unchanged.
    grad_through = jax.grad(lambda z: jnp.sum(quantizer.apply(params, z)[0] * 3.0))(z)
    np.testing.assert_allclose(grad_through, 3.0 * np.ones(z.shape), atol=0)
