"""AutoencoderStage: one jitted step on tiny KL and VQ autoencoders (widths 32, 16x16 images).

States are built from random weights with `state_from_variables` (no compiled `init`), with a
small LPIPS; `init_state` is checked abstractly with `jax.eval_shape`.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from ldm_jax.models import components
from ldm_jax.models.lpips import LPIPS
from ldm_jax.training.autoencoder_stage import (AutoencoderStage, AutoencoderTrainSettings,
                                                default_autoencoder_train_config)

SMALL_LPIPS = LPIPS(widths=(8, 8, 16, 16, 16))
DISC_START = 1
_DD = {"z_channels": 4, "resolution": 16, "in_channels": 3, "out_ch": 3, "ch": 32, "ch_mult": [1, 2],
       "num_res_blocks": 1, "attn_resolutions": [], "dropout": 0.0}


def kl_model(**extra):
    return {"kind": "autoencoder_kl", "params": {
        "embed_dim": 4, "ddconfig": {**_DD, "double_z": True}, **extra,
        "lossconfig": {"target": "ldm.modules.losses.LPIPSWithDiscriminator",
                       "params": {"disc_start": DISC_START, "kl_weight": 1e-6, "disc_weight": 0.5,
                                  "disc_num_layers": 2}}}}


def vq_model(perceptual_weight=1.0):
    return {"kind": "vq", "params": {
        "embed_dim": 4, "n_embed": 16, "ddconfig": {**_DD, "double_z": False},
        "lossconfig": {"target": "taming.modules.losses.vqperceptual.VQLPIPSWithDiscriminator",
                       "params": {"disc_start": DISC_START, "disc_weight": 0.75, "disc_num_layers": 2,
                                  "disc_ndf": 16, "codebook_weight": 1.0,
                                  "perceptual_weight": perceptual_weight}}}}


def make_stage(model, **kwargs):
    return AutoencoderStage(model, learning_rate=1e-4, lpips_module=SMALL_LPIPS,
                            train=AutoencoderTrainSettings(random_lpips=True, log_num_images=2), **kwargs)


def _random(abstract, rng):
    def draw(path, spec):
        leaf = path[-1].key
        if leaf == "scale":
            return (1 + 0.2 * rng.standard_normal(spec.shape)).astype(np.float32)
        if leaf == "bias":
            return (0.1 * rng.standard_normal(spec.shape)).astype(np.float32)
        fan_in = np.prod(spec.shape[:-1]) if leaf == "kernel" else 1
        return (rng.standard_normal(spec.shape) / np.sqrt(fan_in)).astype(np.float32)
    return jax.tree_util.tree_map_with_path(draw, abstract)


def random_state(stage, model, images, seed=0):
    rng = np.random.default_rng(seed)
    disc = nn.unbox(jax.eval_shape(lambda: stage.discriminator.init(jax.random.key(0), images, train=True)))
    stats = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), disc["batch_stats"])
    for layer in stats.values():
        layer["running_var"] = np.ones_like(layer["running_var"])
    lpips = nn.unbox(jax.eval_shape(lambda: SMALL_LPIPS.init(jax.random.key(0), images, images)))["params"]
    lpips = {name: jax.tree.map(np.abs, value) if name.startswith("lin") else value  # non-negative heads,
             for name, value in _random(lpips, rng).items()}                             # as the trained ones
    return stage.state_from_variables({
        "autoencoder": {"params": _random(components.abstract_params(model), rng)},
        "discriminator": {"params": _random(disc["params"], rng), "batch_stats": stats},
        "lpips": {"params": lpips}})


@pytest.fixture(scope="module")
def images():
    return jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (2, 16, 16, 3)), jnp.float32)


@pytest.fixture(scope="module")
def kl(images):
    model = kl_model()
    stage = make_stage(model)
    return stage, random_state(stage, model, images), jax.jit(stage.train_step)


def _changed(a, b):
    return any(not np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


@pytest.mark.slow  # compiles a whole train step on CPU
def test_kl_without_a_gan_term_neither_runs_nor_trains_the_discriminator(images):
    model = kl_model()
    model["params"]["lossconfig"]["params"].update(disc_factor=0.0, perceptual_weight=0.0)
    stage = make_stage(model)
    state = random_state(stage, model, images)
    new_state, metrics = jax.jit(stage.train_step)(state, {"image": images}, jax.random.key(1))
    assert float(metrics["g_loss"]) == 0.0 and float(metrics["grad_norm/discriminator"]) == 0.0
    assert not _changed(state.params["discriminator"], new_state.params["discriminator"])
    assert _changed(state.params["autoencoder"], new_state.params["autoencoder"])


@pytest.mark.slow  # compiles a whole train step on CPU
def test_kl_step_before_and_after_disc_start(kl, images):
    stage, state, step = kl
    batch = {"image": images}
    s1, m1 = step(state, batch, jax.random.key(1))
    assert all(np.isfinite(float(v)) for v in m1.values()), m1
    assert float(m1["loss"]) == float(m1["total_loss"])
    assert {"loss", "total_loss", "logvar", "kl_loss", "nll_loss", "rec_loss", "d_weight", "disc_factor", "g_loss",
            "disc_loss", "logits_real", "logits_fake", "grad_norm/autoencoder", "grad_norm/discriminator",
            "learning_rate/generator", "learning_rate/discriminator"} <= set(m1)
    # before disc_start: no GAN part in the generator loss, a zero discriminator loss
    assert float(m1["disc_factor"]) == 0.0 and float(m1["disc_loss"]) == 0.0
    assert float(m1["total_loss"]) == pytest.approx(float(m1["nll_loss"]) + 1e-6 * float(m1["kl_loss"]), rel=1e-6)
    assert _changed(state.params["autoencoder"], s1.params["autoencoder"])
    jax.tree.map(np.testing.assert_array_equal, s1.params["discriminator"], state.params["discriminator"])
    jax.tree.map(np.testing.assert_array_equal, s1.frozen["lpips"], state.frozen["lpips"])
    assert float(s1.frozen["logvar"]) == 0.0  # the reference does not train logvar without learn_logvar
    stats = s1.frozen["discriminator_batch_stats"]["main:3"]
    assert int(stats["num_batches_tracked"]) == 3  # D(x_rec) in the generator pass, D(x) and D(x_rec) after
    assert int(s1.step) == 1

    s2, m2 = step(s1, batch, jax.random.key(2))
    assert float(m2["disc_factor"]) == 1.0
    assert np.isfinite(float(m2["d_weight"])) and float(m2["d_weight"]) > 0
    assert float(m2["disc_loss"]) > 0
    expected = float(m2["nll_loss"]) + 1e-6 * float(m2["kl_loss"]) + float(m2["d_weight"]) * float(m2["g_loss"])
    assert float(m2["total_loss"]) == pytest.approx(expected, rel=1e-5)
    assert _changed(s1.params["discriminator"], s2.params["discriminator"])
    jax.tree.map(np.testing.assert_array_equal, s2.frozen["lpips"], state.frozen["lpips"])
    assert float(m2["learning_rate/generator"]) == pytest.approx(1e-4)


def test_step_is_deterministic_for_a_given_rng(kl, images):
    _, state, step = kl
    batch = {"image": images}
    a_state, a = step(state, batch, jax.random.key(7))
    b_state, b = step(state, batch, jax.random.key(7))
    _, c = step(state, batch, jax.random.key(8))
    assert {k: float(v) for k, v in a.items()} == {k: float(v) for k, v in b.items()}
    jax.tree.map(np.testing.assert_array_equal, a_state.params, b_state.params)
    assert float(a["kl_loss"]) == float(c["kl_loss"])  # the posterior is the same ...
    assert float(a["nll_loss"]) != float(c["nll_loss"])  # ... its sample is not


@pytest.mark.slow  # compiles a whole train step on CPU
def test_adaptive_weight_matches_explicit_gradients(kl, images):
    """d_weight from the captured last-layer input equals norms of jax.grad through the full forward."""
    stage, state, _ = kl
    disc_weight = stage.loss.disc_weight
    ae_params = state.params["autoencoder"]
    rng = jax.random.key(3)

    @jax.jit
    def both(ae_params, state):
        gen = {"autoencoder": ae_params}
        _, (logs, _, _) = stage.generator_loss(gen, state, images, jnp.asarray(DISC_START), rng)
        perceptual = stage._perceptual(state.frozen, rng)
        discriminate = stage._discriminate(state.params["discriminator"], state.frozen["discriminator_batch_stats"])

        def recon(kernel):
            params = {**ae_params, "decoder": {**ae_params["decoder"], "conv_out": {
                **ae_params["decoder"]["conv_out"], "kernel": kernel}}}
            return stage.reconstruct(params, images, rng)

        def nll(kernel):
            r = recon(kernel)
            rec = jnp.abs(images - r) + perceptual(images, r)[:, None, None, None]
            return jnp.sum(rec) / images.shape[0]  # logvar is 0

        def g(kernel):
            return -jnp.mean(discriminate(recon(kernel))[0])

        kernel = ae_params["decoder"]["conv_out"]["kernel"]
        expected = disc_weight * jnp.linalg.norm(jax.grad(nll)(kernel)) / (
            jnp.linalg.norm(jax.grad(g)(kernel)) + 1e-4)
        return logs["d_weight"], expected, logs["nll_loss"], nll(kernel)

    d_weight, expected, nll_loss, nll_full = both(ae_params, state)
    assert float(nll_loss) == pytest.approx(float(nll_full), rel=1e-5)
    assert float(d_weight) == pytest.approx(float(expected), rel=1e-4)


@pytest.mark.slow  # compiles a whole train step on CPU
def test_vq_step_without_perceptual_term(images):
    """Also the perceptual_weight=0 path: no LPIPS at all (and none needed), a smaller graph to compile."""
    model = vq_model(perceptual_weight=0.0)
    stage = AutoencoderStage(model, learning_rate=1e-4)
    state = random_state(stage, model, images, seed=1)
    assert "lpips" not in state.frozen
    new_state, metrics = jax.jit(stage.train_step)(state, {"image": images}, jax.random.key(4))
    assert all(np.isfinite(float(v)) for v in metrics.values()), metrics
    assert {"quant_loss", "p_loss", "perplexity", "codebook_usage", "d_weight", "disc_loss"} <= set(metrics)
    assert 1.0 <= float(metrics["perplexity"]) <= 16.0
    assert 0.0 < float(metrics["codebook_usage"]) <= 1.0
    assert float(metrics["disc_factor"]) == 0.0
    assert "logvar" not in new_state.params and "logvar" not in new_state.frozen
    assert _changed(state.params["autoencoder"]["quantize"], new_state.params["autoencoder"]["quantize"])
    assert float(metrics["p_loss"]) == 0.0


def test_log_images(kl, images):
    stage, state, _ = kl
    logged = stage.log_images(state, {"image": images}, jax.random.key(5))
    assert set(logged) == {"inputs", "reconstructions", "samples"}
    for value in logged.values():
        assert value.shape == (2, 16, 16, 3)
        assert float(jnp.max(jnp.abs(value))) <= 1.0


def test_init_state_is_traceable_and_matches_the_random_state(kl, images):
    stage, state, _ = kl
    abstract = jax.eval_shape(stage.init_state, jax.random.key(0), {"image": images})
    shapes = lambda tree: jax.tree.map(lambda x: (tuple(x.shape), x.dtype), nn.unbox(tree))  # noqa: E731
    assert shapes(abstract.params) == shapes(state.params)
    assert shapes(abstract.frozen) == shapes(state.frozen)
    assert abstract.ema_params is None


def test_learn_logvar_makes_it_a_parameter(images):
    model = kl_model(learn_logvar=True)
    stage = make_stage(model)
    state = jax.eval_shape(stage.init_state, jax.random.key(0), {"image": images})
    assert state.params["logvar"].shape == () and "logvar" not in state.frozen
    assert "logvar" in jax.tree_util.tree_structure(stage._generator_params(state.params)).__repr__()


def test_from_config_scales_the_learning_rate_and_needs_lpips_weights():
    config = default_autoencoder_train_config()
    config.model = ml_collections.ConfigDict({"first_stage": kl_model()})
    config.data = ml_collections.ConfigDict({"batch_size": 12})
    config.optimizer.accumulate_grad_batches = 2
    with pytest.raises(ValueError, match="lpips_vgg16_weights"):
        AutoencoderStage.from_config(config)
    config.train.random_lpips = True
    stage = AutoencoderStage.from_config(config)
    assert stage.learning_rate == pytest.approx(4.5e-6 * 12 * 2)  # base lr * global batch * accumulation
    assert stage.accumulate == 2


def test_bad_model_configs_are_named():
    with pytest.raises(ValueError, match="VQLPIPSWithDiscriminator"):
        make_stage({**vq_model(), "params": {**vq_model()["params"],
                                              "lossconfig": kl_model()["params"]["lossconfig"]}})
    with pytest.raises(ValueError, match="use_ema"):
        make_stage({**vq_model(), "params": {**vq_model()["params"], "use_ema": True}})
    lpips = nn.unbox(jax.eval_shape(lambda: SMALL_LPIPS.init(jax.random.key(0), *[jnp.zeros((1, 16, 16, 3))] * 2)))
    lpips = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), lpips["params"])
    make_stage(kl_model(), lpips_params=lpips)  # fits
    lpips["lin0"]["model:1"]["kernel"] = np.zeros((1, 1, 9, 1), np.float32)
    del lpips["features:28"]
    with pytest.raises(ValueError, match=r"lin0/model:1/kernel has shape \(1, 1, 9, 1\).*2 missing: features:28/bias"):
        make_stage(kl_model(), lpips_params=lpips)
