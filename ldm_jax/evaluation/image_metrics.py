"""Per-image reconstruction metrics of the paper's autoencoder table (Tab. 8): PSNR, SSIM, LPIPS.

Tab. 8 reports each as mean ± std over the ImageNet-val images, so every function here returns one
value per image pair (N,) and the caller aggregates. Images are NHWC, uint8 in [0, 255] or float in
[-1, 1]; both metrics work on [0, 255] pixel values (floats are scaled, not rounded: pass uint8 for
the saved-image protocol).

- PSNR = 10 log10(255^2 / MSE), the MSE over all pixels and channels of one image; inf when equal.
- SSIM (Wang et al. 2004) as `skimage.metrics.structural_similarity(a, b, channel_axis=-1,
  data_range=255, gaussian_weights=True, sigma=1.5, use_sample_covariance=False)` computes it:
  an 11-tap Gaussian window (sigma 1.5, truncated at 3.5 sigma), K1 = 0.01, K2 = 0.03, the SSIM map
  averaged over the pixels whose window lies inside the image and over the channels.
- LPIPS through `ldm_jax.models.lpips.LPIPS` (VGG, v0.1).
The CLIP score is in `clip_score`.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ldm_jax.models import inception, lpips

DATA_RANGE = 255.0
SSIM_SIGMA = 1.5
SSIM_TRUNCATE = 3.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03


def _pair(a: jax.Array, b: jax.Array) -> tuple[jax.Array, jax.Array]:
    a, b = jnp.asarray(a), jnp.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"the two image batches differ in shape: {a.shape} vs {b.shape}")
    return inception.to_pixel_values(a), inception.to_pixel_values(b)


def psnr(images_a, images_b) -> jax.Array:
    """Peak signal-to-noise ratio in dB of each image pair on [0, 255], (N,); inf for identical images."""
    a, b = _pair(images_a, images_b)
    mse = jnp.mean(jnp.square(a - b), axis=(1, 2, 3))
    return 10.0 * jnp.log10(DATA_RANGE ** 2 / mse)


def gaussian_window(sigma: float = SSIM_SIGMA, truncate: float = SSIM_TRUNCATE) -> np.ndarray:
    """The normalised 1-D Gaussian taps of scipy's `gaussian_filter` (radius int(truncate * sigma + 0.5))."""
    radius = int(truncate * sigma + 0.5)
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    return taps / taps.sum()


def _filter_valid(x: jax.Array, taps: np.ndarray) -> jax.Array:
    """Separable filtering of (N, H, W, C) over H and W, keeping only windows inside the image."""
    size = len(taps)
    for axis in (1, 2):
        length = x.shape[axis] - size + 1
        x = sum(float(t) * jax.lax.slice_in_dim(x, i, i + length, axis=axis) for i, t in enumerate(taps))
    return x


def ssim(images_a, images_b, sigma: float = SSIM_SIGMA) -> jax.Array:
    """Structural similarity of each image pair, skimage's Gaussian-window definition on [0, 255], (N,)."""
    a, b = _pair(images_a, images_b)
    taps = gaussian_window(sigma)
    if min(a.shape[1:3]) < len(taps):
        raise ValueError(f"SSIM's {len(taps)}x{len(taps)} window does not fit images of shape {a.shape[1:3]}")
    # Second moments are shift-invariant: centring both images on a's mean keeps float32 accurate.
    shift = jnp.mean(a, axis=(1, 2), keepdims=True)
    a, b = a - shift, b - shift
    mean_a, mean_b = _filter_valid(a, taps), _filter_valid(b, taps)
    var_a = _filter_valid(a * a, taps) - mean_a * mean_a
    var_b = _filter_valid(b * b, taps) - mean_b * mean_b
    covariance = _filter_valid(a * b, taps) - mean_a * mean_b
    mean_a, mean_b = mean_a + shift, mean_b + shift
    c1, c2 = (SSIM_K1 * DATA_RANGE) ** 2, (SSIM_K2 * DATA_RANGE) ** 2
    numerator = (2 * mean_a * mean_b + c1) * (2 * covariance + c2)
    denominator = (mean_a * mean_a + mean_b * mean_b + c1) * (var_a + var_b + c2)
    return jnp.mean(numerator / denominator, axis=(1, 2, 3))


def _to_signed(images: jax.Array) -> jax.Array:
    images = jnp.asarray(images)
    if images.dtype == jnp.uint8:
        return images.astype(jnp.float32) / 127.5 - 1.0
    return images.astype(jnp.float32)


def lpips_distances(params, images_a, images_b, module: nn.Module | None = None) -> jax.Array:
    """LPIPS (VGG, v0.1) of each image pair, (N,); `params` from `ldm_jax.convert.lpips_weights`."""
    module = module or lpips.LPIPS()
    return module.apply({"params": params}, _to_signed(images_a), _to_signed(images_b))
