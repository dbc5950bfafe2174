"""Scoring the evaluated images: which metrics apply, the feature network, the reference, the values.

Feature metrics (fid / r_fid, is, precision_recall) come from one pass of the feature network over
the images (`features.summarize`), against reference statistics read from `reference_stats` or
summarised once from `data` and cached; per-image metrics (psnr, ssim, lpips) compare each output
with its original.
"""
import dataclasses
import hashlib
import json
import pathlib
from typing import Any

import flax.serialization
import jax
import numpy as np
from tqdm.auto import tqdm

from ldm_jax.data.config import default_data_config, pipeline_from_config
from ldm_jax.data.synthetic import SyntheticShapes
from ldm_jax.evaluation import feature_net, features, fid, image_metrics, image_sources, sample_store
from ldm_jax.evaluation.clip_score import clip_score_problem
from ldm_jax.evaluation.inception_score import inception_score
from ldm_jax.evaluation.precision_recall import NEIGHBOURHOOD, VGG16Fc2, load_vgg16_params, precision_recall
from ldm_jax.evaluation.settings import (GENERATED_METRICS, METRICS, RECONSTRUCTION_METRICS, EvaluationSettings,
                                         Problem, SettingsError, recorded_path)
from ldm_jax.evaluation.sources import Source, reference_images
from ldm_jax.parallel.local import pad_batch

IS_SPLITS = 10   # torch-fidelity's default
# The built-in feature net's training run: fixed, so its features (and cached statistics) do not
# change with the sampling seed or batch size.
FEATURE_NET_SEED = 0
FEATURE_NET_BATCH = 64
FEATURE_NET_RECORDS = 4096


# ----------------------------------------------------------------------------------------------
# Which metrics.


def resolve_metrics(settings: EvaluationSettings, kind: str, num_samples: int, *, paired: bool = False,
                    prompted: bool = False) -> tuple[str, ...]:
    """The metrics to compute: those asked for (each checked to apply), else every one that applies.

    `paired`: a diffusion model's samples are its outputs for the images of `data` (super-resolution,
    inpainting), so psnr, ssim and lpips against those images apply besides the generated metrics.
    `prompted`: each sample has a prompt (a text model's, or `prompts` for `samples`): clip_score applies.
    Reasons are `Problem` texts: they name settings as {field}.
    """
    lpips_reason = None if settings.lpips_vgg16_weights else (
        "needs LPIPS weights: {lpips_vgg16_weights} (torchvision's vgg16-397923af.pth) and {lpips_linear_weights} "
        "(lpips v0.1 vgg.pth)")
    if kind == "autoencoder":
        reasons = {"lpips": lpips_reason}
        wrong = {name: "applies to generated samples; an autoencoder is scored on reconstructions (psnr, ssim, "
                       "lpips, r_fid)" for name in GENERATED_METRICS}
    else:
        has_images = bool(settings.data) or bool(settings.reference_stats
                                                 and image_sources.npz_has_images(settings.reference_stats))
        reasons = {"fid": None if settings.data or settings.reference_stats else
                   "needs a reference: {reference_stats} (an .npz) or {data}",
                   "is": None if num_samples >= IS_SPLITS else
                   f"needs at least {IS_SPLITS} samples ({IS_SPLITS} splits), got {num_samples}",
                   "precision_recall": None if has_images else
                   "needs reference images: {data} (or an ADM reference batch with arr_0 as {reference_stats})"}
        if num_samples <= NEIGHBOURHOOD:
            reasons["precision_recall"] = f"needs more than {NEIGHBOURHOOD} samples, got {num_samples}"
        reasons["clip_score"] = clip_score_problem(settings, kind, prompted)
        if paired:
            reasons["lpips"] = lpips_reason
            wrong = {"r_fid": "is the FID of an autoencoder's reconstructions; a model's outputs for {data} are "
                              "scored with fid"}
        else:
            wrong = {name: "compares reconstructions with their originals: it applies to autoencoder checkpoints "
                           "and to super-resolution / inpainting models" for name in RECONSTRUCTION_METRICS}
    applicable = [name for name in METRICS if name not in wrong and reasons.get(name) is None]
    if settings.metrics is None:
        if not applicable:
            raise SettingsError(Problem("no metric can be computed: "
                                        + "; ".join(f"{name} {reason}" for name, reason in reasons.items() if reason)))
        return tuple(applicable)
    for name in settings.metrics:
        reason = wrong.get(name) or reasons.get(name)
        if reason:
            raise SettingsError(Problem(f"{{metrics}} {name}: {name} {reason}"))
    return tuple(dict.fromkeys(settings.metrics))


# ----------------------------------------------------------------------------------------------
# Feature networks.


@dataclasses.dataclass(frozen=True)
class FeatureNetwork:
    """A feature function and the names of its outputs for FID statistics and for IS logits."""
    key: dict[str, Any]           # identifies it in cache keys and results.json
    fn: features.FeatureFn
    moments: str
    logits: str


