"""The FID Inception-v3: its weight layout, its input resizes, and its features against torch-fidelity's and
pytorch-fid's networks holding the same random weights (see reference_packages for how they are loaded)."""
import jax
import numpy as np
import pytest

from ldm_jax.convert import inception_weights
from ldm_jax.convert.state_dict import CheckpointMismatchError
from ldm_jax.models import inception
from tests.conftest import assert_matches_reference
from tests.evaluation import reference_packages

torch = pytest.importorskip("torch")


def random_inception_params(seed: int = 0) -> dict:
    """He-scaled kernels and plausible BatchNorm statistics, so activations stay O(1) through the network."""
    rng = np.random.default_rng(seed)

    def draw(path, spec):
        leaf = path[-1].key
        if leaf == "kernel":
            value = rng.standard_normal(spec.shape) * np.sqrt(2 / np.prod(spec.shape[:-1]))
        elif leaf == "running_var":
            value = rng.uniform(0.5, 1.5, spec.shape)
        elif leaf == "scale":
            value = 1 + 0.1 * rng.standard_normal(spec.shape)
        else:  # bias, running_mean
            value = 0.1 * rng.standard_normal(spec.shape)
        return value.astype(np.float32)

    return jax.tree_util.tree_map_with_path(draw, inception_weights.abstract_inception_params())


@pytest.fixture(scope="module")
def weights():
    params = random_inception_params()
    return params, inception_weights.inception_params_to_torch(params)


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    # Taller than 299 and narrower: both resizes sample down along one axis and up along the other.
    return np.random.default_rng(1).integers(0, 256, (2, 311, 83, 3), dtype=np.uint8)


def _flax_features(params, images, preprocessing):
    module = inception.FIDInceptionV3(preprocessing=preprocessing)
    return jax.jit(lambda p, x: module.apply({"params": p}, x))(params, images)


def _nchw(images: np.ndarray):
    return torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))


def test_torch_key_layout_and_round_trip(weights):
    params, state = weights
    assert state["Conv2d_1a_3x3.conv.weight"].shape == (32, 3, 3, 3)
    assert state["Mixed_7c.branch_pool.conv.weight"].shape == (192, 2048, 1, 1)
    assert state["Mixed_6b.branch7x7_2.conv.weight"].shape == (128, 128, 1, 7)
    assert state["fc.weight"].shape == (1008, 2048) and state["fc.bias"].shape == (1008,)
    assert {"Mixed_5b.branch1x1.bn.running_mean", "Mixed_5b.branch1x1.bn.running_var",
            "Mixed_5b.branch1x1.bn.num_batches_tracked"} <= set(state)
    assert sum(np.size(v) for k, v in state.items() if not k.endswith("num_batches_tracked")) == 23_885_392
    back = inception_weights.inception_params_from_torch(state)
    jax.tree.map(np.testing.assert_array_equal, back, params)
    # Files written by older torch carry no BatchNorm counters: they load as well.
    without_counters = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    jax.tree.map(np.testing.assert_array_equal, inception_weights.inception_params_from_torch(without_counters), params)


def test_mismatched_state_dict_names_the_keys(weights):
    _, state = weights
    broken = {k: v for k, v in state.items() if k != "Mixed_6e.branch_pool.conv.weight"}
    broken["fc.weight"] = state["fc.weight"][:1000]
    with pytest.raises(CheckpointMismatchError, match=r"Mixed_6e\.branch_pool\.conv\.weight") as error:
        inception_weights.inception_params_from_torch(broken)
    assert "fc.weight" in str(error.value)


@pytest.mark.parametrize("size", [(299, 299), (17, 23), (640, 300)])
def test_resizes_match_the_references(size):
    functional = torch.nn.functional
    tf1 = reference_packages.torch_fidelity_modules().interpolate_compat_tensorflow
    x = np.random.default_rng(2).uniform(0, 255, (2, 37, 50, 3)).astype(np.float32)
    ours_tf1 = np.asarray(inception.resize_bilinear_tf1(x, size))
    ref_tf1 = tf1.interpolate_bilinear_2d_like_tensorflow1x(_nchw(x), size=size, align_corners=False)
    np.testing.assert_allclose(ours_tf1, ref_tf1.numpy().transpose(0, 2, 3, 1), rtol=0, atol=1e-4)
    ours_torch = np.asarray(inception.resize_bilinear_torch(x, size))
    ref_torch = functional.interpolate(_nchw(x), size=size, mode="bilinear", align_corners=False)
    np.testing.assert_allclose(ours_torch, ref_torch.numpy().transpose(0, 2, 3, 1), rtol=0, atol=1e-4)


def test_preprocessing_rejects_bad_input():
    with pytest.raises(ValueError, match=r"\(N, H, W, 3\)"):
        inception.preprocess(np.zeros((1, 8, 8, 4), np.uint8))
    with pytest.raises(TypeError, match="uint8"):
        inception.preprocess(np.zeros((1, 8, 8, 3), np.int32))
    with pytest.raises(ValueError, match="pytorch_fid"):
        inception.preprocess(np.zeros((1, 8, 8, 3), np.uint8), "tensorflow")


def test_features_match_torch_fidelity(weights, images, tmp_path):
    params, state = weights
    path = tmp_path / "weights-inception-2015-12-05-6726825d.pth"
    torch.save({k: torch.from_numpy(np.asarray(v)) for k, v in state.items()}, path)
    blocks = reference_packages.torch_fidelity_modules().feature_extractor_inceptionv3
    # Strict load: our key layout is torch-fidelity's.
    reference = blocks.FeatureExtractorInceptionV3("inception-v3-compat", ["2048", "logits_unbiased", "logits"],
                                                   feature_extractor_weights_path=str(path))
    with torch.no_grad():
        pool3, unbiased, logits = (t.numpy() for t in reference(_nchw(images)))
    ours = _flax_features(params, images, "torch_fidelity")
    assert_matches_reference(ours["pool3"], pool3, "pool3")
    assert_matches_reference(ours["logits_unbiased"], unbiased, "logits_unbiased")
    assert_matches_reference(ours["logits"], logits, "logits")
    assert float(np.std(pool3)) > 0.1  # the random network is not degenerate
    # The same images as floats in [-1, 1] give the same network input.
    as_float = images.astype(np.float32) / 127.5 - 1
    for preprocessing in inception.PREPROCESSING:
        np.testing.assert_allclose(inception.preprocess(as_float, preprocessing),
                                   inception.preprocess(images, preprocessing), rtol=0, atol=1e-5)


def test_pool3_matches_pytorch_fid(weights, images):
    params, state = weights
    reference = reference_packages.pytorch_fid_inception({k: torch.from_numpy(np.asarray(v)) for k, v in state.items()})
    with torch.no_grad():  # pytorch-fid reads images as ToTensor() does: [0, 1]
        (pool3,) = reference(_nchw(images).float() / 255)
    ours = _flax_features(params, images, "pytorch_fid")
    assert_matches_reference(ours["pool3"], pool3.numpy()[:, :, 0, 0], "pool3")
