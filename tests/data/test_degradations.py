"""Super-resolution inputs: bicubic and BSR degradations, their kernels and resamplers."""
import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from ldm_jax.data import degradations
from ldm_jax.data.synthetic import SyntheticShapes


def _smooth_image(size: int = 64) -> np.ndarray:
    rows, cols = np.mgrid[0:size, 0:size] / size
    image = np.stack([0.5 + 0.4 * np.sin(2 * np.pi * rows), 0.5 + 0.4 * np.cos(2 * np.pi * cols),
                      0.5 + 0.3 * np.sin(2 * np.pi * (rows + cols))], axis=-1)
    return np.round(image * 255).astype(np.uint8)


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0 ** 2 / mse))


def test_bicubic_down_then_up_is_close_to_the_clean_image():
    clean = _smooth_image(64)
    low = degradations.bicubic_degradation(clean, factor=4)
    assert low.shape == (16, 16, 3) and low.dtype == np.uint8
    up = np.asarray(Image.fromarray(low).resize((64, 64), Image.Resampling.BICUBIC))
    assert _psnr(up, clean) > 30.0


def test_bicubic_crops_to_a_multiple_and_keeps_float_inputs_float():
    image = _smooth_image(64)[:62, :63]
    assert degradations.bicubic_degradation(image, 4).shape == (15, 15, 3)
    as_float = degradations.bicubic_degradation(image.astype(np.float32) / 255.0, 4)
    assert as_float.dtype == np.float32 and 0.0 <= as_float.min() and as_float.max() <= 1.0
    as_uint8 = degradations.bicubic_degradation(image, 4)
    assert np.abs(as_float * 255.0 - as_uint8).max() <= 1.0


@pytest.mark.parametrize("settings", [degradations.BSR, degradations.BSR_LIGHT])
def test_bsr_has_the_low_resolution_size_and_is_deterministic_for_a_seed(settings):
    clean = SyntheticShapes(1, image_size=64, seed=3)[0]["image"]
    low = degradations.bsr_degradation(clean, np.random.default_rng(5), factor=4, settings=settings)
    assert low.shape == (16, 16, 3) and low.dtype == np.uint8
    again = degradations.bsr_degradation(clean, np.random.default_rng(5), factor=4, settings=settings)
    np.testing.assert_array_equal(low, again)
    others = [degradations.bsr_degradation(clean, np.random.default_rng(seed), factor=4, settings=settings)
              for seed in range(6, 10)]
    assert any(not np.array_equal(low, other) for other in others)


def test_bsr_differs_from_bicubic_but_stays_related_to_the_image():
    clean = _smooth_image(64)
    bicubic = degradations.bicubic_degradation(clean, 4)
    for seed in range(4):
        low = degradations.bsr_degradation(clean, np.random.default_rng(seed), factor=4)
        assert not np.array_equal(low, bicubic)
        # Blur, noise and JPEG, but still the same picture: well correlated with the plain down-sample.
        correlation = np.corrcoef(low.astype(float).ravel(), bicubic.astype(float).ravel())[0, 1]
        assert correlation > 0.6


@pytest.mark.parametrize("factor", [2, 4, 8])
def test_bsr_factors_and_float_inputs(factor):
    clean = _smooth_image(64).astype(np.float32) / 255.0
    low = degradations.bsr_degradation(clean, np.random.default_rng(factor), factor=factor)
    assert low.shape == (64 // factor, 64 // factor, 3)
    assert low.dtype == np.float32 and 0.0 <= low.min() and low.max() <= 1.0


def test_bsr_rejects_bad_inputs():
    with pytest.raises(ValueError, match="RGB"):
        degradations.bsr_degradation(np.zeros((16, 16), np.uint8), np.random.default_rng(0))
    with pytest.raises(ValueError, match="smaller"):
        degradations.bsr_degradation(np.zeros((2, 2, 3), np.uint8), np.random.default_rng(0), factor=4)


def test_kernels_are_normalised_centred_and_oriented():
    iso = degradations.isotropic_kernel(7, 1.5)
    assert iso.sum() == pytest.approx(1.0) and np.unravel_index(iso.argmax(), iso.shape) == (3, 3)
    np.testing.assert_allclose(iso, iso.T)
    delta = degradations.isotropic_kernel(6, 0.0)  # even size, zero width: still finite and normalised
    assert np.isfinite(delta).all() and delta.sum() == pytest.approx(1.0)
    # Variance 9 along x (theta = 0), 0.25 along y: the kernel is wide in columns, narrow in rows.
    wide = degradations.anisotropic_kernel(15, 0.0, 9.0, 0.25)
    assert wide.sum() == pytest.approx(1.0)
    assert wide[7, 4] > 10 * wide[4, 7]
    shifted = degradations.shift_kernel(degradations.isotropic_kernel(25, 2.0), 4)
    assert shifted.sum() == pytest.approx(1.0)
    centre = np.array(ndimage.center_of_mass(shifted))
    np.testing.assert_allclose(centre, (12 - 1.5, 12 - 1.5), atol=0.05)


def test_fft_convolution_matches_scipy_ndimage():
    rng = np.random.default_rng(0)
    image = rng.random((20, 13, 3)).astype(np.float32)
    for size in (3, 6, 25):  # 25 is wider than the image: mirrored more than once
        kernel = rng.random((size, size))
        expected = ndimage.convolve(image.astype(np.float64), kernel[:, :, None], mode="mirror")
        np.testing.assert_allclose(degradations.convolve(image, kernel), expected, atol=1e-4)


def test_resamplers_follow_their_definitions():
    rng = np.random.default_rng(1)
    image = rng.random((16, 12, 3)).astype(np.float32)
    block_means = image.reshape(8, 2, 6, 2, 3).mean(axis=(1, 3))
    # Halving: cv2's bilinear samples between pixel pairs, area averages them: both are 2x2 means.
    for method in ("bilinear", "area"):
        np.testing.assert_allclose(degradations.resize(image, 8, 6, method), block_means, atol=1e-6)
    np.testing.assert_array_equal(degradations.resize(image, 8, 6, "nearest"), image[::2, ::2])
    # MATLAB-style antialiased bicubic is PIL's bicubic.
    pil = np.stack([np.asarray(Image.fromarray(image[:, :, c], mode="F").resize((3, 4), Image.Resampling.BICUBIC))
                    for c in range(3)], axis=-1)
    np.testing.assert_allclose(degradations.resize(image, 4, 3, "bicubic_antialias"), pil, atol=1e-5)
    for method in ("nearest", "bilinear", "bicubic", "area", "bicubic_antialias"):
        rows = degradations.resize_weights(37, 11, method)
        np.testing.assert_allclose(rows.sum(axis=1), 1.0)
    with pytest.raises(ValueError, match="resize method"):
        degradations.resize(image, 4, 4, "lanczos9")
