"""`ldm-jax evaluate` end to end on tiny random checkpoints, the built-in feature net and built-in data."""
import dataclasses
import json

import ml_collections
import numpy as np
import pytest
from PIL import Image

from ldm_jax import cli, config_files
from ldm_jax.convert import checkpoint_files, compvis, lpips_weights
from ldm_jax.data import degradations, masks
from ldm_jax.data.synthetic import SyntheticShapes
from ldm_jax.evaluation import features, image_metrics, image_sources, sample_store
from ldm_jax.evaluation.evaluate import EvaluationSettings, evaluate
from ldm_jax.models import components
from tests.conftest import REPO, random_params, random_pipeline

VERSIONS = {"python", "jax", "jaxlib", "flax", "numpy", "ldm_jax"}


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> dict:
    """Toy evaluation settings sharing one cache, so the built-in feature net is trained once."""
    return dict(features="builtin", feature_net_steps=5, batch_size=4, cache_dir=str(tmp_path_factory.mktemp("cache")))


@pytest.fixture(scope="module")
def class_checkpoint(tmp_path_factory) -> str:
    """Random weights for the tiny class-conditional LDM (16x16 images, 12 classes + the null class)."""
    config = config_files.load_config(f"{REPO / 'configs' / 'cin256_ldm_vq4.py'}:tiny")
    path = tmp_path_factory.mktemp("checkpoints") / "cin_tiny.safetensors"
    compvis.save_checkpoint(path, config, random_pipeline(config, 0).variables)
    return str(path)


def _tiny_checkpoint(folder, config_name: str) -> str:
    """Random weights for the :tiny variant of a config (16x16 images, 4x4 latents), saved as a checkpoint."""
    config = config_files.load_config(f"{REPO / 'configs' / config_name}.py:tiny")
    path = folder / f"{config_name}_tiny.safetensors"
    compvis.save_checkpoint(path, config, random_pipeline(config, 0).variables)
    return str(path)


@pytest.fixture(scope="module")
def sr_checkpoint(tmp_path_factory) -> str:
    """The tiny LDM-BSR: x4 super-resolution, its 4x4 low-resolution input concatenated to the latent."""
    return _tiny_checkpoint(tmp_path_factory.mktemp("checkpoints"), "bsr_sr")


@pytest.fixture(scope="module")
def inpainting_checkpoint(tmp_path_factory) -> str:
    """The tiny inpainting_big: [E(masked image), mask] concatenated to the latent."""
    return _tiny_checkpoint(tmp_path_factory.mktemp("checkpoints"), "inpainting_big")


@pytest.fixture(scope="module")
def autoencoder_checkpoint(tmp_path_factory) -> str:
    """Random weights for the tiny KL-f4 autoencoder (16x16 images), saved as training exports it."""
    config = config_files.load_config(f"{REPO / 'configs' / 'kl_f4.py'}:tiny")
    model_config = ml_collections.ConfigDict({"model": config.model.to_dict()})
    variables = {"first_stage": {"params": random_params(components.abstract_params(config.model.first_stage), 3)}}
    path = tmp_path_factory.mktemp("checkpoints") / "kl_f4_tiny.safetensors"
    compvis.save_checkpoint(path, model_config, variables)
    return str(path)


@pytest.fixture(scope="module")
def real_images() -> np.ndarray:
    """The first 12 images of the built-in validation split at 16x16: what `--data builtin` reads."""
    source = SyntheticShapes(12, image_size=16, seed=1)
    return np.stack([source[i]["image"] for i in range(len(source))])


def _random_lpips_files(folder) -> tuple[str, str]:
    """Random LPIPS weights written as torchvision's VGG16 state dict and lpips' linear heads (safetensors)."""
    vgg16, linear = lpips_weights.lpips_params_to_torch(random_params(lpips_weights.abstract_lpips_params(), 5))
    paths = str(folder / "vgg16.safetensors"), str(folder / "vgg.safetensors")
    for state, path in zip((vgg16, linear), paths):
        checkpoint_files.write_safetensors({key: np.asarray(value) for key, value in state.items()}, path)
    return paths


