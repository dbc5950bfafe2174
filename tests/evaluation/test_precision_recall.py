"""Improved precision/recall against torch-fidelity's code, and the VGG-16 fc2 network against a torch
re-statement of torch-fidelity's `vgg16` extractor (torchvision's VGG-16 itself cannot be imported here)."""
import numpy as np
import pytest

import ldm_jax.evaluation
from ldm_jax.convert import state_dict
from ldm_jax.convert.state_dict import CheckpointMismatchError
from ldm_jax.evaluation.precision_recall import (VGG16Fc2, abstract_vgg16_params, fraction_inside, manifold_radii,
                                                 vgg16_params_from_torch, vgg16_params_to_torch)
from tests.conftest import assert_matches_reference
from tests.evaluation import reference_packages

torch = pytest.importorskip("torch")

SMALL_WIDTHS = (8, 16, 16, 32, 32)
SMALL_HIDDEN = 24


@pytest.fixture(scope="module")
def feature_sets():
    rng = np.random.default_rng(0)
    real = rng.standard_normal((160, 12)).astype(np.float32)
    fake = (1.3 * rng.standard_normal((130, 12)) + 0.8).astype(np.float32)
    return real, fake


def test_matches_torch_fidelity(feature_sets):
    real, fake = feature_sets
    metric_prc = reference_packages.torch_fidelity_modules().metric_prc
    # torch-fidelity's convention: features_1 are generated, features_2 real.
    expected = metric_prc.calculate_precision_recall_full(torch.from_numpy(fake), torch.from_numpy(real), 3)
    expected_part = metric_prc.calculate_precision_recall_part(torch.from_numpy(fake), torch.from_numpy(real), 3, 50)
    precision, recall = ldm_jax.evaluation.precision_recall(real, fake, k=3)
    assert 0.05 < precision < 0.95 and 0.05 < recall < 0.95
    assert (precision, recall) == pytest.approx(expected, rel=1e-4)
    assert (precision, recall) == pytest.approx(expected_part, rel=1e-4)
    # Another neighbourhood, and blocks that do not divide the sets.
    expected_k5 = metric_prc.calculate_precision_recall_full(torch.from_numpy(fake), torch.from_numpy(real), 5)
    assert ldm_jax.evaluation.precision_recall(real, fake, k=5, block_size=37) == pytest.approx(expected_k5, rel=1e-4)


def test_radii_are_kth_neighbour_distances():
    points = np.array([[0.0], [1.0], [3.0], [7.0], [15.0]], np.float32)
    # k=2: the sample itself, then its 2 nearest others.
    np.testing.assert_allclose(manifold_radii(points, k=2, block_size=2), [3, 2, 3, 6, 12])
    assert fraction_inside(np.array([[5.0], [30.0]], np.float32), points, np.full(5, 2.0, np.float32)) == 0.5


def test_identical_and_disjoint_sets(feature_sets):
    real, _ = feature_sets
    assert ldm_jax.evaluation.precision_recall(real, real) == (1.0, 1.0)
    assert ldm_jax.evaluation.precision_recall(real, real + 100.0) == (0.0, 0.0)


def test_bad_input_is_named(feature_sets):
    real, fake = feature_sets
    with pytest.raises(ValueError, match="differ in width"):
        ldm_jax.evaluation.precision_recall(real, fake[:, :5])
    with pytest.raises(ValueError, match="more than 3 samples"):
        ldm_jax.evaluation.precision_recall(real[:3], fake)
    with pytest.raises(ValueError, match=r"fake_features must be \(N, D\)"):
        ldm_jax.evaluation.precision_recall(real, fake[0])


class TorchVGG16Fc2(torch.nn.Module):
    """torch-fidelity's FeatureExtractorVGG16 forward: torchvision's vgg16 (cfg D, any widths) with the
    classifier cut after fc2, fed TF1-resized 224 px pixels normalised by the ImageNet statistics."""

    def __init__(self, widths, hidden):
        super().__init__()
        layers, channels = [], 3
        for block, width in enumerate(widths):
            for _ in range(2 if block < 2 else 3):
                layers += [torch.nn.Conv2d(channels, width, 3, padding=1), torch.nn.ReLU(inplace=True)]
                channels = width
            layers.append(torch.nn.MaxPool2d(kernel_size=2, stride=2))
        self.features = torch.nn.Sequential(*layers)
        self.avgpool = torch.nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = torch.nn.Sequential(torch.nn.Linear(channels * 49, hidden), torch.nn.ReLU(True),
                                              torch.nn.Dropout(), torch.nn.Linear(hidden, hidden))

    def forward(self, images_uint8):
        resize = reference_packages.torch_fidelity_modules().interpolate_compat_tensorflow
        x = resize.interpolate_bilinear_2d_like_tensorflow1x(images_uint8.float(), size=(224, 224),
                                                             align_corners=False)
        mean = torch.tensor([0.485, 0.456, 0.406])[None, :, None, None] * 255
        std = torch.tensor([0.229, 0.224, 0.225])[None, :, None, None] * 255
        x = self.features((x - mean) / std)
        return self.classifier(torch.flatten(self.avgpool(x), 1))


def test_full_size_key_layout_is_torchvision_vgg16():
    abstract = abstract_vgg16_params()
    convs = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
    assert set(state_dict.expected_keys(abstract)) == (
        {f"features.{i}.{leaf}" for i in convs for leaf in ("weight", "bias")}
        | {f"classifier.{i}.{leaf}" for i in (0, 3) for leaf in ("weight", "bias")})
    assert abstract["features:0"]["kernel"].shape == (3, 3, 3, 64)  # torch (64, 3, 3, 3)
    assert abstract["classifier:0"]["kernel"].shape == (25088, 4096)  # torch (4096, 25088)
    assert abstract["classifier:3"]["kernel"].shape == (4096, 4096)


def test_features_match_torch_restatement(tmp_path):
    torch.manual_seed(0)
    reference = TorchVGG16Fc2(SMALL_WIDTHS, SMALL_HIDDEN).eval()
    state = {key: value.numpy() for key, value in reference.state_dict().items()}
    state["classifier.6.weight"] = np.zeros((10, SMALL_HIDDEN), np.float32)  # the ImageNet head is ignored
    module = VGG16Fc2(widths=SMALL_WIDTHS, hidden=SMALL_HIDDEN)
    params = vgg16_params_from_torch(state, abstract_vgg16_params(module))
    back = vgg16_params_to_torch(params)
    for key, value in back.items():
        np.testing.assert_array_equal(value, state[key], err_msg=key)
    images = np.random.default_rng(3).integers(0, 256, (2, 40, 57, 3), dtype=np.uint8)
    with torch.no_grad():
        expected = reference(torch.from_numpy(images.transpose(0, 3, 1, 2).copy())).numpy()
    ours = module.apply({"params": params}, images)
    assert_matches_reference(ours["fc2"], expected, "fc2")
    np.testing.assert_array_equal(ours["fc2_relu"], np.maximum(ours["fc2"], 0))
    with pytest.raises(CheckpointMismatchError, match="features.0.weight"):
        vgg16_params_from_torch({k: v for k, v in state.items() if k != "features.0.weight"},
                                abstract_vgg16_params(module))
