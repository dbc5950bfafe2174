"""`evaluate(settings, out_dir)`: the paper's metrics of a checkpoint or of generated images (`ldm-jax evaluate`).

    settings = EvaluationSettings(checkpoint="cin256-v2.ckpt", config="configs/cin256_ldm_vq4.py",
                                  num_samples=50_000, steps=250, guidance_scale=1.5,
                                  reference_stats="VIRTUAL_imagenet256_labeled.npz",
                                  inception_weights="pt_inception-2015-12-05-6726825d.pth")
    results = evaluate(settings, "eval/cin256")     # also written to eval/cin256/results.json

What is scored:
- a diffusion checkpoint: `num_samples` samples (`image_sources.diffusion_sampler`), written batch by
  batch to DIR/samples/ (`sample_store`: a stopped run continues with the missing batches and gives
  the samples of an uninterrupted one); metrics fid, is, precision_recall, and clip_score for text models;
- a super-resolution or LDM inpainting checkpoint: its output for each of the first `num_samples`
  images of `data` (default: all of them, at most 50,000), in order (`image_sources.super_resolver`:
  the target downsampled by the model's factor and upscaled back; `image_sources.inpainter`: the
  image under the fixed evaluation mask of its index, `mask_coverage`, known pixels kept), also
  stored batch by batch; metrics fid (against `data`'s first `num_reference` images, default the
  originals themselves, or `reference_stats`), is, precision_recall, and psnr, ssim, lpips of each
  output against its original (Tab. 5: FID, IS, PSNR, SSIM; Tab. 7: FID, LPIPS);
- `samples`: a folder of images or an ADM `.npz` generated elsewhere, or the samples/ folder of an
  earlier evaluation (scored again, e.g. against another reference); the same metrics (clip_score with
  `prompts`);
- an autoencoder checkpoint (a first stage alone): the first `num_samples` images of `data`,
  reconstructed (also into DIR/samples/); metrics psnr, ssim, lpips (mean and std over the images,
  as Tab. 8) and r_fid, the FID of the reconstructions against their originals.
The default metrics are those that apply and can be computed from what was given.

Features: "inception" is the FID Inception-v3 (pool3 for FID and precision/recall, `logits_unbiased`
for IS, as torch-fidelity), from `inception_weights`. "builtin" is the small classifier of
`feature_net`, trained here on the built-in shapes at the evaluated image size (`feature_net_steps`,
cached in DIR/cache/): a CPU stand-in for toy models. Its pooled features stand in for pool3 and
its 12-way logits for Inception's in IS, so that IS is bounded by 12 and comparable only between
runs with the same network. With `vgg16_weights`, precision/recall use VGG-16 fc2 (after its ReLU,
torch-fidelity's layer); otherwise the FID features (as ADM's evaluator, which the paper used).

Reference: `reference_stats` (a pytorch-fid `mu` / `sigma` file, or an ADM reference batch, whose
`arr_0` images also serve precision/recall), or `data` (see `image_sources.data_config`), whose first
`num_reference` images are summarised once and cached in `cache_dir` (default DIR/cache; evaluations
may share one) as reference_*.npz, a pytorch-fid statistics file keyed by the data, image size, count
and feature network (results.json names it: pass it as `reference_stats` later). Features are
accumulated batch by batch (`features.summarize`); only IS logits and precision/recall features are
kept whole.

CLIP score (`clip_score`): 100 * max(cos(CLIP image embedding, prompt embedding), 0) averaged over the
samples of a text model (or `samples` with `prompts`), with the CLIP model of `clip_weights`.

results.json: {"settings", "model", "metrics", "num_samples", "num_reference", "reference_file",
"versions", "wall_time_s", "device", "complete", "batches_resumed"}, and "clip_model" (its layout and
sizes) with clip_score; metrics are flat numbers: fid, is, is_std, precision, recall, psnr, psnr_std,
ssim, ssim_std, lpips, lpips_std, r_fid, clip_score, clip_score_std. Evaluation
runs in one process (its local devices); `wall_time_s` is this run's, resumed batches not included.

This module runs the evaluation; the parts live beside it: `settings` (EvaluationSettings, checked
when made), `sources` (what is scored and how its samples are drawn) and `scoring` (which metrics,
the feature network, the reference, the values).
"""
import dataclasses
import importlib.metadata
import json
import os
import pathlib
import platform
import time