def _sample_settings(toy, checkpoint, **more) -> EvaluationSettings:
    return EvaluationSettings(**{**toy, "checkpoint": checkpoint, "num_samples": 12, "steps": 2, "guidance_scale": 2.0,
                                 "data": "builtin", **more})


def test_class_conditional_checkpoint_end_to_end_and_resumed(toy, class_checkpoint, tmp_path):
    settings = _sample_settings(toy, class_checkpoint)
    whole = evaluate(settings, tmp_path / "whole", progress=False)

    assert whole == json.loads((tmp_path / "whole" / "results.json").read_text())
    assert whole["complete"] and whole["num_samples"] == 12 and whole["num_reference"] == 12
    assert set(whole["metrics"]) == {"fid", "is", "is_std", "precision", "recall"}
    assert np.isfinite(whole["metrics"]["fid"]) and whole["metrics"]["fid"] > 0
    assert 1.0 <= whole["metrics"]["is"] <= 12.0    # IS is bounded by the feature net's 12 classes
    recorded = whole["settings"]
    for name, value in {"checkpoint": class_checkpoint, "sampler": "ddim", "steps": 2, "eta": 0.0,
                        "guidance_scale": 2.0, "batch_size": 4, "seed": 0, "features": "builtin",
                        "feature_net_steps": 5, "data": "builtin", "image_size": 16}.items():
        assert recorded[name] == value, name
    assert recorded["metrics"] == ["fid", "is", "precision_recall"]
    assert set(whole["versions"]) == VERSIONS and whole["wall_time_s"] > 0
    assert whole["device"] == "8 x cpu" and whole["model"] == {"kind": "diffusion", "conditioning": "class"}

    # Stopped after one of three batches, then resumed: the samples and metrics of the whole run.
    partial = evaluate(settings, tmp_path / "resumed", progress=False, max_batches=1)
    assert not partial["complete"] and partial["batches_done"] == 1 and partial["num_batches"] == 3
    assert not (tmp_path / "resumed" / "results.json").exists()
    resumed = evaluate(settings, tmp_path / "resumed", progress=False)
    assert resumed["batches_resumed"] == 1
    assert resumed["metrics"] == whole["metrics"]
    for index in range(3):
        name = f"samples/batch_{index:06d}.npz"
        np.testing.assert_array_equal(np.load(tmp_path / "resumed" / name)["arr_0"],
                                      np.load(tmp_path / "whole" / name)["arr_0"])
    first = np.load(tmp_path / "whole" / "samples" / "batch_000000.npz")["arr_0"]
    assert first.shape == (4, 16, 16, 3) and first.dtype == np.uint8

    # The folder refuses to continue with other sampling settings, naming them.
    with pytest.raises(sample_store.SettingsMismatchError, match=r"steps: recorded 2, now 3"):
        evaluate(_sample_settings(toy, class_checkpoint, steps=3), tmp_path / "whole", progress=False)


def test_sample_folder_npz_and_reference_statistics(toy, real_images, tmp_path):
    """The real images scored as samples against themselves: FID 0, precision and recall 1."""
    folder = tmp_path / "pngs"
    folder.mkdir()
    for index, image in enumerate(real_images):
        Image.fromarray(image).save(folder / f"{index:03d}.png")
    features.save_image_batch(tmp_path / "samples.npz", [real_images], len(real_images))

    from_folder = evaluate(EvaluationSettings(samples=str(folder), data="builtin", **toy), tmp_path / "a",
                           progress=False)
    assert from_folder["num_samples"] == 12 and from_folder["model"]["kind"] == "samples"
    assert abs(from_folder["metrics"]["fid"]) < 1e-6
    assert from_folder["metrics"]["precision"] == from_folder["metrics"]["recall"] == 1.0

    from_npz = evaluate(EvaluationSettings(samples=str(tmp_path / "samples.npz"), data="builtin", **toy),
                        tmp_path / "b", progress=False)
    assert from_npz["metrics"] == from_folder["metrics"]

    # The cached reference is a pytorch-fid statistics file: as --reference-stats it gives the same FID.
    stats_file = from_folder["reference_file"]
    assert stats_file.startswith(toy["cache_dir"])
    features.load_statistics(stats_file)
    first_eight = evaluate(EvaluationSettings(samples=str(folder), num_samples=8, reference_stats=stats_file,
                                              metrics=("fid",), **toy), tmp_path / "c", progress=False)
    assert first_eight["reference_file"] == stats_file
    against_data = evaluate(EvaluationSettings(samples=str(folder), num_samples=8, num_reference=12, data="builtin",
                                               metrics=("fid",), **toy), tmp_path / "d", progress=False)
    assert first_eight["metrics"]["fid"] == pytest.approx(against_data["metrics"]["fid"], rel=1e-9)
    assert first_eight["metrics"]["fid"] > 0 and first_eight["num_reference"] is None


