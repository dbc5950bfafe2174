"""The first-stage losses against a torch re-statement of the reference forward passes.

Both sides get the same toy pieces: features h -> last conv W (+ bias) -> reconstructions, a
perceptual term mean((x - y)^2) per image, a one-conv discriminator and a Gaussian posterior, so
the formulas, `adopt_weight`, the adaptive weight (torch.autograd.grad of two losses w.r.t. the last
layer) and the gradients of the total loss are compared exactly.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ldm_jax import zoo
from ldm_jax.models.distributions import DiagonalGaussian
from ldm_jax.training import autoencoder_loss as al

torch = pytest.importorskip("torch")
F = torch.nn.functional


def _toy(seed=0, batch=2, size=8):
    rng = np.random.default_rng(seed)
    return {"x": rng.uniform(-1, 1, (batch, size, size, 3)).astype(np.float32),
            "h": rng.standard_normal((batch, size, size, 4)).astype(np.float32),
            "W": (0.3 * rng.standard_normal((3, 3, 4, 3))).astype(np.float32),
            "b": (0.1 * rng.standard_normal(3)).astype(np.float32),
            "Wd": (0.2 * rng.standard_normal((4, 4, 3, 1))).astype(np.float32),
            "moments": rng.standard_normal((batch, 2, 2, 8)).astype(np.float32),
            "weights": rng.uniform(0.5, 1.5, (batch, size, size, 3)).astype(np.float32)}


# -- the JAX side ------------------------------------------------------------------------------------

def _conv(x, kernel, padding):
    return jax.lax.conv_general_dilated(x, kernel, (1, 1), padding, dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                        precision="highest")


def _jax_pieces(toy):
    reconstruct = lambda W, h=None: _conv(toy["h"] if h is None else h, W, [(1, 1), (1, 1)]) + toy["b"]  # noqa: E731
    perceptual = lambda a, b: jnp.mean(jnp.square(a - b), axis=(1, 2, 3))  # noqa: E731
    discriminate = lambda images: (_conv(images, toy["Wd"], [(1, 1), (1, 1)]), {"calls": 1})  # noqa: E731
    return reconstruct, perceptual, discriminate


# -- the torch side: the reference forward, restated ---------------------------------------------------

def _t(x):
    return torch.tensor(np.moveaxis(x, -1, 1).copy() if x.ndim == 4 else x)


def _t_kernel(kernel):
    return torch.tensor(np.transpose(kernel, (3, 2, 0, 1)).copy())


def _torch_generator(toy, kind, *, disc_start, global_step, disc_factor=1.0, disc_weight=0.5, kl_weight=1e-2,
                     perceptual_weight=1.0, logvar=0.3, codebook_loss=0.7, codebook_weight=1.0, pixel="l1",
                     weights=None):
    x, h = _t(toy["x"]), _t(toy["h"]).requires_grad_()
    W = _t_kernel(toy["W"]).requires_grad_()
    rec = F.conv2d(h, W, torch.tensor(toy["b"]), padding=1)
    diff = (x - rec).abs() if pixel == "l1" else (x - rec) ** 2
    p_loss = ((x - rec) ** 2).mean([1, 2, 3], keepdim=True)
    rec_loss = diff + perceptual_weight * p_loss
    logits_fake = F.conv2d(rec, _t_kernel(toy["Wd"]), padding=1)
    g_loss = -torch.mean(logits_fake)
    if kind == "kl":
        lv = torch.tensor(logvar)
        nll = rec_loss / torch.exp(lv) + lv
        weighted = nll if weights is None else _t(weights) * nll
        weighted_nll = torch.sum(weighted) / weighted.shape[0]
        nll_loss = torch.sum(nll) / nll.shape[0]
        moments = _t(toy["moments"])
        mean, lvar = torch.chunk(moments, 2, dim=1)
        lvar = torch.clamp(lvar, -30.0, 20.0)
        kl = 0.5 * torch.sum(mean ** 2 + torch.exp(lvar) - 1.0 - lvar, dim=[1, 2, 3])
        kl_loss = torch.sum(kl) / kl.shape[0]
    else:
        nll_loss = torch.mean(rec_loss)
    if kind == "vq" or disc_factor > 0:
        nll_grads = torch.autograd.grad(nll_loss, W, retain_graph=True)[0]
        g_grads = torch.autograd.grad(g_loss, W, retain_graph=True)[0]
        d_weight = torch.norm(nll_grads) / (torch.norm(g_grads) + 1e-4)
        d_weight = torch.clamp(d_weight, 0.0, 1e4).detach() * disc_weight
    else:
        d_weight = torch.tensor(0.0)
    factor = disc_factor if global_step >= disc_start else 0.0
    if kind == "kl":
        loss = weighted_nll + kl_weight * kl_loss + d_weight * factor * g_loss
        logs = {"kl_loss": kl_loss}
    else:
        loss = nll_loss + d_weight * factor * g_loss + codebook_weight * torch.tensor(codebook_loss)
        logs = {"p_loss": p_loss.mean()}
    loss.backward()
    logs.update(total_loss=loss, nll_loss=nll_loss, rec_loss=rec_loss.mean(), d_weight=d_weight,
                g_loss=g_loss, disc_factor=torch.tensor(factor))
    logs = {key: float(value.detach()) for key, value in logs.items()}
    return logs, np.transpose(W.grad.numpy(), (2, 3, 1, 0)), np.moveaxis(h.grad.numpy(), 1, -1)


def _jax_generator(toy, loss, kind, global_step, logvar=0.3, codebook_loss=0.7, weights=None):
    _, perceptual, discriminate = _jax_pieces(toy)

    def total(W, h):
        reconstruct = lambda kernel: _jax_pieces(toy)[0](kernel, h)  # noqa: E731
        common = dict(perceptual=perceptual, discriminate=discriminate, global_step=jnp.asarray(global_step))
        if kind == "kl":
            posterior = DiagonalGaussian.from_moments(jnp.asarray(toy["moments"]))
            value, logs, state = loss.generator_loss(toy["x"], reconstruct, W, posterior, logvar=jnp.float32(logvar),
                                                     weights=weights, **common)
        else:
            value, logs, state = loss.generator_loss(toy["x"], reconstruct, W, jnp.float32(codebook_loss), **common)
        # The discriminator's state comes back out; with disc_factor 0 (KL) the discriminator is not run.
        assert state == ({"calls": 1} if kind == "vq" or loss.disc_factor > 0 else None)
        return value, logs

    (value, logs), (grad_W, grad_h) = jax.jit(jax.value_and_grad(total, argnums=(0, 1), has_aux=True))(
        toy["W"], toy["h"])
    return {key: float(v) for key, v in logs.items()}, np.asarray(grad_W), np.asarray(grad_h)


def _compare(ours, theirs, names):
    for name in names:
        np.testing.assert_allclose(ours[name], theirs[name], rtol=2e-5, atol=1e-6, err_msg=name)


@pytest.mark.parametrize("global_step", [0, 5])
def test_kl_generator_loss_matches_reference(global_step):
    toy = _toy()
    loss = al.LPIPSWithDiscriminator(disc_start=3, kl_weight=1e-2, disc_weight=0.5)
    ours, grad_W, grad_h = _jax_generator(toy, loss, "kl", global_step)
    theirs, ref_W, ref_h = _torch_generator(toy, "kl", disc_start=3, global_step=global_step)
    _compare(ours, theirs, ["total_loss", "kl_loss", "nll_loss", "rec_loss", "d_weight", "g_loss", "disc_factor"])
    np.testing.assert_allclose(grad_W, ref_W, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(grad_h, ref_h, rtol=1e-4, atol=1e-6)
    assert ours["logvar"] == pytest.approx(0.3)
    assert ours["d_weight"] > 0  # computed before disc_start too, as the reference does
    if global_step < 3:  # no GAN part before disc_start
        assert ours["disc_factor"] == 0.0
        assert ours["total_loss"] == pytest.approx(ours["nll_loss"] + 1e-2 * ours["kl_loss"], rel=1e-6)


def test_kl_pixel_weights_and_zero_disc_factor():
    toy = _toy(seed=1)
    loss = al.LPIPSWithDiscriminator(disc_start=0, kl_weight=1e-2, disc_weight=0.5, disc_factor=0.0)
    ours, grad_W, _ = _jax_generator(toy, loss, "kl", 10, weights=toy["weights"])
    theirs, ref_W, _ = _torch_generator(toy, "kl", disc_start=0, global_step=10, disc_factor=0.0,
                                        weights=toy["weights"])
    _compare(ours, theirs, ["total_loss", "nll_loss", "d_weight", "disc_factor"])
    assert ours["d_weight"] == 0.0 and ours["g_loss"] == 0.0
    np.testing.assert_allclose(grad_W, ref_W, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("pixel", ["l1", "l2"])
def test_vq_generator_loss_matches_reference(pixel):
    toy = _toy(seed=2)
    loss = al.VQLPIPSWithDiscriminator(disc_start=1, disc_weight=0.75, codebook_weight=1.0, pixel_loss=pixel)
    ours, grad_W, grad_h = _jax_generator(toy, loss, "vq", 1)
    theirs, ref_W, ref_h = _torch_generator(toy, "vq", disc_start=1, global_step=1, disc_weight=0.75, pixel=pixel)
    _compare(ours, theirs, ["total_loss", "nll_loss", "rec_loss", "p_loss", "d_weight", "g_loss", "disc_factor"])
    assert ours["quant_loss"] == pytest.approx(0.7)
    np.testing.assert_allclose(grad_W, ref_W, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(grad_h, ref_h, rtol=1e-4, atol=1e-6)


def test_adaptive_weight_is_the_ratio_of_last_layer_gradient_norms():
    toy = _toy(seed=3)
    reconstruct, perceptual, discriminate = _jax_pieces(toy)
    loss = al.VQLPIPSWithDiscriminator(disc_start=0, disc_weight=2.0)
    def nll(W):
        return jnp.mean(jnp.abs(toy["x"] - reconstruct(W)) + perceptual(toy["x"], reconstruct(W))[:, None, None, None])

    def g(W):
        return -jnp.mean(discriminate(reconstruct(W))[0])

    expected = 2.0 * np.linalg.norm(jax.grad(nll)(toy["W"])) / (np.linalg.norm(jax.grad(g)(toy["W"])) + 1e-4)
    _, logs, _ = loss.generator_loss(toy["x"], reconstruct, toy["W"], jnp.float32(0.0), perceptual=perceptual,
                                     discriminate=discriminate, global_step=jnp.asarray(0))
    assert float(logs["d_weight"]) == pytest.approx(expected, rel=1e-5)
    # clipped to [0, 1e4] before the weight: a vanishing GAN gradient cannot blow the term up
    assert float(al.adaptive_weight(jnp.ones(4), jnp.zeros(4), 0.5)) == pytest.approx(0.5 * 1e4)


@pytest.mark.parametrize("kind", ["hinge", "vanilla"])
@pytest.mark.parametrize("global_step", [2, 7])
def test_discriminator_loss_matches_reference(kind, global_step):
    rng = np.random.default_rng(4)
    real, fake = (rng.standard_normal((2, 3, 3, 1)).astype(np.float32) for _ in range(2))
    loss = al.LPIPSWithDiscriminator(disc_start=5, disc_loss=kind, disc_factor=0.8)
    d_loss, logs = loss.discriminator_loss(jnp.asarray(real), jnp.asarray(fake), jnp.asarray(global_step))
    tr, tf = torch.tensor(real), torch.tensor(fake)
    if kind == "hinge":
        expected = 0.5 * (torch.mean(F.relu(1.0 - tr)) + torch.mean(F.relu(1.0 + tf)))
    else:
        expected = 0.5 * (torch.mean(F.softplus(-tr)) + torch.mean(F.softplus(tf)))
    factor = 0.8 if global_step >= 5 else 0.0
    assert float(d_loss) == pytest.approx(factor * float(expected), rel=1e-6, abs=1e-8)
    assert set(logs) == {"disc_loss", "logits_real", "logits_fake"}
    assert float(logs["logits_real"]) == pytest.approx(real.mean(), rel=1e-6)


def test_adopt_weight():
    assert float(al.adopt_weight(0.5, jnp.asarray(9), 10)) == 0.0
    assert float(al.adopt_weight(0.5, jnp.asarray(10), 10)) == 0.5


def test_loss_from_reference_configs():
    kl = al.loss_from_reference(zoo.kl_f8()["params"]["lossconfig"])
    assert isinstance(kl, al.LPIPSWithDiscriminator)
    assert (kl.disc_start, kl.kl_weight, kl.disc_weight, kl.disc_num_layers) == (50001, 1e-6, 0.5, 3)
    vq = al.loss_from_reference(zoo.vq_f8()["params"]["lossconfig"])
    assert isinstance(vq, al.VQLPIPSWithDiscriminator)
    assert (vq.disc_start, vq.disc_num_layers, vq.disc_weight, vq.codebook_weight) == (1, 2, 0.6, 1.0)
    ldm_vq = al.loss_from_reference({"target": "ldm.modules.losses.vqperceptual.VQLPIPSWithDiscriminator",
                                     "params": {"disc_start": 0, "pixel_loss": "l2", "n_classes": 8192}})
    assert ldm_vq.pixel_loss == "l2"


def test_kl_loss_takes_a_squared_pixel_loss():
    """pixel_loss "l2" (ours for the KL loss; the reference is always L1): squared errors per pixel."""
    kl = al.loss_from_reference({"target": "ldm.modules.losses.LPIPSWithDiscriminator",
                                 "params": {"disc_start": 0, "perceptual_weight": 0.0, "pixel_loss": "l2"}})
    x, y = jnp.array([[0.5, -1.0]]), jnp.array([[0.0, 1.0]])
    rec_loss, _ = kl.reconstruction_loss(x, y, perceptual=None)
    np.testing.assert_allclose(rec_loss, [[0.25, 4.0]])
    assert al.LPIPSWithDiscriminator(disc_start=0, perceptual_weight=0.0).reconstruction_loss(
        x, y, perceptual=None)[0].tolist() == [[0.5, 2.0]]
    with pytest.raises(ValueError, match="pixel_loss must be one of"):
        al.LPIPSWithDiscriminator(disc_start=0, pixel_loss="huber")


def test_bad_loss_configs_are_named():
    with pytest.raises(ValueError, match="unknown param.*disc_ndf"):  # the KL loss has no disc_ndf
        al.loss_from_reference({"target": "ldm.modules.losses.LPIPSWithDiscriminator",
                                "params": {"disc_start": 0, "disc_ndf": 32}})
    with pytest.raises(ValueError, match="not a supported loss"):
        al.loss_from_reference({"target": "ldm.modules.losses.DummyLoss", "params": {}})
    with pytest.raises(ValueError, match="lacks 'disc_start'"):
        al.loss_from_reference({"target": "ldm.modules.losses.LPIPSWithDiscriminator", "params": {}})
    with pytest.raises(ValueError, match="disc_loss"):
        al.LPIPSWithDiscriminator(disc_start=0, disc_loss="wasserstein")
    with pytest.raises(ValueError, match="disc_conditional"):
        al.VQLPIPSWithDiscriminator(disc_start=0, disc_conditional=True)