import jax

import ldm_jax
from ldm_jax.evaluation import features, image_sources, sample_store
from ldm_jax.evaluation.clip_score import clip_metrics
from ldm_jax.evaluation.scoring import per_image_metrics, resolve_metrics, score
# The settings' names are part of this module's interface: `from ldm_jax.evaluation.evaluate import ...`.
from ldm_jax.evaluation.settings import FEATURES, METRICS, EvaluationSettings, SettingsError
from ldm_jax.evaluation.sources import fill, open_source

__all__ = ["EvaluationSettings", "FEATURES", "METRICS", "SettingsError", "device_description", "evaluate",
           "versions"]

RESULTS_FILE = "results.json"
CACHE_FOLDER = "cache"


def versions() -> dict[str, str]:
    """The software an evaluation ran with."""
    packages = {name: importlib.metadata.version(name) for name in ("jax", "jaxlib", "flax", "numpy")}
    return {"python": platform.python_version(), **packages, "ldm_jax": ldm_jax.__version__}


def device_description() -> str:
    """e.g. "1 x NVIDIA H100 80GB HBM3" or "8 x cpu": this process's local devices."""
    devices = jax.local_devices()
    return f"{len(devices)} x {devices[0].device_kind}"


def evaluate(settings: EvaluationSettings, out_dir: str | os.PathLike, *, progress: bool = True,
             max_batches: int | None = None) -> dict:
    """Samples (or reconstructs, or reads) the images of `settings`, scores them, writes DIR/results.json.

    Rerun with the same settings, it continues a stopped run. `max_batches` draws at most that many
    missing batches and returns early ({"complete": False, ...}, no results.json) when some remain:
    for time-sliced jobs. Raises SettingsError (a ValueError) for settings that do not fit their files
    or model, SettingsMismatchError when `out_dir` holds samples drawn with other settings.
    """
    settings.check_files()
    if max_batches is not None and max_batches < 1:
        raise ValueError(f"max_batches must be >= 1 (or None for all), got {max_batches}")
    started = time.perf_counter()
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    source = open_source(settings)
    metrics = resolve_metrics(settings, source.kind, source.num_samples, paired=source.paired,
                              prompted=source.prompts is not None)
    sample_store.check_settings(out_dir, source.record)
    store = None
    if source.kind != "samples":
        store = sample_store.SampleStore.in_dir(out_dir, source.num_samples, settings.batch_size)
        done_before = store.num_batches - len(store.missing())
        if not fill(store, source, settings, progress, max_batches):
            missing = len(store.missing())
            return {"settings": source.record, "complete": False, "num_batches": store.num_batches,
                    "batches_done": store.num_batches - missing, "wall_time_s": time.perf_counter() - started}
    cache = pathlib.Path(settings.cache_dir).expanduser() if settings.cache_dir else out_dir / CACHE_FOLDER

    def batches():
        return store.batches() if store else image_sources.sample_batches(
            settings.samples, source.num_samples, source.image_size, settings.batch_size)

    values, reference = score(settings, source, batches(), metrics, cache, progress)
    if source.paired:
        values.update(per_image_metrics(settings, source, store, metrics, progress))
    clip_model = None
    if "clip_score" in metrics:   # a second pass over the stored samples, through the CLIP image tower
        clip_values, clip_model = clip_metrics(settings, source.prompts, batches(),
                                               -(-source.num_samples // settings.batch_size), progress)
        values.update(clip_values)
    resolved = {**dataclasses.asdict(settings), "num_samples": source.num_samples, "image_size": source.image_size,
                "num_reference": reference.count, "metrics": list(metrics)}
    results = {"settings": resolved, "model": {"kind": source.kind, "conditioning": source.conditioning},
               "metrics": {name: values[name] for name in sorted(values)}, "num_samples": source.num_samples,
               "num_reference": reference.count, "reference_file": reference.file, "versions": versions(),
               "wall_time_s": time.perf_counter() - started, "device": device_description(), "complete": True,
               "batches_resumed": done_before if store else 0}
    if clip_model:
        results["clip_model"] = clip_model
    text = json.dumps(results, indent=2)
    features.atomic_write(out_dir / RESULTS_FILE, lambda file: file.write(text.encode()))
    return results