def test_autoencoder_reconstruction_metrics(toy, autoencoder_checkpoint, real_images, tmp_path):
    settings = EvaluationSettings(checkpoint=autoencoder_checkpoint, num_samples=6, data="builtin", **toy)
    results = evaluate(settings, tmp_path, progress=False)
    assert results["model"]["kind"] == "autoencoder"
    assert results["settings"]["metrics"] == ["psnr", "ssim", "r_fid"]
    assert set(results["metrics"]) == {"psnr", "psnr_std", "ssim", "ssim_std", "r_fid"}

    # The reconstructions in the sample shards, scored against their originals independently.
    store = sample_store.SampleStore.in_dir(tmp_path, 6, 4)
    reconstructions = np.concatenate(list(store.batches()))
    assert reconstructions.shape == (6, 16, 16, 3)
    psnr = np.asarray(image_metrics.psnr(real_images[:6], reconstructions), np.float64)
    ssim = np.asarray(image_metrics.ssim(real_images[:6], reconstructions), np.float64)
    assert results["metrics"]["psnr"] == pytest.approx(psnr.mean(), rel=1e-5)
    assert results["metrics"]["psnr_std"] == pytest.approx(psnr.std(), rel=1e-4)
    assert results["metrics"]["ssim"] == pytest.approx(ssim.mean(), rel=1e-5)
    assert np.isfinite(results["metrics"]["r_fid"]) and results["metrics"]["r_fid"] > 0

    with pytest.raises(ValueError, match="lpips needs LPIPS weights"):
        evaluate(EvaluationSettings(checkpoint=autoencoder_checkpoint, num_samples=6, data="builtin",
                                    metrics=("lpips",), **toy), tmp_path / "lpips", progress=False)
    with pytest.raises(ValueError, match="fid applies to generated samples"):
        evaluate(EvaluationSettings(checkpoint=autoencoder_checkpoint, num_samples=6, data="builtin",
                                    metrics=("fid",), **toy), tmp_path / "fid", progress=False)


@pytest.mark.slow   # a full-size (random) LPIPS VGG16
def test_autoencoder_lpips(toy, autoencoder_checkpoint, real_images, tmp_path):
    vgg16_file, linear_file = _random_lpips_files(tmp_path)
    settings = EvaluationSettings(checkpoint=autoencoder_checkpoint, num_samples=6, data="builtin", metrics=("lpips",),
                                  lpips_vgg16_weights=vgg16_file, lpips_linear_weights=linear_file, **toy)
    results = evaluate(settings, tmp_path, progress=False)
    assert set(results["metrics"]) == {"lpips", "lpips_std"}
    reconstructions = np.concatenate(list(sample_store.SampleStore.in_dir(tmp_path, 6, 4).batches()))
    params = lpips_weights.load_lpips_params(vgg16_file, linear_file)
    distances = np.asarray(image_metrics.lpips_distances(params, real_images[:6], reconstructions), np.float64)
    assert results["metrics"]["lpips"] == pytest.approx(distances.mean(), rel=1e-4)
    assert results["metrics"]["lpips_std"] == pytest.approx(distances.std(), rel=1e-3)


