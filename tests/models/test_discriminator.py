"""NLayerDiscriminator: shapes, reference names, and parity with a torch re-statement of taming's."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ldm_jax.convert.discriminator_weights import discriminator_from_torch, discriminator_to_torch
from ldm_jax.convert.state_dict import CheckpointMismatchError
from ldm_jax.models.discriminator import ActNorm, NLayerDiscriminator, output_size

torch = pytest.importorskip("torch")


class TorchActNorm(torch.nn.Module):
    """taming.modules.util.ActNorm (affine, no logdet), restated."""

    def __init__(self, num_features):
        super().__init__()
        self.loc = torch.nn.Parameter(torch.zeros(1, num_features, 1, 1))
        self.scale = torch.nn.Parameter(torch.ones(1, num_features, 1, 1))
        self.register_buffer("initialized", torch.tensor(0, dtype=torch.uint8))

    def forward(self, x):
        if self.training and self.initialized.item() == 0:
            with torch.no_grad():
                flat = x.permute(1, 0, 2, 3).reshape(x.shape[1], -1)
                self.loc.data.copy_(-flat.mean(1)[None, :, None, None])
                self.scale.data.copy_(1 / (flat.std(1)[None, :, None, None] + 1e-6))
            self.initialized.fill_(1)
        return self.scale * (x + self.loc)


class TorchPatchGAN(torch.nn.Module):
    def __init__(self, main):
        super().__init__()
        self.main = main

    def forward(self, x):
        return self.main(x)


def torch_discriminator(input_nc=3, ndf=64, n_layers=3, use_actnorm=False):
    """taming.modules.discriminator.model.NLayerDiscriminator with weights_init applied, restated."""
    norm = TorchActNorm if use_actnorm else torch.nn.BatchNorm2d
    use_bias = use_actnorm
    seq = [torch.nn.Conv2d(input_nc, ndf, 4, 2, 1), torch.nn.LeakyReLU(0.2, True)]
    mult = 1
    for n in range(1, n_layers):
        prev, mult = mult, min(2 ** n, 8)
        seq += [torch.nn.Conv2d(ndf * prev, ndf * mult, 4, 2, 1, bias=use_bias), norm(ndf * mult),
                torch.nn.LeakyReLU(0.2, True)]
    prev, mult = mult, min(2 ** n_layers, 8)
    seq += [torch.nn.Conv2d(ndf * prev, ndf * mult, 4, 1, 1, bias=use_bias), norm(ndf * mult),
            torch.nn.LeakyReLU(0.2, True), torch.nn.Conv2d(ndf * mult, 1, 4, 1, 1)]
    model = TorchPatchGAN(torch.nn.Sequential(*seq))
    for module in model.modules():
        if isinstance(module, torch.nn.Conv2d):
            torch.nn.init.normal_(module.weight, 0.0, 0.02)
        elif isinstance(module, torch.nn.BatchNorm2d):
            torch.nn.init.normal_(module.weight, 1.0, 0.02)
            torch.nn.init.constant_(module.bias, 0)
    return model


def _abstract(module, x):
    return nn.unbox(jax.eval_shape(lambda: module.init(jax.random.key(0), x, train=True)))


def _nchw(x):
    return torch.from_numpy(np.ascontiguousarray(np.moveaxis(x, -1, 1)))


@pytest.mark.parametrize("n_layers", [1, 2, 3])
@pytest.mark.parametrize("height,width", [(64, 64), (48, 80)])
def test_output_size_matches_reference_formula(n_layers, height, width):
    module = NLayerDiscriminator(ndf=8, n_layers=n_layers)
    x = jnp.zeros((2, height, width, 3))
    variables = _abstract(module, x)
    logits = jax.eval_shape(lambda v: module.apply(v, x, train=True, mutable=["batch_stats"])[0], variables)
    expected = (2, height // 2 ** n_layers - 2, width // 2 ** n_layers - 2, 1)
    assert logits.shape == expected
    assert (output_size(height, n_layers), output_size(width, n_layers)) == expected[1:3]
    with torch.no_grad():
        torch_shape = torch_discriminator(ndf=8, n_layers=n_layers)(torch.zeros(2, 3, height, width)).shape
    assert tuple(torch_shape) == (2, 1, *expected[1:3])
    assert output_size(256, 3) == 30  # the 30x30 PatchGAN at 256^2


def test_too_small_image_is_refused():
    with pytest.raises(ValueError, match="at least 24"):
        _abstract(NLayerDiscriminator(ndf=8, n_layers=3), jnp.zeros((1, 16, 16, 3)))


@pytest.mark.parametrize("use_actnorm", [False, True])
def test_names_mirror_the_reference_state_dict(use_actnorm):
    reference = torch_discriminator(ndf=8, n_layers=3, use_actnorm=use_actnorm)
    variables = _abstract(NLayerDiscriminator(ndf=8, n_layers=3, use_actnorm=use_actnorm), jnp.zeros((1, 32, 32, 3)))
    zeros = jax.tree.map(lambda spec: np.zeros(spec.shape, spec.dtype), variables)
    ours = discriminator_to_torch(zeros, prefix="loss.discriminator.")
    theirs = {f"loss.discriminator.{key}": value for key, value in reference.state_dict().items()
              if not key.endswith(".initialized")}
    assert {key: tuple(value.shape) for key, value in ours.items()} == \
        {key: tuple(value.shape) for key, value in theirs.items()}


def test_batchnorm_train_mode_matches_torch():
    torch.manual_seed(0)
    reference = torch_discriminator(ndf=8, n_layers=3).train()
    state = {key: value.numpy().copy() for key, value in reference.state_dict().items()}
    module = NLayerDiscriminator(ndf=8, n_layers=3)
    x = np.random.default_rng(0).uniform(-1, 1, (4, 40, 40, 3)).astype(np.float32)
    variables = discriminator_from_torch(state, _abstract(module, jnp.asarray(x)))

    logits, mutated = jax.jit(lambda v, x: module.apply(v, x, train=True, mutable=["batch_stats"]))(variables, x)
    expected = reference(_nchw(x))
    np.testing.assert_allclose(np.asarray(logits), np.moveaxis(expected.detach().numpy(), 1, -1), atol=1e-5)
    # running statistics after one training batch: torch's momentum 0.1 and unbiased variance
    updated = discriminator_to_torch({"params": variables["params"], **mutated})
    for key, value in reference.state_dict().items():
        np.testing.assert_allclose(updated[key], value.numpy(), atol=1e-5, err_msg=key)

    # eval mode uses the running statistics
    reference.eval()
    eval_logits = jax.jit(lambda v, x: module.apply(v, x, train=False))({**variables, **mutated}, x)
    np.testing.assert_allclose(np.asarray(eval_logits), np.moveaxis(reference(_nchw(x)).detach().numpy(), 1, -1),
                               atol=1e-5)


def test_actnorm_matches_torch_after_its_initialisation():
    torch.manual_seed(1)
    reference = torch_discriminator(ndf=8, n_layers=2, use_actnorm=True).train()
    x = np.random.default_rng(1).uniform(-1, 1, (3, 32, 32, 3)).astype(np.float32)
    expected = reference(_nchw(x)).detach().numpy()  # the first forward initialises the ActNorms
    module = NLayerDiscriminator(ndf=8, n_layers=2, use_actnorm=True)
    state = {key: value.numpy() for key, value in reference.state_dict().items()}
    variables = discriminator_from_torch(state, _abstract(module, jnp.asarray(x)))
    logits = jax.jit(lambda v, x: module.apply(v, x, train=True))(variables, x)
    np.testing.assert_allclose(np.asarray(logits), np.moveaxis(expected, 1, -1), atol=1e-5)



def test_actnorm_init_standardises_its_init_batch():
    h = np.random.default_rng(2).normal(3.0, 2.0, (4, 6, 6, 5)).astype(np.float32)
    layer = ActNorm()
    out = jax.jit(lambda h: layer.apply(layer.init(jax.random.key(0), h, train=True), h, train=True))(h)
    out = np.asarray(out).reshape(-1, 5)
    np.testing.assert_allclose(out.mean(0), 0.0, atol=1e-4)
    np.testing.assert_allclose(out.std(0, ddof=1), 1.0, atol=1e-4)  # torch's unbiased std, as taming's


def test_weights_init_statistics():
    module = NLayerDiscriminator(ndf=64, n_layers=3)
    variables = nn.unbox(jax.jit(lambda x: module.init(jax.random.key(0), x, train=True))(jnp.zeros((1, 32, 32, 3))))
    params = variables["params"]
    kernel = np.asarray(params["main:5"]["kernel"])
    assert abs(kernel.std() - 0.02) < 0.001 and abs(kernel.mean()) < 0.001
    scale = np.asarray(params["main:6"]["scale"])
    assert abs(scale.mean() - 1.0) < 0.01 and 0.01 < scale.std() < 0.03
    np.testing.assert_array_equal(params["main:6"]["bias"], 0.0)
    bound = 1 / np.sqrt(3 * 16)  # torch's default bias of the first conv, kept by weights_init
    assert np.abs(params["main:0"]["bias"]).max() <= bound
    np.testing.assert_array_equal(variables["batch_stats"]["main:3"]["running_var"], 1.0)


def test_converter_names_a_missing_key():
    module = NLayerDiscriminator(ndf=8, n_layers=2)
    variables = _abstract(module, jnp.zeros((1, 32, 32, 3)))
    state = discriminator_to_torch(jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), variables))
    del state["main.3.running_var"]
    with pytest.raises(CheckpointMismatchError, match=r"missing: main\.3\.running_var"):
        discriminator_from_torch(state, variables)
