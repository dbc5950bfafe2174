"""The Inception Score against torch-fidelity's `isc_features_to_metric`, and on predictions of known score."""
import numpy as np
import pytest

import ldm_jax.evaluation
from tests.evaluation import reference_packages

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def logits() -> np.ndarray:
    return (3 * np.random.default_rng(0).standard_normal((230, 1008))).astype(np.float32)


@pytest.mark.parametrize("shuffle", [True, False])
def test_matches_torch_fidelity(logits, shuffle):
    metric_isc = reference_packages.torch_fidelity_modules().metric_isc
    reference = metric_isc.isc_features_to_metric(torch.from_numpy(logits), splits=10, shuffle=shuffle, rng_seed=2020)
    mean, std = ldm_jax.evaluation.inception_score(logits, splits=10, shuffle_seed=2020 if shuffle else None)
    assert mean > 1.5 and std > 0
    assert mean == pytest.approx(reference["inception_score_mean"], rel=1e-4)
    assert std == pytest.approx(reference["inception_score_std"], rel=1e-4)


def test_shuffling_changes_the_splits_not_the_single_split_score(logits):
    score = ldm_jax.evaluation.inception_score
    assert score(logits)[0] != score(logits, shuffle_seed=None)[0]
    assert score(logits, splits=1) == pytest.approx(score(logits, splits=1, shuffle_seed=None))


def test_known_scores():
    # Every sample equally unsure: p(y|x) = p(y), the score is 1.
    mean, std = ldm_jax.evaluation.inception_score(np.zeros((40, 7)), splits=4)
    assert mean == pytest.approx(1.0) and std == pytest.approx(0.0, abs=1e-12)
    # Certain predictions spread evenly over 5 classes within each split: the score is 5.
    certain = 60.0 * np.eye(5)[np.arange(100) % 5]
    mean, std = ldm_jax.evaluation.inception_score(certain, splits=10, shuffle_seed=None)
    assert mean == pytest.approx(5.0, rel=1e-6) and std == pytest.approx(0.0, abs=1e-6)


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="at least 10 samples"):
        ldm_jax.evaluation.inception_score(np.zeros((9, 3)))
    with pytest.raises(ValueError, match=r"\(N, classes\)"):
        ldm_jax.evaluation.inception_score(np.zeros(30))
    with pytest.raises(ValueError, match="NaN"):
        ldm_jax.evaluation.inception_score(np.full((20, 3), np.nan))