def _outputs(out_dir, count: int) -> np.ndarray:
    return np.concatenate(list(sample_store.SampleStore.in_dir(out_dir, count, 4).batches()))


def test_super_resolution_upscales_the_data_and_scores_psnr_ssim(toy, sr_checkpoint, real_images, tmp_path):
    settings = EvaluationSettings(checkpoint=sr_checkpoint, num_samples=8, steps=2, data="builtin", **toy)
    results = evaluate(settings, tmp_path, progress=False)
    assert results["model"] == {"kind": "diffusion", "conditioning": "super_resolution"}
    assert results["settings"]["metrics"] == ["fid", "precision_recall", "psnr", "ssim"]   # no LPIPS weights
    assert set(results["metrics"]) == {"fid", "precision", "recall", "psnr", "psnr_std", "ssim", "ssim_std"}
    assert all(np.isfinite(value) for value in results["metrics"].values())

    # The upscalings (16x16, from 4x4 inputs) in the shards, scored against their targets independently.
    outputs = _outputs(tmp_path, 8)
    assert outputs.shape == (8, 16, 16, 3) and outputs.dtype == np.uint8
    psnr = np.asarray(image_metrics.psnr(real_images[:8], outputs), np.float64)
    ssim = np.asarray(image_metrics.ssim(real_images[:8], outputs), np.float64)
    assert results["metrics"]["psnr"] == pytest.approx(psnr.mean(), rel=1e-5)
    assert results["metrics"]["ssim"] == pytest.approx(ssim.mean(), rel=1e-5)
    recorded = json.loads((tmp_path / "settings.json").read_text())
    assert recorded["task"] == "super_resolution" and recorded["sr_factor"] == 4 and recorded["data"] == "builtin"
    low = image_sources.low_resolution(real_images[:2], 4)
    np.testing.assert_array_equal(low[1], degradations.bicubic_degradation(real_images[1], 4))
    assert low.shape == (2, 4, 4, 3)

    with pytest.raises(ValueError, match="without classifier-free guidance"):
        evaluate(dataclasses.replace(settings, guidance_scale=2.0), tmp_path / "guided", progress=False)
    with pytest.raises(ValueError, match="r_fid is the FID of an autoencoder"):
        evaluate(dataclasses.replace(settings, metrics=("r_fid",)), tmp_path / "r_fid", progress=False)


def test_inpainting_keeps_the_known_pixels_and_resumes(toy, inpainting_checkpoint, real_images, tmp_path):
    settings = EvaluationSettings(checkpoint=inpainting_checkpoint, num_samples=8, steps=2, data="builtin",
                                  metrics=("fid", "psnr", "ssim"), **toy)
    whole = evaluate(settings, tmp_path / "whole", progress=False)
    assert whole["model"] == {"kind": "diffusion", "conditioning": "inpainting"}
    assert set(whole["metrics"]) == {"fid", "psnr", "psnr_std", "ssim", "ssim_std"}
    assert all(np.isfinite(value) for value in whole["metrics"].values())

    # Image i under evaluation mask i: the pixels outside it are the original's, those inside generated.
    outputs = _outputs(tmp_path / "whole", 8)
    generate = np.stack([masks.evaluation_mask(16, 16, index) for index in range(8)])[..., 0] >= 0.5
    originals = real_images[:8]
    np.testing.assert_array_equal(outputs[~generate], originals[~generate])
    assert generate.any() and (outputs[generate] != originals[generate]).any()

    # Stopped after one of two batches, then resumed: the samples and metrics of the whole run.
    partial = evaluate(settings, tmp_path / "resumed", progress=False, max_batches=1)
    assert not partial["complete"] and partial["batches_done"] == 1
    resumed = evaluate(settings, tmp_path / "resumed", progress=False)
    assert resumed["batches_resumed"] == 1 and resumed["metrics"] == whole["metrics"]
    np.testing.assert_array_equal(_outputs(tmp_path / "resumed", 8), outputs)

    # The finished run's shards scored again as --samples: the same FID, no model needed.
    again = evaluate(EvaluationSettings(samples=str(tmp_path / "whole" / "samples"), data="builtin", metrics=("fid",),
                                        **toy), tmp_path / "again", progress=False)
    assert again["num_samples"] == 8 and again["metrics"]["fid"] == pytest.approx(whole["metrics"]["fid"], rel=1e-9)

    with pytest.raises(ValueError, match="lpips needs LPIPS weights"):
        evaluate(dataclasses.replace(settings, metrics=("lpips",)), tmp_path / "lpips", progress=False)
    with pytest.raises(sample_store.SettingsMismatchError, match=r"mask_coverage: recorded \[0.1, 0.5\]"):
        evaluate(dataclasses.replace(settings, mask_coverage=(0.4, 0.5)), tmp_path / "whole", progress=False)