def _key_hash(key: dict) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def _builtin_feature_params(steps: int, image_size: int, cache: pathlib.Path, progress: bool) -> dict:
    """The built-in shapes classifier, trained once per (steps, image size) and cached as msgpack."""
    key = {"network": "builtin", "steps": steps, "image_size": image_size, "seed": FEATURE_NET_SEED,
           "batch_size": FEATURE_NET_BATCH}
    path = cache / f"feature_net_{_key_hash(key)}.msgpack"
    if path.exists():
        return flax.serialization.msgpack_restore(path.read_bytes())
    data = default_data_config()
    data.update(name="builtin", split="train", num_records=FEATURE_NET_RECORDS, image_size=image_size,
                batch_size=FEATURE_NET_BATCH, shuffle=True, seed=FEATURE_NET_SEED, task="image")
    pipeline = pipeline_from_config(data)
    bar = tqdm(total=steps, desc="feature net", disable=not progress, leave=False)
    try:
        params, _ = feature_net.train_feature_net(pipeline, num_classes=SyntheticShapes(1).num_classes, steps=steps,
                                                  seed=FEATURE_NET_SEED, progress=bar.update)
    finally:
        bar.close()
        pipeline.close()
    params = jax.device_get(params)
    features.atomic_write(path, lambda file: file.write(flax.serialization.msgpack_serialize(params)))
    return params


def feature_network(settings: EvaluationSettings, image_size: int, cache: pathlib.Path, progress: bool
                    ) -> FeatureNetwork:
    """The FID / IS feature network of `settings.features`."""
    if settings.features == "inception":
        from ldm_jax.convert.inception_weights import load_inception_params

        params = load_inception_params(settings.inception_weights)
        return FeatureNetwork({"network": "inception", "weights": recorded_path(settings.inception_weights),
                               "preprocessing": "torch_fidelity"},
                              features.inception_feature_fn(params, settings.batch_size), "pool3", "logits_unbiased")
    params = _builtin_feature_params(settings.feature_net_steps, image_size, cache, progress)
    key = {"network": "builtin", "steps": settings.feature_net_steps, "image_size": image_size}
    fn = feature_net.feature_fn(params, num_classes=SyntheticShapes(1).num_classes, batch_size=settings.batch_size)
    return FeatureNetwork(key, fn, "features", "logits")


def _with_vgg(network: FeatureNetwork, vgg16_weights: str, batch_size: int) -> FeatureNetwork:
    """`network` whose outputs also hold VGG-16's "vgg_fc2_relu" (precision/recall as torch-fidelity)."""
    module = VGG16Fc2()
    vgg = features.sharded_feature_fn(lambda variables, images: module.apply(variables, images),
                                      {"params": load_vgg16_params(vgg16_weights)}, batch_size)

    def fn(images):
        return {**network.fn(images), "vgg_fc2_relu": vgg(images)["fc2_relu"]}

    return dataclasses.replace(network, key={**network.key, "vgg16": recorded_path(vgg16_weights)}, fn=fn)


# ----------------------------------------------------------------------------------------------
# Reference.


def _save_summary(path: pathlib.Path, summary: features.FeatureSummary) -> None:
    arrays = {f"kept_{name}": value for name, value in summary.kept.items()}
    for statistics in summary.statistics.values():   # at most one: the FID features
        arrays.update(mu=statistics.mu, sigma=statistics.sigma)
    features.atomic_write(path, lambda file: np.savez(file, count=summary.count, **arrays))


def _load_summary(path: pathlib.Path, moments: list[str]) -> features.FeatureSummary:
    with np.load(path) as archive:
        statistics = {name: fid.Statistics(archive["mu"], archive["sigma"]) for name in moments}
        kept = {name[len("kept_"):]: archive[name] for name in archive.files if name.startswith("kept_")}
        return features.FeatureSummary(int(archive["count"]), statistics, kept)


@dataclasses.dataclass
class Reference:
    statistics: fid.Statistics | None = None     # for fid / r_fid
    features: np.ndarray | None = None           # for precision_recall
    count: int | None = None                     # images summarised here (None: statistics from a file)
    file: str | None = None                      # the statistics file used or written


