"""The Fréchet distance against pytorch-fid's and torch-fidelity's own code, and in closed form."""
import numpy as np
import pytest

import ldm_jax.evaluation
from ldm_jax.evaluation import fid
from tests.evaluation import reference_packages

torch = pytest.importorskip("torch")
# pytorch-fid 0.3.0 still passes scipy's deprecated `disp` to sqrtm.
pytestmark = pytest.mark.filterwarnings("ignore:The `disp` argument is deprecated:DeprecationWarning")


def _features(seed: int, count: int, dim: int, shift: float) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mixing = rng.standard_normal((dim, dim)) / np.sqrt(dim)
    return (rng.standard_normal((count, dim)) @ mixing + shift).astype(np.float32)


@pytest.fixture(scope="module")
def two_sets():
    return _features(0, 400, 24, 0.0), _features(1, 300, 24, 0.3)


def test_public_entry_point_is_the_fid_module():
    assert ldm_jax.evaluation.fid.frechet_distance is fid.frechet_distance


def test_matches_pytorch_fid(two_sets):
    real, fake = (fid.statistics_of(x) for x in two_sets)
    reference = reference_packages.pytorch_fid_modules().fid_score.calculate_frechet_distance(
        real.mu, real.sigma, fake.mu, fake.sigma)
    ours = fid.frechet_distance(real.mu, real.sigma, fake.mu, fake.sigma)
    assert ours > 1.0
    assert ours == pytest.approx(float(reference), rel=1e-4)


def test_matches_torch_fidelity(two_sets):
    metric_fid = reference_packages.torch_fidelity_modules().metric_fid
    real_ref, fake_ref = (metric_fid.fid_features_to_statistics(torch.from_numpy(x)) for x in two_sets)
    reference = metric_fid.fid_statistics_to_metric(fake_ref, real_ref, verbose=False)["frechet_inception_distance"]
    real, fake = (fid.statistics_of(x) for x in two_sets)
    # torch-fidelity averages in float32, we in float64.
    np.testing.assert_allclose(real.mu, real_ref["mu"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(real.sigma, real_ref["sigma"], rtol=0, atol=1e-6)
    assert fid.fid_from_statistics(fake, real) == pytest.approx(reference, rel=1e-4)


def test_singular_product_takes_the_eps_offset_like_pytorch_fid():
    # 10 samples of 32 features: both covariances have rank 9.
    a, b = _features(2, 10, 32, 0.0), _features(3, 10, 32, 1.0)
    real, fake = fid.statistics_of(a), fid.statistics_of(b)
    reference = reference_packages.pytorch_fid_modules().fid_score.calculate_frechet_distance(
        real.mu, real.sigma, fake.mu, fake.sigma)
    assert fid.frechet_distance(*real, *fake) == pytest.approx(float(reference), rel=1e-4)


def test_closed_form_for_diagonal_covariances():
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    var1, var2 = np.array([1.0, 4.0, 9.0]), np.array([4.0, 4.0, 1.0])
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(var1) - np.sqrt(var2)) ** 2)  # 5 + 1 + 0 + 4
    assert fid.frechet_distance(mu1, np.diag(var1), mu2, np.diag(var2)) == pytest.approx(expected, rel=1e-10)
    assert expected == 10.0


def test_identical_statistics_give_zero(two_sets):
    stats = fid.statistics_of(two_sets[0])
    assert abs(fid.frechet_distance(*stats, *stats)) < 1e-6


def test_bad_shapes_are_named():
    with pytest.raises(ValueError, match="means"):
        fid.frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
    with pytest.raises(ValueError, match=r"sigma2 has shape \(2, 2\)"):
        fid.frechet_distance(np.zeros(3), np.eye(3), np.zeros(3), np.eye(2))
    with pytest.raises(ValueError, match="mu1 holds NaN"):
        fid.frechet_distance(np.array([np.nan, 0.0]), np.eye(2), np.zeros(2), np.eye(2))
    with pytest.raises(ValueError, match="N >= 2"):
        fid.statistics_of(np.zeros((1, 4)))
