"""Low-resolution inputs for super-resolution: plain bicubic down-sampling and the BSR degradation.

Both functions take an RGB image (H, W, 3), either uint8 or float in [0, 1], and return the
low-resolution image (H // factor, W // factor, 3) in the same kind: uint8 in -> uint8 out, float in
-> float32 in [0, 1] out. Sides that do not divide by `factor` are cropped first (bottom / right).

`bsr_degradation` follows `degradation_bsrgan_variant` of latent-diffusion
(`ldm/modules/image_degradation/bsrgan.py`, after BSRGAN, Zhang et al. 2021), restated:
  0. for factor 4, with probability 1/4: halve the image first (a random point-sampled
     interpolation, or antialiased bicubic) and go on with factor 2;
  1. in a random order, except that "down-sample 2" always comes before "down-sample 3":
     blur (twice; isotropic or anisotropic Gaussian kernels), down-sample 2 (with probability 3/4
     by a random factor in [1, 2 * factor] with a random interpolation, else a shifted Gaussian blur
     and nearest sub-sampling by `factor`), down-sample 3 (to the final size), Gaussian noise
     (colour, grey or channel-correlated, sigma 2..25 / 255), JPEG (probability 0.9, quality 30..95);
  2. a final JPEG compression.
`BSR_LIGHT` is the reference's `bsrgan_light` (the LDM-BSR super-resolution model's training data):
one blur with kernels a quarter as wide, noise 1..2 / 255, JPEG quality 80..95.
Point-sampled interpolations behave as OpenCV's `cv2.resize` (bilinear / bicubic with a = -0.75
and area averaging), implemented with numpy. All randomness comes from the given generator.
"""
import dataclasses
import io

import numpy as np
from PIL import Image
from scipy import linalg, ndimage, signal

POINT_SAMPLED = ("bilinear", "bicubic", "area")  # cv2 INTER_LINEAR, INTER_CUBIC, INTER_AREA


@dataclasses.dataclass(frozen=True)
class BSRSettings:
    """The knobs that distinguish the BSR variants (see the module docstring)."""
    blur_steps: int                            # how many shuffled steps blur
    blur_width_scale: float                    # multiplies the Gaussian kernels' widths
    anisotropic_size: tuple[int, int, int]     # kernel side = m * randint(lo, hi) + 3 as (m, lo, hi)
    isotropic_size: tuple[int, int, int]
    resize_probability: float                  # down-sample 2: resize (else blur + sub-sample)
    noise_levels: tuple[int, int]              # Gaussian noise sigma, in 8-bit levels
    jpeg_quality: tuple[int, int]
    jpeg_probability: float = 0.9
    halve_probability: float = 0.25


BSR = BSRSettings(blur_steps=2, blur_width_scale=1.0, anisotropic_size=(2, 2, 11), isotropic_size=(2, 2, 11),
                  resize_probability=0.75, noise_levels=(2, 25), jpeg_quality=(30, 95))
BSR_LIGHT = BSRSettings(blur_steps=1, blur_width_scale=0.25, anisotropic_size=(1, 2, 11),
                        isotropic_size=(1, 2, 4), resize_probability=0.8, noise_levels=(1, 2),
                        jpeg_quality=(80, 95))


def _to_float01(image) -> tuple[np.ndarray, bool]:
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[-1] != 3:
        raise ValueError(f"expected an RGB image (H, W, 3), got shape {array.shape}")
    if array.dtype == np.uint8:
        return array.astype(np.float32) / 255.0, True
    if array.dtype.kind != "f":
        raise ValueError(f"expected uint8 or float pixels in [0, 1], got dtype {array.dtype}")
    return array.astype(np.float32), False


def _from_float01(image: np.ndarray, as_uint8: bool) -> np.ndarray:
    if as_uint8:
        return np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)
    return np.clip(image, 0.0, 1.0).astype(np.float32)


def _mod_crop(image: np.ndarray, factor: int) -> np.ndarray:
    height, width = image.shape[:2]
    if height < factor or width < factor:
        raise ValueError(f"an image of {height}x{width} is smaller than the down-sampling factor {factor}")
    return image[:height - height % factor, :width - width % factor]


