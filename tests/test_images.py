"""Image conversion, masks at latent resolution, grids, layout tokens and tiled decoding."""
import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from ldm_jax import images, layout
from ldm_jax.inference import tiled_decode


def test_image_round_trip_and_rounding_to_multiples(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, (70, 100, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "a.png")
    array = images.image_to_array(tmp_path / "a.png", multiple=32)
    assert array.shape == (1, 64, 96, 3) and array.min() >= -1 and array.max() <= 1
    exact = images.image_to_array(pixels, 70, 100)
    back = np.asarray(images.array_to_images(exact)[0]).astype(int)
    assert np.abs(back - pixels).max() <= 1   # the reference truncates 255 * (x + 1) / 2


def test_mask_threshold_and_nearest_downsampling():
    mask = np.zeros((8, 8), np.uint8)
    mask[2:6, 4:] = 200
    array = images.mask_to_array(mask, 8, 8)
    assert array.shape == (1, 8, 8, 1) and set(np.unique(array)) == {0.0, 1.0}
    small = images.mask_to_latent(array, 4, 4)
    np.testing.assert_array_equal(small[0, :, :, 0], array[0, ::2, ::2, 0])


def test_nearest_resize_picks_torch_source_pixels_in_numpy_and_under_jit():
    # Rows numbered 0..6 and columns 0..4, so the output shows which source pixel each one took.
    x = (10 * np.arange(7)[:, None] + np.arange(5)[None, :]).astype(np.float32)[None, :, :, None]
    small = images.nearest_resize(x, 3, 10)          # down along H, up along W
    assert isinstance(small, np.ndarray)
    np.testing.assert_array_equal(small[0, :, 0, 0] // 10, [0, 2, 4])                  # floor(o * 7 / 3)
    np.testing.assert_array_equal(small[0, 0, :, 0], [0, 0, 1, 1, 2, 2, 3, 3, 4, 4])  # floor(o * 5 / 10)
    resize = jax.jit(images.nearest_resize, static_argnums=(1, 2))
    for height, width in ((3, 10), (12, 2)):
        np.testing.assert_array_equal(np.asarray(resize(jnp.asarray(x), height, width)),
                                      images.nearest_resize(x, height, width))


def test_segmentation_one_hot():
    labels = np.array([[0, 2], [1, 2]])
    onehot = images.segmentation_to_onehot(labels, 3)
    assert onehot.shape == (1, 2, 2, 3)
    np.testing.assert_array_equal(onehot[0].argmax(-1), labels)


def test_make_grid_layout():
    tiles = [Image.new("RGB", (4, 3), (i * 40, 0, 0)) for i in range(5)]
    grid = images.make_grid(tiles, rows=2)
    assert grid.size == (12, 6)
    assert grid.getpixel((4, 0)) == (40, 0, 0) and grid.getpixel((0, 3)) == (120, 0, 0)


def test_layout_tokens_follow_the_reference_builder():
    tokens = layout.layout_tokens([(5, 0.0, 0.0, 1.0, 1.0), {"category": 7, "bbox": [0.5, 0.5, 0.9, 0.9],
                                                               "is_group_of": True}])
    assert tokens.shape == (92,)
    assert list(tokens[:3]) == [5, 0, 89 * 90 + 89]
    assert list(tokens[3:6]) == [7 + 601, layout.coordinate_token(0.5, 0.5), 8099]   # clamped to the image
    assert (tokens[6:90] == 8191).all() and list(tokens[90:]) == [0, 8099]


def _local_decoder(z):
    """An attention- and norm-free upsampling decoder: receptive field of 2 latent pixels."""
    kernel = jnp.asarray(np.random.default_rng(0).normal(size=(3, 3, z.shape[-1], 3)), jnp.float32)
    x = jax.lax.conv_general_dilated(z, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    x = jnp.repeat(jnp.repeat(jnp.tanh(x), 4, 1), 4, 2)
    return jax.lax.conv_general_dilated(x, jnp.ones((3, 3, 3, 3)) / 27, (1, 1), "SAME",
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))


def test_tiled_decoding_equals_plain_decoding_for_a_local_decoder():
    z = jnp.asarray(np.random.default_rng(1).normal(size=(2, 20, 28, 4)), jnp.float32)
    plain = _local_decoder(z)
    # The decoder reaches 5 pixels; 6 latent pixels of overlap = 24 pixels, of which the outer 12 get
    # weight 0, so every weighted pixel saw its full context: tiled equals plain up to rounding.
    tiled = tiled_decode.decode_tiled(_local_decoder, z, tile=12, overlap=6, factor=4)
    assert tiled.shape == plain.shape
    assert float(jnp.abs(tiled - plain).max()) < 1e-5
    assert tiled_decode.tile_starts(20, 12, 6) == [0, 6, 8]