def _reference(settings: EvaluationSettings, source: Source, network: FeatureNetwork, metrics, pr_output: str,
               cache: pathlib.Path, progress: bool) -> Reference:
    """The reference statistics and precision/recall features: from `reference_stats`, or `data` (cached)."""
    need_statistics = bool({"fid", "r_fid"} & set(metrics))
    reference = Reference()
    if need_statistics and settings.reference_stats:
        with np.load(settings.reference_stats) as archive:
            stored = {"mu", "sigma"} <= set(archive.files)
        if stored:
            reference = Reference(features.load_statistics(settings.reference_stats),
                                  file=recorded_path(settings.reference_stats))
    moments = [network.moments] if need_statistics and reference.statistics is None else []
    keep = [pr_output] if "precision_recall" in metrics else []
    if not (moments or keep):
        return reference
    if settings.data:
        count = source.num_samples if source.kind == "autoencoder" else (settings.num_reference or source.num_samples)
        spec = {"data": recorded_path(settings.data), "image_size": source.image_size}
    else:   # an ADM reference batch: its own images
        (count, *_), _ = features.npz_array_shape(settings.reference_stats)
        count = min(count, settings.num_reference or count)
        spec = {"data": recorded_path(settings.reference_stats)}

    def images():
        if settings.data:
            return reference_images(settings, source, count)
        return image_sources.rechunk(features.read_npz_images(settings.reference_stats, settings.batch_size), count,
                                     settings.batch_size, settings.reference_stats)

    key = {**spec, "count": count, "network": network.key, "moments": moments, "keep": keep}
    path = cache / f"reference_{_key_hash(key)}.npz"
    if path.exists():
        summary = _load_summary(path, moments)
    else:
        batches = tqdm(images(), total=-(-count // settings.batch_size), desc="reference", disable=not progress,
                       leave=False)
        summary = features.summarize(network.fn, batches, moments=moments, keep=keep)
        _save_summary(path, summary)
    reference.features, reference.count = summary.kept.get(pr_output), summary.count
    if moments:
        reference.statistics, reference.file = summary.statistics[network.moments], str(path)
    return reference


# ----------------------------------------------------------------------------------------------
# Scoring.


def per_image_metrics(settings: EvaluationSettings, source: Source, store: sample_store.SampleStore, metrics,
                      progress: bool) -> dict[str, float]:
    """Mean and std of PSNR / SSIM / LPIPS over the (original, output) pairs."""
    if not {"psnr", "ssim", "lpips"} & set(metrics):
        return {}
    fns = {"psnr": jax.jit(image_metrics.psnr), "ssim": jax.jit(image_metrics.ssim)}
    if "lpips" in metrics:
        from ldm_jax.convert.lpips_weights import load_lpips_params

        lpips_params = load_lpips_params(settings.lpips_vgg16_weights, settings.lpips_linear_weights)
        lpips_fn = jax.jit(image_metrics.lpips_distances)
        fns["lpips"] = lambda a, b: lpips_fn(lpips_params, a, b)
    fns = {name: fn for name, fn in fns.items() if name in metrics}
    values = {name: [] for name in fns}
    pairs = zip(reference_images(settings, source, source.num_samples), store.batches())
    for originals, reconstructions in tqdm(pairs, total=store.num_batches, desc="psnr/ssim", disable=not progress,
                                           leave=False):
        # Padded to one batch size: one compilation; the padding's values are cut off.
        a = pad_batch(originals, settings.batch_size)
        b = pad_batch(reconstructions, settings.batch_size)
        for name, fn in fns.items():
            values[name].append(np.asarray(fn(a, b))[:len(originals)])
    out = {}
    for name, parts in values.items():
        joined = np.concatenate(parts).astype(np.float64)
        out.update({name: float(joined.mean()), f"{name}_std": float(joined.std())})
    return out


def _check_widths(reference: fid.Statistics, samples: fid.Statistics, network: FeatureNetwork) -> None:
    if reference.mu.shape != samples.mu.shape:
        raise SettingsError(Problem(
            f"the reference statistics have width {reference.mu.shape[0]}, the {network.key['network']} features "
            f"{samples.mu.shape[0]}: {{reference_stats}} must come from the same feature network"))


def score(settings: EvaluationSettings, source: Source, batches, metrics, cache: pathlib.Path, progress: bool
          ) -> tuple[dict[str, float], Reference]:
    """The feature metrics of the evaluated images (fid / r_fid, is, precision_recall), and the reference."""
    if not {"fid", "is", "precision_recall", "r_fid"} & set(metrics):
        return {}, Reference()
    network = feature_network(settings, source.image_size, cache, progress)
    if "precision_recall" in metrics and settings.vgg16_weights:
        network, pr_output = _with_vgg(network, settings.vgg16_weights, settings.batch_size), "vgg_fc2_relu"
    else:
        pr_output = network.moments
    reference = _reference(settings, source, network, metrics, pr_output, cache, progress)
    moments = [network.moments] if {"fid", "r_fid"} & set(metrics) else []
    keep = ([network.logits] if "is" in metrics else []) + ([pr_output] if "precision_recall" in metrics else [])
    summary = features.summarize(network.fn, tqdm(batches, total=-(-source.num_samples // settings.batch_size),
                                                  desc="features", disable=not progress, leave=False),
                                 moments=moments, keep=list(dict.fromkeys(keep)))
    out = {}
    for name in ("fid", "r_fid"):
        if name in metrics:
            _check_widths(reference.statistics, summary.statistics[network.moments], network)
            out[name] = fid.fid_from_statistics(summary.statistics[network.moments], reference.statistics)
    if "is" in metrics:
        out["is"], out["is_std"] = inception_score(summary.kept[network.logits], splits=IS_SPLITS)
    if "precision_recall" in metrics:
        out["precision"], out["recall"] = precision_recall(reference.features, summary.kept[pr_output])
    return out, reference
