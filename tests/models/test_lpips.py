"""LPIPS (VGG16, v0.1): the PyTorch key layouts and the forward against a torch re-statement of lpips."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ldm_jax.convert import lpips_weights
from ldm_jax.convert.state_dict import CheckpointMismatchError
from ldm_jax.models.lpips import LPIPS

torch = pytest.importorskip("torch")

SMALL_WIDTHS = (8, 16, 16, 32, 32)
TORCHVISION_CONVS = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)


def _random_like(abstract, seed=0):
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda spec: (0.1 * rng.standard_normal(spec.shape)).astype(np.float32), abstract)


class TorchLPIPS(torch.nn.Module):
    """lpips.LPIPS(net="vgg", version="0.1") in eval mode, restated: torchvision VGG16 features
    (same indices, any widths), ScalingLayer, normalize_tensor, NetLinLayer heads, spatial average."""

    def __init__(self, widths):
        super().__init__()
        layers, in_channels = [], 3
        for block, width in enumerate(widths):
            if block:
                layers.append(torch.nn.MaxPool2d(kernel_size=2, stride=2))
            for _ in range(2 if block < 2 else 3):
                layers += [torch.nn.Conv2d(in_channels, width, 3, padding=1), torch.nn.ReLU(inplace=True)]
                in_channels = width
        self.features = torch.nn.Sequential(*layers)
        for k, width in enumerate(widths):
            head = torch.nn.Sequential(torch.nn.Dropout(), torch.nn.Conv2d(width, 1, 1, bias=False))
            setattr(self, f"lin{k}", torch.nn.Module())
            getattr(self, f"lin{k}").model = head
        self.register_buffer("shift", torch.tensor([-.030, -.088, -.188])[None, :, None, None])
        self.register_buffer("scale", torch.tensor([.458, .448, .450])[None, :, None, None])

    def taps(self, x):
        out, h = [], x
        for start, stop in ((0, 4), (4, 9), (9, 16), (16, 23), (23, 30)):
            for index in range(start, stop):
                h = self.features[index](h)
            out.append(h)
        return out

    def forward(self, in0, in1):
        def normalize(x, eps=1e-10):
            return x / (torch.sqrt(torch.sum(x ** 2, dim=1, keepdim=True)) + eps)

        outs0 = self.taps((in0 - self.shift) / self.scale)
        outs1 = self.taps((in1 - self.shift) / self.scale)
        total = 0
        for k in range(5):
            diff = (normalize(outs0[k]) - normalize(outs1[k])) ** 2
            total = total + getattr(self, f"lin{k}").model(diff).mean([2, 3], keepdim=True)
        return total


def test_torch_key_layout_round_trip():
    abstract = lpips_weights.abstract_lpips_params()
    params = _random_like(abstract)
    vgg, linear = lpips_weights.lpips_params_to_torch(params)
    assert set(vgg) == {f"features.{i}.{leaf}" for i in TORCHVISION_CONVS for leaf in ("weight", "bias")}
    assert vgg["features.0.weight"].shape == (64, 3, 3, 3)
    assert vgg["features.28.weight"].shape == (512, 512, 3, 3)
    # the published lpips v0.1 vgg.pth: lin0.model.1.weight (1, 64, 1, 1) ... lin4 (1, 512, 1, 1)
    assert {key: value.shape for key, value in linear.items()} == {
        f"lin{k}.model.1.weight": (1, width, 1, 1) for k, width in enumerate((64, 128, 256, 512, 512))}
    # torchvision's classifier head is ignored
    vgg_with_head = {**vgg, "classifier.0.weight": np.zeros((4096, 25088), np.float32)[:2, :2]}
    back = lpips_weights.lpips_params_from_torch(vgg_with_head, linear)
    jax.tree.map(np.testing.assert_array_equal, back, params)


def test_module_layout_round_trip_with_prefix():
    params = _random_like(lpips_weights.abstract_lpips_params(), seed=1)
    module_sd = lpips_weights.lpips_params_to_module(params, prefix="loss.perceptual_loss.")
    assert "loss.perceptual_loss.net.slice1.0.weight" in module_sd
    assert "loss.perceptual_loss.net.slice2.7.bias" in module_sd
    assert "loss.perceptual_loss.net.slice5.28.weight" in module_sd
    assert "loss.perceptual_loss.lin4.model.1.weight" in module_sd
    other = {"loss.discriminator.main.0.weight": np.zeros((1,), np.float32)}
    back = lpips_weights.lpips_params_from_module({**module_sd, **other}, prefix="loss.perceptual_loss.")
    jax.tree.map(np.testing.assert_array_equal, back, params)


def test_wrong_or_missing_keys_are_named():
    vgg, linear = lpips_weights.lpips_params_to_torch(_random_like(lpips_weights.abstract_lpips_params()))
    without = {key: value for key, value in vgg.items() if key != "features.28.bias"}
    with pytest.raises(CheckpointMismatchError, match=r"(?s)VGG16.*missing: features\.28\.bias"):
        lpips_weights.lpips_params_from_torch(without, linear)
    misshapen = {**linear, "lin2.model.1.weight": np.zeros((1, 128, 1, 1), np.float32)}
    with pytest.raises(CheckpointMismatchError, match=r"lin2\.model\.1\.weight"):
        lpips_weights.lpips_params_from_torch(vgg, misshapen)
    renamed = {key.replace("model.1", "model.0"): value for key, value in linear.items()}
    with pytest.raises(CheckpointMismatchError, match=r"unexpected: lin0\.model\.0\.weight"):
        lpips_weights.lpips_params_from_torch(vgg, renamed)


def test_forward_matches_torch_lpips():
    torch.manual_seed(0)
    reference = TorchLPIPS(SMALL_WIDTHS).eval()
    with torch.no_grad():  # non-negative heads, as the trained ones are
        for k in range(5):
            getattr(reference, f"lin{k}").model[1].weight.abs_()
    state = {key: value.numpy() for key, value in reference.state_dict().items()}
    vgg = {key: value for key, value in state.items() if key.startswith("features.")}
    linear = {key: value for key, value in state.items() if key.startswith("lin")}
    module = LPIPS(widths=SMALL_WIDTHS)
    params = lpips_weights.lpips_params_from_torch(vgg, linear, lpips_weights.abstract_lpips_params(module))

    rng = np.random.default_rng(0)
    x0 = rng.uniform(-1, 1, (3, 32, 32, 3)).astype(np.float32)
    x1 = np.clip(x0 + 0.3 * rng.standard_normal(x0.shape), -1, 1).astype(np.float32)
    ours = np.asarray(jax.jit(module.apply)({"params": params}, x0, x1))
    with torch.no_grad():
        expected = reference(torch.from_numpy(x0).permute(0, 3, 1, 2), torch.from_numpy(x1).permute(0, 3, 1, 2))
    expected = expected.numpy().reshape(-1)
    assert ours.shape == (3,)
    assert expected.min() > 0
    np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-6)


def test_identical_images_and_dead_features_have_finite_gradients():
    module = LPIPS(widths=SMALL_WIDTHS)
    params = _random_like(lpips_weights.abstract_lpips_params(module), seed=2)
    x = jnp.asarray(np.random.default_rng(3).uniform(-1, 1, (2, 16, 16, 3)), jnp.float32)
    assert np.allclose(jax.jit(module.apply)({"params": params}, x, x), 0.0)
    # Biases of -100 switch every ReLU off: all features are 0, where torch's sqrt gradient is NaN.
    dead = {name: ({**value, "bias": np.full_like(value["bias"], -100.0)} if "bias" in value else value)
            for name, value in params.items()}
    grad = jax.jit(jax.grad(lambda y: module.apply({"params": dead}, x, y).sum()))(x * 0.5)
    assert np.all(np.isfinite(grad))