def bicubic_degradation(image, factor: int = 4) -> np.ndarray:
    """The image down-sampled by `factor` with PIL's antialiased bicubic filter."""
    pixels = np.asarray(image)
    as_float, as_uint8 = _to_float01(pixels)
    cropped = _mod_crop(pixels if as_uint8 else as_float, factor)
    size = (cropped.shape[1] // factor, cropped.shape[0] // factor)
    if as_uint8:
        return np.asarray(Image.fromarray(cropped).resize(size, Image.Resampling.BICUBIC))
    channels = [np.asarray(Image.fromarray(cropped[:, :, c], mode="F").resize(size, Image.Resampling.BICUBIC))
                for c in range(3)]
    return np.clip(np.stack(channels, axis=-1), 0.0, 1.0).astype(np.float32)


# -- kernels -----------------------------------------------------------------------------------------

def gaussian_kernel(size: int, covariance: np.ndarray) -> np.ndarray:
    """A (size, size) Gaussian kernel centred at ((size - 1) / 2, (size - 1) / 2), summing to one.

    Computed in log space, so a very narrow kernel is a delta, never all zeros or NaN.
    """
    offsets = np.arange(size) - (size - 1) / 2.0
    points = np.stack(np.meshgrid(offsets, offsets, indexing="xy"), axis=-1)  # [..., (x, y)]
    precision = np.linalg.inv(covariance)
    log_density = -0.5 * np.einsum("...i,ij,...j->...", points, precision, points)
    kernel = np.exp(log_density - log_density.max())
    return kernel / kernel.sum()


def isotropic_kernel(size: int, sigma: float) -> np.ndarray:
    """MATLAB's fspecial('gaussian', size, sigma)."""
    sigma = max(float(sigma), 1e-3)
    return gaussian_kernel(size, np.eye(2) * sigma ** 2)


def anisotropic_kernel(size: int, theta: float, variance_1: float, variance_2: float) -> np.ndarray:
    """A Gaussian with eigenvalues (variance_1, variance_2) along directions rotated by `theta`."""
    c, s = np.cos(theta), np.sin(theta)
    basis = np.array([[c, s], [s, -c]])  # a reflection: its own inverse
    eigenvalues = np.diag([max(variance_1, 1e-6), max(variance_2, 1e-6)])
    return gaussian_kernel(size, basis @ eigenvalues @ basis)


def shift_kernel(kernel: np.ndarray, factor: int) -> np.ndarray:
    """The kernel moved up-left by (factor - 1) / 2 pixels (bilinear, edges clamped), renormalised,
    so that sub-sampling at [0::factor] samples the centre of each factor x factor block."""
    shift = (factor - 1) * 0.5
    shifted = ndimage.shift(kernel, (-shift, -shift), order=1, mode="nearest")
    return shifted / shifted.sum()


def convolve(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Each channel of `image` (H, W, C) convolved with `kernel`, mirrored at the edges.

    The same as `scipy.ndimage.convolve(image, kernel[..., None], mode="mirror")`, through FFTs:
    about 15x faster for the 25 x 25 kernels of the recipe.
    """
    before = [(n - 1) // 2 for n in kernel.shape]
    padding = [(b, n - 1 - b) for b, n in zip(before, kernel.shape)] + [(0, 0)]
    padded = np.pad(image, padding, mode="reflect")  # numpy's "reflect" is ndimage's "mirror"
    return signal.fftconvolve(padded, kernel[:, :, None], mode="valid", axes=(0, 1)).astype(np.float32)


# -- resizing ----------------------------------------------------------------------------------------

def _cubic(x: np.ndarray, a: float) -> np.ndarray:
    x = np.abs(x)
    return np.where(x <= 1, (a + 2) * x ** 3 - (a + 3) * x ** 2 + 1,
                    np.where(x < 2, a * x ** 3 - 5 * a * x ** 2 + 8 * a * x - 4 * a, 0.0))


def resize_weights(in_size: int, out_size: int, method: str) -> np.ndarray:
    """The (out_size, in_size) matrix that resamples one axis of an image; its rows sum to one.

    nearest / bilinear / bicubic / area follow cv2.resize (point-sampled at pixel centres, edge
    pixels replicated; area averages the covered input); "bicubic_antialias" is MATLAB's imresize
    kernel (a = -0.5, widened by the scale when shrinking) with PIL's edges (taps outside the image
    dropped, the rest renormalised), i.e. exactly PIL's BICUBIC resize.
    """
    scale = in_size / out_size
    weights = np.zeros((out_size, in_size))
    rows = np.arange(out_size)
    if method == "nearest":
        weights[rows, np.minimum(np.floor(rows * scale).astype(int), in_size - 1)] = 1.0
        return weights
    if method == "area":
        lo, hi = rows * scale, (rows + 1) * scale
        pixels = np.arange(in_size)
        overlap = np.clip(np.minimum(hi[:, None], pixels + 1) - np.maximum(lo[:, None], pixels), 0.0, None)
        return overlap / overlap.sum(axis=1, keepdims=True)
    centres = (rows + 0.5) * scale - 0.5
    if method == "bilinear":
        taps, kernel = np.arange(0, 2), lambda d: np.clip(1.0 - np.abs(d), 0.0, None)
    elif method == "bicubic":
        taps, kernel = np.arange(-1, 3), lambda d: _cubic(d, -0.75)
    elif method == "bicubic_antialias":
        width = max(scale, 1.0)
        reach = int(np.ceil(2 * width))
        taps, kernel = np.arange(-reach, reach + 2), lambda d: _cubic(d / width, -0.5) / width
    else:
        raise ValueError(f"unknown resize method {method!r}; expected nearest, bilinear, bicubic, area or "
                         "bicubic_antialias")
    sources = np.floor(centres)[:, None] + taps[None, :]
    values = kernel(centres[:, None] - sources)
    if method == "bicubic_antialias":
        values = np.where((sources >= 0) & (sources < in_size), values, 0.0)  # PIL drops outside taps
    np.add.at(weights, (np.repeat(rows, len(taps)), np.clip(sources, 0, in_size - 1).astype(int).ravel()),
              values.ravel())
    return weights / weights.sum(axis=1, keepdims=True)


def resize(image: np.ndarray, height: int, width: int, method: str) -> np.ndarray:
    """A float image (H, W, C) resampled to (height, width) with `resize_weights(method)`."""
    height, width = max(1, int(height)), max(1, int(width))
    rows = resize_weights(image.shape[0], height, method)
    cols = resize_weights(image.shape[1], width, method)
    out = np.einsum("oh,hwc->owc", rows, image, optimize=True)
    return np.einsum("pw,owc->opc", cols, out, optimize=True).astype(np.float32)


# -- the degradation steps ---------------------------------------------------------------------------

def _randint(rng: np.random.Generator, lo: int, hi: int) -> int:
    """An int in [lo, hi], both included (Python's random.randint)."""
    return int(rng.integers(lo, hi + 1))


def random_blur(image: np.ndarray, rng: np.random.Generator, factor: int, settings: BSRSettings) -> np.ndarray:
    """Blur with a random anisotropic or isotropic Gaussian kernel (the reference's add_blur)."""
    aniso_width = (4.0 + factor) * settings.blur_width_scale
    iso_width = (2.0 + 0.2 * factor) * settings.blur_width_scale
    if rng.random() < 0.5:
        variance_1, variance_2 = aniso_width * rng.random(), aniso_width * rng.random()
        m, lo, hi = settings.anisotropic_size
        size = m * _randint(rng, lo, hi) + 3
        kernel = anisotropic_kernel(size, rng.random() * np.pi, variance_1, variance_2)
    else:
        m, lo, hi = settings.isotropic_size
        size = m * _randint(rng, lo, hi) + 3
        kernel = isotropic_kernel(size, iso_width * rng.random())
    return convolve(image, kernel)


def random_gaussian_noise(image: np.ndarray, rng: np.random.Generator, levels: tuple[int, int]) -> np.ndarray:
    """Add colour, grey or channel-correlated Gaussian noise (the reference's add_Gaussian_noise)."""
    sigma = _randint(rng, *levels) / 255.0
    choice = rng.random()
    if choice > 0.6:
        noise = rng.normal(0.0, sigma, image.shape)
    elif choice < 0.4:
        noise = rng.normal(0.0, sigma, (*image.shape[:2], 1))
    else:
        scale = levels[1] / 255.0
        eigenvalues = np.diag(rng.random(3))
        rotation = linalg.orth(rng.random((3, 3)))
        covariance = np.abs(scale ** 2 * rotation.T @ eigenvalues @ rotation)
        noise = rng.multivariate_normal(np.zeros(3), covariance, image.shape[:2], check_valid="ignore")
    return np.clip(image + noise.astype(np.float32), 0.0, 1.0)


def jpeg_compress(image: np.ndarray, quality: int) -> np.ndarray:
    """A float image in [0, 1] through 8-bit JPEG at `quality` and back."""
    buffer = io.BytesIO()
    Image.fromarray(_from_float01(image, as_uint8=True)).save(buffer, format="JPEG", quality=int(quality))
    with Image.open(io.BytesIO(buffer.getvalue())) as decoded:
        return np.asarray(decoded.convert("RGB"), np.float32) / 255.0


def _random_method(rng: np.random.Generator) -> str:
    return POINT_SAMPLED[int(rng.integers(len(POINT_SAMPLED)))]


def bsr_degradation(image, rng: np.random.Generator, factor: int = 4, settings: BSRSettings = BSR) -> np.ndarray:
    """The BSR (BSRGAN-variant) low-resolution version of `image`; see the module docstring."""
    pixels, as_uint8 = _to_float01(image)
    pixels = _mod_crop(pixels, factor)
    out_height, out_width = pixels.shape[0] // factor, pixels.shape[1] // factor
    scale = factor
    if factor == 4 and rng.random() < settings.halve_probability:
        method = _random_method(rng) if rng.random() < 0.5 else "bicubic_antialias"
        pixels = np.clip(resize(pixels, pixels.shape[0] // 2, pixels.shape[1] // 2, method), 0.0, 1.0)
        scale = 2

    order = list(rng.permutation(7))
    first, second = order.index(2), order.index(3)
    if first > second:  # down-sample 2 before down-sample 3
        order[first], order[second] = order[second], order[first]
    target = pixels.shape[:2]
    for step in order:
        if step < settings.blur_steps:  # steps 0 and 1 blur (only step 0 in the light variant)
            pixels = random_blur(pixels, rng, scale, settings)
        elif step == 2:
            target = pixels.shape[0] // scale, pixels.shape[1] // scale
            if rng.random() < settings.resize_probability:
                shrink = rng.uniform(1, 2 * scale)
                pixels = resize(pixels, int(pixels.shape[0] / shrink), int(pixels.shape[1] / shrink),
                                _random_method(rng))
            else:
                kernel = shift_kernel(isotropic_kernel(25, rng.uniform(0.1, 0.6 * scale)), scale)
                pixels = convolve(pixels, kernel)[0::scale, 0::scale]
            pixels = np.clip(pixels, 0.0, 1.0)
        elif step == 3:
            pixels = np.clip(resize(pixels, *target, _random_method(rng)), 0.0, 1.0)
        elif step == 4:
            pixels = random_gaussian_noise(pixels, rng, settings.noise_levels)
        elif step == 5 and rng.random() < settings.jpeg_probability:
            pixels = jpeg_compress(pixels, _randint(rng, *settings.jpeg_quality))
        # Step 6, the reference's camera-ISP noise, is disabled there too (no ISP model).
    pixels = jpeg_compress(pixels, _randint(rng, *settings.jpeg_quality))
    if pixels.shape[:2] != (out_height, out_width):  # cannot happen after a mod-crop; a clear error if it does
        raise AssertionError(f"BSR degradation produced {pixels.shape[:2]}, expected {(out_height, out_width)}")
    return _from_float01(pixels, as_uint8)
