"""PSNR and SSIM against numpy/scipy re-statements (scikit-image is not installed here) and known values;
LPIPS through the LPIPS module."""
import jax
import numpy as np
import pytest
from scipy import ndimage

from ldm_jax.convert import lpips_weights
from ldm_jax.evaluation import image_metrics
from ldm_jax.models.lpips import LPIPS


def skimage_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """`skimage.metrics.structural_similarity(a, b, channel_axis=-1, data_range=255, gaussian_weights=True,
    sigma=1.5, use_sample_covariance=False)` of one HWC image pair, restated line by line."""
    channels = []
    for c in range(a.shape[-1]):
        x, y = a[..., c].astype(np.float64), b[..., c].astype(np.float64)

        def filt(z):
            return ndimage.gaussian_filter(z, sigma=1.5, truncate=3.5, mode="reflect")

        ux, uy, uxx, uyy, uxy = filt(x), filt(y), filt(x * x), filt(y * y), filt(x * y)
        vx, vy, vxy = uxx - ux * ux, uyy - uy * uy, uxy - ux * uy
        c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
        s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux ** 2 + uy ** 2 + c1) * (vx + vy + c2))
        pad = (11 - 1) // 2
        channels.append(s[pad:-pad, pad:-pad].mean())
    return float(np.mean(channels))


@pytest.fixture(scope="module")
def image_pair():
    rng = np.random.default_rng(0)
    smooth = ndimage.gaussian_filter(rng.uniform(0, 255, (3, 36, 44, 3)), sigma=(0, 3, 3, 0)) * 3 - 200
    a = np.clip(smooth + rng.normal(0, 10, smooth.shape), 0, 255).astype(np.uint8)
    b = np.clip(a + rng.normal(0, 25, a.shape), 0, 255).astype(np.uint8)
    return a, b


def test_psnr_known_values(image_pair):
    a, b = image_pair
    assert np.all(np.isinf(image_metrics.psnr(a, a)))
    brighter = a.astype(np.int32) + 1
    brighter = np.where(brighter > 255, 254, brighter).astype(np.uint8)  # every pixel off by exactly 1
    np.testing.assert_allclose(image_metrics.psnr(a, brighter), 20 * np.log10(255.0), rtol=1e-6)
    mse = np.mean((a.astype(np.float64) - b) ** 2, axis=(1, 2, 3))
    np.testing.assert_allclose(image_metrics.psnr(a, b), 10 * np.log10(255.0 ** 2 / mse), rtol=1e-5)
    # Floats in [-1, 1] are the same images.
    np.testing.assert_allclose(image_metrics.psnr(a / 127.5 - 1, b / 127.5 - 1), image_metrics.psnr(a, b), rtol=1e-5)


def test_ssim_matches_skimage_definition(image_pair):
    a, b = image_pair
    ours = np.asarray(image_metrics.ssim(a, b))
    expected = [skimage_ssim(x, y) for x, y in zip(a, b)]
    assert 0.2 < min(expected) and max(expected) < 0.95
    np.testing.assert_allclose(ours, expected, rtol=1e-4)
    np.testing.assert_allclose(image_metrics.ssim(a / 127.5 - 1, b / 127.5 - 1), ours, rtol=1e-4)
    np.testing.assert_array_equal(image_metrics.ssim(a, a), 1.0)


def test_ssim_and_psnr_refuse_bad_pairs(image_pair):
    a, b = image_pair
    with pytest.raises(ValueError, match="differ in shape"):
        image_metrics.psnr(a, b[:, :30])
    with pytest.raises(ValueError, match="11x11 window"):
        image_metrics.ssim(a[:, :10], b[:, :10])


def test_gaussian_window_is_scipys():
    taps = image_metrics.gaussian_window()
    impulse = np.zeros(21)
    impulse[10] = 1
    np.testing.assert_allclose(taps, ndimage.gaussian_filter1d(impulse, 1.5, truncate=3.5)[5:16], rtol=1e-12)


def test_lpips_distances(image_pair):
    a, b = image_pair
    module = LPIPS(widths=(8, 16, 16, 32, 32))
    rng = np.random.default_rng(1)
    params = jax.tree.map(lambda s: np.abs(0.1 * rng.standard_normal(s.shape)).astype(np.float32),
                          lpips_weights.abstract_lpips_params(module))
    a, b = a[:, :16, :16], b[:, :16, :16]
    distances = jax.jit(image_metrics.lpips_distances, static_argnames="module")
    same = distances(params, a, a, module=module)
    different = distances(params, a, b, module=module)
    np.testing.assert_allclose(same, 0.0, atol=1e-12)
    assert different.shape == (3,) and np.all(np.asarray(different) > 1e-7)
    np.testing.assert_allclose(distances(params, a / 127.5 - 1, b / 127.5 - 1, module=module),
                               different, rtol=1e-5)