@pytest.mark.parametrize("settings, message", [
    (dict(), "no model source"),
    (dict(checkpoint="model.ckpt", samples="pngs"), "one model source, not both"),
    (dict(samples="pngs", metrics=("fid", "kid")), "unknown metric 'kid'"),
    (dict(samples="pngs", num_samples=0), "num_samples must be >= 1, got 0"),
    (dict(samples="pngs", data="builtin"), "features inception needs inception_weights"),
    (dict(samples="pngs", features="clip"), "unknown feature network 'clip'"),
    (dict(samples="pngs", sampler="heun"), "unknown sampler 'heun'"),
    (dict(samples="pngs", lpips_vgg16_weights="vgg16.pth"), "go together"),
    (dict(samples="missing_folder", features="builtin"), "samples 'missing_folder' does not exist"),
    (dict(samples="pngs", features="builtin", mask_coverage=[0.5, 0.4]), "mask_coverage must be LOW,HIGH"),
], ids=["no-source", "two-sources", "unknown-metric", "no-samples", "no-inception-weights", "unknown-features",
        "unknown-sampler", "half-lpips", "missing-samples", "bad-mask-coverage"])
def test_bad_settings_are_named(settings, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pngs").mkdir()
    (tmp_path / "model.ckpt").touch()
    with pytest.raises(ValueError, match=message):
        evaluate(EvaluationSettings(**settings), tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_metrics_that_do_not_apply_to_samples_are_named(toy, real_images, tmp_path):
    features.save_image_batch(tmp_path / "samples.npz", [real_images[:8]], 8)
    samples = str(tmp_path / "samples.npz")
    for metrics, message in ((("psnr",), "psnr compares reconstructions with their originals"),
                             (("fid",), "fid needs a reference"),
                             (("is",), "is needs at least 10 samples"),
                             (("precision_recall",), "precision_recall needs reference images")):
        with pytest.raises(ValueError, match=message):
            evaluate(EvaluationSettings(samples=samples, metrics=metrics, **toy), tmp_path / "out", progress=False)


def test_cli_evaluates_a_sample_folder(toy, real_images, tmp_path, capsys):
    features.save_image_batch(tmp_path / "samples.npz", [real_images], len(real_images))
    code = cli.main(["evaluate", "--samples", str(tmp_path / "samples.npz"), "--data", "builtin", "--features",
                     "builtin", "--feature-net-steps", "5", "--batch-size", "4", "--metrics", "fid,is",
                     "--cache-dir", toy["cache_dir"],
                     "--out", str(tmp_path / "out"), "--no-progress"])
    assert code == 0
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert set(results["metrics"]) == {"fid", "is", "is_std"}
    assert results["settings"]["metrics"] == ["fid", "is"]
    assert "fid" in capsys.readouterr().out


def test_cli_names_bad_settings_by_flag(tmp_path, capsys):
    (tmp_path / "pngs").mkdir()
    out = str(tmp_path / "out")
    assert cli.main(["evaluate", "--samples", str(tmp_path / "pngs"), "--num-samples", "0", "--out", out]) == 2
    assert "--num-samples must be >= 1, got 0" in capsys.readouterr().err
    assert cli.main(["evaluate", "--samples", "missing_folder", "--features", "builtin", "--out", out]) == 2
    assert "--samples 'missing_folder' does not exist" in capsys.readouterr().err
