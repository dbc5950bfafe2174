"""Streaming statistics, sharded extraction over the 8 simulated CPU devices, and the statistics / ADM files."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ldm_jax.evaluation import features, fid
from tests.evaluation import reference_packages


class TinyFeatures(nn.Module):
    """A stand-in feature network: a conv, a spatial mean (`pool`) and a dense head (`logits`)."""

    @nn.compact
    def __call__(self, images):
        x = images.astype(jnp.float32) / 127.5 - 1
        x = nn.relu(nn.Conv(6, (3, 3), strides=2)(x))
        pool = jnp.mean(x, axis=(1, 2))
        return {"pool": pool, "logits": nn.Dense(4)(pool)}


@pytest.fixture(scope="module")
def tiny():
    module = TinyFeatures()
    variables = module.init(jax.random.key(0), jnp.zeros((1, 8, 8, 3), jnp.uint8))
    return module, variables


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (13, 8, 8, 3), dtype=np.uint8)


def _batches(images, size):
    return [images[i:i + size] for i in range(0, len(images), size)]


def test_running_moments_equal_the_in_memory_statistics():
    rng = np.random.default_rng(1)
    data = 1000.0 + rng.standard_normal((257, 6)) @ rng.standard_normal((6, 6))  # a large offset
    moments = features.RunningMoments()
    for batch in _batches(data, 50):
        moments.update(batch)
    mu, sigma = moments.statistics()
    assert moments.count == 257
    np.testing.assert_allclose(mu, data.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(sigma, np.cov(data, rowvar=False), rtol=1e-9, atol=1e-12)
    with pytest.raises(ValueError, match="width 5"):
        moments.update(data[:3, :5])
    with pytest.raises(ValueError, match="at least 2 samples"):
        features.RunningMoments().statistics()


def test_sharded_extraction_equals_single_device(tiny, images):
    module, variables = tiny
    assert jax.local_device_count() == 8
    apply = lambda v, x: module.apply(v, x)  # noqa: E731
    sharded = features.sharded_feature_fn(apply, variables, batch_size=5)  # padded to 8: one row per device
    single = features.sharded_feature_fn(apply, variables, batch_size=5, devices=jax.local_devices()[:1])
    direct = module.apply(variables, images)
    for batch_index, batch in enumerate(_batches(images, 5)):
        ours, alone = sharded(batch), single(batch)
        assert ours["pool"].shape == (len(batch), 6) and ours["logits"].shape == (len(batch), 4)
        for name in ("pool", "logits"):
            np.testing.assert_allclose(ours[name], alone[name], rtol=1e-6, atol=1e-6)
            np.testing.assert_allclose(ours[name], direct[name][5 * batch_index:5 * batch_index + len(batch)],
                                       rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="exceeds batch_size=5"):
        sharded(images[:6])


def test_summarize_streams_statistics_and_keeps_what_is_asked(tiny, images):
    module, variables = tiny
    feature_fn = features.sharded_feature_fn(lambda v, x: module.apply(v, x), variables, batch_size=4)
    summary = features.summarize(feature_fn, _batches(images, 4), moments=("pool",), keep=("logits",))
    direct = module.apply(variables, images)
    assert summary.count == 13 and set(summary.statistics) == {"pool"}
    expected = fid.statistics_of(np.asarray(direct["pool"]))
    np.testing.assert_allclose(summary.statistics["pool"].mu, expected.mu, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(summary.statistics["pool"].sigma, expected.sigma, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(summary.kept["logits"], direct["logits"], rtol=1e-5, atol=1e-6)
    with pytest.raises(KeyError, match="pool3"):
        features.summarize(feature_fn, _batches(images, 4), moments=("pool3",))


def test_statistics_file_is_read_by_pytorch_fid(tmp_path):
    rng = np.random.default_rng(2)
    stats = fid.statistics_of(rng.standard_normal((40, 5)))
    path = features.save_statistics(tmp_path / "stats" / "reference.npz", stats)
    fid_score = reference_packages.pytorch_fid_modules().fid_score
    mu, sigma = fid_score.compute_statistics_of_path(str(path), None, 50, 2048, "cpu")
    np.testing.assert_array_equal(mu, stats.mu)
    np.testing.assert_array_equal(sigma, stats.sigma)
    loaded = features.load_statistics(path)
    np.testing.assert_array_equal(loaded.mu, stats.mu)
    np.testing.assert_array_equal(loaded.sigma, stats.sigma)
    assert [p.name for p in path.parent.iterdir()] == ["reference.npz"]  # no temporary file left


def test_adm_batches_stream_in_and_out(tmp_path, tiny, images):
    module, variables = tiny
    # Written from streamed batches, read back by numpy and streamed out in other batch sizes.
    path = features.save_image_batch(tmp_path / "samples.npz", _batches(images, 5), count=len(images))
    with np.load(path) as archive:
        np.testing.assert_array_equal(archive["arr_0"], images)
    assert features.npz_array_shape(path) == ((13, 8, 8, 3), np.dtype(np.uint8))
    np.testing.assert_array_equal(np.concatenate(list(features.read_npz_images(path, 4))), images)
    # ADM's own files are np.savez(_compressed) archives.
    compressed = tmp_path / "adm_reference.npz"
    np.savez_compressed(compressed, arr_0=images)
    assert [len(b) for b in features.read_npz_images(compressed, 6)] == [6, 6, 1]
    with pytest.raises(ValueError, match="reference_statistics"):
        features.load_statistics(compressed)
    # Statistics are computed from arr_0 when the file stores none, and taken as stored otherwise.
    feature_fn = features.sharded_feature_fn(lambda v, x: module.apply(v, x), variables, batch_size=6)
    computed = features.reference_statistics(compressed, feature_fn, batch_size=6, feature="pool")
    expected = fid.statistics_of(np.asarray(module.apply(variables, images)["pool"]))
    np.testing.assert_allclose(computed.sigma, expected.sigma, rtol=1e-4, atol=1e-7)
    with_stats = features.save_image_batch(tmp_path / "ref.npz", [images], len(images), statistics=expected)
    stored = features.reference_statistics(with_stats, feature_fn, batch_size=6, feature="pool")
    np.testing.assert_array_equal(stored.mu, expected.mu)


def test_bad_adm_batches_are_refused(tmp_path, images):
    with pytest.raises(ValueError, match="12 images written, 13 announced"):
        features.save_image_batch(tmp_path / "short.npz", [images[:12]], count=13)
    with pytest.raises(ValueError, match="uint8"):
        features.save_image_batch(tmp_path / "float.npz", [images.astype(np.float32)], count=13)
    assert not list(tmp_path.iterdir())
    path = tmp_path / "other.npz"
    np.savez(path, images=images)
    with pytest.raises(KeyError, match="no array 'arr_0'"):
        next(features.read_npz_images(path, 4))
