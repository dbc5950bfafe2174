"""The Fréchet distance between two Gaussians fitted to features (FID on Inception pool3; R-FID on reconstructions).

    d^2 = ||mu1 - mu2||^2 + Tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^(1/2))

computed as pytorch-fid's `calculate_frechet_distance` does (Dougal Sutherland's stable version):
`scipy.linalg.sqrtm` of the product; if that is not finite (a singular product), `eps` is added to
both diagonals and the root taken again; a small imaginary part from rounding is dropped, a large
one is an error. torch-fidelity 0.4.0 takes the trace of the root from the eigenvalues of the
product instead; both agree to far below 1e-4 on well-conditioned statistics (tests compare both).

R-FID (the paper's autoencoder table) is this distance between the statistics of the
reconstructions and of the originals (ImageNet-val), both on the same Inception features.
"""
from typing import NamedTuple

import numpy as np
from scipy import linalg


class Statistics(NamedTuple):
    """The mean (D,) and covariance (D, D) of a feature set, in float64."""
    mu: np.ndarray
    sigma: np.ndarray


def statistics_of(features: np.ndarray) -> Statistics:
    """Mean and unbiased covariance (np.cov, rowvar=False) of in-memory features (N, D), N >= 2."""
    features = np.asarray(features, np.float64)
    if features.ndim != 2 or len(features) < 2:
        raise ValueError(f"statistics need a (N, D) feature array with N >= 2, got shape {features.shape}")
    return Statistics(features.mean(axis=0), np.cov(features, rowvar=False))


def _check(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> None:
    if mu1.ndim != 1 or mu1.shape != mu2.shape:
        raise ValueError(f"the means must be vectors of one length, got shapes {mu1.shape} and {mu2.shape}")
    expected = (mu1.shape[0], mu1.shape[0])
    for name, sigma in (("sigma1", sigma1), ("sigma2", sigma2)):
        if sigma.shape != expected:
            raise ValueError(f"{name} has shape {sigma.shape}; the means have length {mu1.shape[0]}, so "
                             f"{expected} was expected")
    for name, value in (("mu1", mu1), ("sigma1", sigma1), ("mu2", mu2), ("sigma2", sigma2)):
        if not np.isfinite(value).all():
            raise ValueError(f"{name} holds NaN or infinite values")


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = 1e-6) -> float:
    """The Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2), in float64 (pytorch-fid's algorithm).

    Raises ValueError for mismatched shapes, non-finite input, or a square root whose imaginary part
    is not rounding noise (the covariances are then not positive semi-definite).
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    _check(mu1, sigma1, mu2, sigma2)
    diff = mu1 - mu2
    covmean = linalg.sqrtm(sigma1.dot(sigma2))
    if not np.isfinite(covmean).all():
        # The product is (nearly) singular: regularise both covariances, as pytorch-fid does.
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"the square root of sigma1 @ sigma2 has an imaginary component of "
                             f"{np.max(np.abs(covmean.imag)):.3g}: are both covariances positive semi-definite?")
        covmean = covmean.real
    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def fid_from_statistics(first: Statistics, second: Statistics, eps: float = 1e-6) -> float:
    """`frechet_distance` of two `Statistics` (e.g. samples vs. a reference file)."""
    return frechet_distance(first.mu, first.sigma, second.mu, second.sigma, eps)
