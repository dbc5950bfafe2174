"""`evaluate(settings, out_dir)`: the paper's metrics of a checkpoint or of generated images (`ldm-jax evaluate`).

    settings = EvaluationSettings(checkpoint="cin256-v2.ckpt", config="configs/cin256_ldm_vq4.py",
                                  num_samples=50_000, steps=250, guidance_scale=1.5,
                                  reference_stats="VIRTUAL_imagenet256_labeled.npz",
                                  inception_weights="pt_inception-2015-12-05-6726825d.pth")
    results = evaluate(settings, "eval/cin256")     # also written to eval/cin256/results.json

What is scored:
- a diffusion checkpoint: `num_samples` samples (`image_sources.diffusion_sampler`), written batch by
  batch to DIR/samples/ (`sample_store`: a stopped run continues with the missing batches and gives
  the samples of an uninterrupted one); metrics fid, is, precision_recall;
- a super-resolution or LDM inpainting checkpoint: its output for each of the first `num_samples`
  images of `data` (default: all of them, at most 50,000), in order (`image_sources.super_resolver`:
  the target downsampled by the model's factor and upscaled back; `image_sources.inpainter`: the
  image under the fixed evaluation mask of its index, `mask_coverage`, known pixels kept), also
  stored batch by batch; metrics fid (against `data`'s first `num_reference` images, default the
  originals themselves, or `reference_stats`), is, precision_recall, and psnr, ssim, lpips of each
  output against its original (Tab. 5: FID, IS, PSNR, SSIM; Tab. 7: FID, LPIPS);
- `samples`: a folder of images or an ADM `.npz` generated elsewhere, or the samples/ folder of an
  earlier evaluation (scored again, e.g. against another reference); the same metrics;
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

results.json: {"settings", "model", "metrics", "num_samples", "num_reference", "reference_file",
"versions", "wall_time_s", "device", "complete", "batches_resumed"}; metrics are flat numbers: fid,
is, is_std, precision, recall, psnr, psnr_std, ssim, ssim_std, lpips, lpips_std, r_fid. Evaluation
runs in one process (its local devices); `wall_time_s` is this run's, resumed batches not included.
"""
import dataclasses
import hashlib
import importlib.metadata
import json
import os
import pathlib
import platform
import time
from typing import Any, Callable

import flax.serialization
import jax
import numpy as np
from tqdm.auto import tqdm

import ldm_jax
from ldm_jax import hub
from ldm_jax.data import masks
from ldm_jax.data.config import default_data_config, pipeline_from_config
from ldm_jax.data.synthetic import SyntheticShapes
from ldm_jax.diffusion.sampling import SAMPLERS
from ldm_jax.evaluation import feature_net, features, fid, image_metrics, image_sources, sample_store
from ldm_jax.evaluation.inception_score import inception_score
from ldm_jax.evaluation.precision_recall import NEIGHBOURHOOD, VGG16Fc2, load_vgg16_params, precision_recall
from ldm_jax.task_inputs import ModelTraits

METRICS = ("fid", "is", "precision_recall", "psnr", "ssim", "lpips", "r_fid")
GENERATED_METRICS = ("fid", "is", "precision_recall")
RECONSTRUCTION_METRICS = ("psnr", "ssim", "lpips", "r_fid")
FEATURES = ("inception", "builtin")
DEFAULT_NUM_SAMPLES = 50_000
IS_SPLITS = 10   # torch-fidelity's default
RESULTS_FILE = "results.json"
CACHE_FOLDER = "cache"
# The built-in feature net's training run: fixed, so its features (and cached statistics) do not
# change with the sampling seed or batch size.
FEATURE_NET_SEED = 0
FEATURE_NET_BATCH = 64
FEATURE_NET_RECORDS = 4096


@dataclasses.dataclass(frozen=True)
class EvaluationSettings:
    """Everything an evaluation is run with (the CLI flags of `ldm-jax evaluate`; None: see the defaults)."""
    checkpoint: str | None = None         # a diffusion model or an autoencoder (.ckpt / .safetensors / hf://)
    config: str | None = None             # its YAML or configs/*.py (default: the YAML beside it)
    ema: bool = False
    samples: str | None = None            # or: a folder of images / an ADM .npz generated elsewhere
    num_samples: int | None = None        # default: 50,000 (all of --samples)
    sampler: str = "ddim"
    steps: int = 50
    eta: float = 0.0
    guidance_scale: float = 1.0
    batch_size: int = 16
    seed: int = 0
    prompts: str | None = None            # text models: one prompt per line, cycled
    tokenizer: str | None = None          # text models: the folder of the tokenizer's vocabulary files
    image_size: int | None = None         # default: the model's trained size (the first sample's side)
    mask_coverage: tuple[float, float] | None = None   # inpainting: masked share (low, high); default 0.1-0.5
    reference_stats: str | None = None
    data: str | None = None
    num_reference: int | None = None      # default: num_samples
    features: str = "inception"
    inception_weights: str | None = None
    feature_net_steps: int = 400
    metrics: tuple[str, ...] | None = None
    vgg16_weights: str | None = None
    lpips_vgg16_weights: str | None = None
    lpips_linear_weights: str | None = None
    cache_dir: str | None = None          # the feature net and reference statistics (default: DIR/cache)

    def __post_init__(self):
        # A list (a config, JSON) or a tuple (the CLI) of numbers: the same settings either way.
        coverage = self.mask_coverage
        if isinstance(coverage, (list, tuple)) and all(isinstance(v, (int, float)) for v in coverage):
            object.__setattr__(self, "mask_coverage", tuple(float(v) for v in self.mask_coverage))

    def check(self) -> None:
        """Raises ValueError listing every problem found without loading anything."""
        problems = _source_problems(self) + _number_problems(self) + _feature_problems(self) + _file_problems(self)
        if problems:
            raise ValueError("invalid evaluation settings:\n  " + "\n  ".join(problems))


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _source_problems(s: EvaluationSettings) -> list[str]:
    if s.checkpoint and s.samples:
        return ["give one model source, not both: --checkpoint (a model to sample) or --samples (images)"]
    if not (s.checkpoint or s.samples):
        return ["no model source: give --checkpoint PATH (a diffusion model or an autoencoder) or --samples "
                "DIR_OR_NPZ (generated images)"]
    return []


def _number_problems(s: EvaluationSettings) -> list[str]:
    problems = [f"{_flag(name)} must be >= 1, got {getattr(s, name)}"
                for name in ("num_samples", "num_reference", "image_size")
                if getattr(s, name) is not None and getattr(s, name) < 1]
    problems += [f"{_flag(name)} must be >= 1, got {getattr(s, name)}"
                 for name in ("steps", "batch_size", "feature_net_steps") if getattr(s, name) < 1]
    if s.eta < 0:
        problems.append(f"--eta must be >= 0, got {s.eta}")
    if not 0 <= s.seed < 2**32:
        problems.append(f"--seed must be in [0, 2**32), got {s.seed}")
    if s.mask_coverage is not None and not (
            isinstance(s.mask_coverage, tuple) and len(s.mask_coverage) == 2
            and 0.0 < s.mask_coverage[0] <= s.mask_coverage[1] < 1.0):
        problems.append(f"--mask-coverage must be LOW,HIGH with 0 < LOW <= HIGH < 1, got {s.mask_coverage}")
    if s.sampler not in SAMPLERS:
        problems.append(f"--sampler: unknown sampler {s.sampler!r}; known: {', '.join(sorted(SAMPLERS))}")
    return problems


def _feature_problems(s: EvaluationSettings) -> list[str]:
    problems = []
    if s.features not in FEATURES:
        problems.append(f"--features: unknown feature network {s.features!r}; known: {', '.join(FEATURES)}")
    unknown = [name for name in (s.metrics or ()) if name not in METRICS]
    if unknown:
        problems.append(f"--metrics: unknown metric{'s' * (len(unknown) > 1)} {', '.join(map(repr, unknown))}; "
                        f"known: {','.join(METRICS)}")
    if s.metrics is not None and not s.metrics:
        problems.append("--metrics names no metric")
    if s.features == "inception" and not s.inception_weights and _uses_feature_network(s.metrics, s.vgg16_weights):
        problems.append("--features inception needs --inception-weights pt_inception-2015-12-05-6726825d.pth "
                        "(pytorch-fid's FID Inception weights); or --features builtin (a small classifier of the "
                        "built-in shapes, for toy models)")
    if bool(s.lpips_vgg16_weights) != bool(s.lpips_linear_weights):
        problems.append("--lpips-vgg16-weights and --lpips-linear-weights go together: give both")
    if s.reference_stats and not image_sources.is_npz(s.reference_stats):
        problems.append(f"--reference-stats {s.reference_stats!r}: expected an .npz (mu, sigma)")
    return problems


def _file_problems(s: EvaluationSettings) -> list[str]:
    problems = []
    for name in ("samples", "prompts", "reference_stats", "inception_weights", "vgg16_weights",
                 "lpips_vgg16_weights", "lpips_linear_weights", "tokenizer"):
        value = getattr(s, name)
        if value and not os.path.exists(os.path.expanduser(value)):
            problems.append(f"{_flag(name)} {value!r} does not exist")
    if s.checkpoint and not s.checkpoint.startswith(hub.SCHEME) and not os.path.isfile(s.checkpoint):
        problems.append(f"--checkpoint {s.checkpoint!r} does not exist")
    return problems


def _uses_feature_network(metrics, vgg16_weights) -> bool:
    """Whether these metrics (None: the defaults, which always hold one) need the FID feature network."""
    if metrics is None:
        return True
    needed = {"fid", "is", "r_fid"} | ({"precision_recall"} if not vgg16_weights else set())
    return bool(needed & set(metrics))


# ----------------------------------------------------------------------------------------------
# What is evaluated.


@dataclasses.dataclass
class _Source:
    """The loaded model source: its kind, sample count and size, and the settings that decide its samples."""
    kind: str                     # "diffusion", "autoencoder" or "samples"
    num_samples: int
    image_size: int
    record: dict[str, Any]        # checked against DIR/settings.json
    conditioning: str | None = None
    draw: Callable[[int, int], np.ndarray] | None = None          # diffusion: (batch index, length) -> uint8
    # Autoencoder, super-resolution, inpainting: (batch index, uint8 originals of --data) -> uint8 outputs,
    # each compared with its original (psnr, ssim, lpips).
    from_data: Callable[[int, np.ndarray], np.ndarray] | None = None

    @property
    def paired(self) -> bool:
        return self.from_data is not None


def _path(value: str | None) -> str | None:
    """A path setting as recorded: absolute (so a resumed run from another folder compares equal)."""
    if value is None or value == image_sources.BUILTIN or value.startswith(hub.SCHEME):
        return value
    return os.path.abspath(os.path.expanduser(value))


def _open_source(s: EvaluationSettings) -> _Source:
    if s.samples:
        count, side = image_sources.samples_info(s.samples)
        num_samples = count if s.num_samples is None else s.num_samples
        if num_samples > count:
            raise ValueError(f"--samples {s.samples} holds {count} images; --num-samples asks for {num_samples}")
        image_size = s.image_size or side
        return _Source("samples", num_samples, image_size,
                       {"source": "samples", "samples": _path(s.samples), "num_samples": num_samples,
                        "image_size": image_size})
    from ldm_jax.convert import compvis
    from ldm_jax.pipeline import LatentDiffusionPipeline

    checkpoint, config_path = hub.resolve_checkpoint(s.checkpoint, s.config)
    config, variables = compvis.load_checkpoint(checkpoint, config_path=config_path, use_ema=s.ema)
    num_samples = DEFAULT_NUM_SAMPLES if s.num_samples is None else s.num_samples
    common = {"checkpoint": _path(s.checkpoint), "config": _path(s.config), "ema": s.ema, "num_samples": num_samples,
              "batch_size": s.batch_size}
    if "unet" not in config.model:
        if not s.data:
            raise ValueError("an autoencoder checkpoint is evaluated on the images it reconstructs: give --data")
        if s.num_reference is not None:
            raise ValueError("--num-reference does not apply to an autoencoder: R-FID compares the reconstructions "
                             "with their --num-samples originals")
        if s.mask_coverage is not None:
            raise ValueError("--mask-coverage applies to inpainting models, not to an autoencoder")
        image_size = s.image_size or int(config.model.first_stage.params.ddconfig.resolution)
        reconstruct = image_sources.reconstructor(config, variables["first_stage"], s.batch_size)
        return _Source("autoencoder", num_samples, image_size,
                       {"source": "autoencoder", **common, "image_size": image_size, "data": _path(s.data)},
                       from_data=lambda index, originals: reconstruct(originals))
    pipe = LatentDiffusionPipeline(config, variables)
    traits = ModelTraits.of(pipe)
    conditioning = image_sources.conditioning(traits)
    if s.mask_coverage is not None and conditioning != "inpainting":
        raise ValueError(f"--mask-coverage applies to inpainting models; this one is {conditioning.replace('_', '-')}")
    image_size = s.image_size or traits.latent_size * traits.factor
    if conditioning in image_sources.DATA_TASKS:
        return _data_task_source(s, pipe, conditioning, image_size, common)
    prompts, captions_from = None, None
    if conditioning == "text":
        if s.prompts:
            prompts = image_sources.read_prompts(s.prompts)
        elif s.data:
            captions_from = _path(s.data)
            prompts = image_sources.data_captions(image_sources.data_config(s.data, image_size, s.batch_size,
                                                                            num_samples), num_samples)
        else:
            raise ValueError("a text-to-image model needs prompts: --prompts FILE (one per line) or --data with "
                             "captions")
    record = {"source": "diffusion", **common, "sampler": s.sampler, "steps": s.steps, "eta": s.eta,
              "guidance_scale": s.guidance_scale, "seed": s.seed, "image_size": image_size,
              "prompts": _path(s.prompts) if conditioning == "text" else None,
              "captions_from": captions_from, "tokenizer": _path(s.tokenizer) if conditioning == "text" else None}
    draw = image_sources.diffusion_sampler(pipe, steps=s.steps, sampler=s.sampler, eta=s.eta,
                                           guidance_scale=s.guidance_scale, seed=s.seed, image_size=image_size,
                                           batch_size=s.batch_size, prompts=prompts, tokenizer=s.tokenizer)
    return _Source("diffusion", num_samples, image_size, record, conditioning=conditioning, draw=draw)


def _data_task_source(s: EvaluationSettings, pipe, conditioning: str, image_size: int, common: dict) -> _Source:
    """A super-resolution or inpainting model: its outputs for the images of --data (see the module docstring)."""
    task = conditioning.replace("_", "-")
    if not s.data:
        raise ValueError(f"a {task} model is evaluated on its outputs for the images of --data (the "
                         f"{'targets' if conditioning == 'super_resolution' else 'originals'}): give --data")
    if s.guidance_scale != 1.0:
        raise ValueError(f"--guidance-scale {s.guidance_scale}: a {task} model samples without classifier-free "
                         "guidance; leave it at 1")
    if s.num_samples is None:   # all of --data, as many as the default sample count at most
        length = image_sources.data_length(s.data, image_size)
        common = {**common, "num_samples": DEFAULT_NUM_SAMPLES if length is None else min(length, DEFAULT_NUM_SAMPLES)}
    sampling = {"steps": s.steps, "sampler": s.sampler, "eta": s.eta, "seed": s.seed, "image_size": image_size,
                "batch_size": s.batch_size}
    record = {"source": "diffusion", "task": conditioning, **common, **sampling, "data": _path(s.data)}
    if conditioning == "super_resolution":
        from_data = image_sources.super_resolver(pipe, **sampling)
        record["sr_factor"] = ModelTraits.of(pipe).factor
    else:
        coverage = s.mask_coverage or masks.DEFAULT_COVERAGE
        from_data = image_sources.inpainter(pipe, coverage=coverage, **sampling)
        record.update(mask_coverage=list(coverage), mask_seed=image_sources.MASK_SEED)
    return _Source("diffusion", common["num_samples"], image_size, record, conditioning=conditioning,
                   from_data=from_data)


def _fill(store: sample_store.SampleStore, source: _Source, s: EvaluationSettings, progress: bool,
          max_batches: int | None) -> bool:
    """Draws (or reconstructs) the missing batches, at most `max_batches` of them; whether all are done."""
    missing = store.missing()
    todo = set(missing if max_batches is None else missing[:max_batches])
    bar = tqdm(total=len(todo), desc="sampling" if source.kind == "diffusion" else "reconstructing",
               disable=not progress or not todo)
    if source.draw is not None:
        for index in sorted(todo):
            store.write(index, source.draw(index, store.batch_length(index)))
            bar.update()
    elif todo:
        last = max(todo)
        originals = _reference_images(s, source, source.num_samples)
        for index, batch in enumerate(originals):
            if index in todo:
                store.write(index, source.from_data(index, batch))
                bar.update()
            if index == last:
                break
        originals.close()   # stops the data pipeline's threads
    bar.close()
    return len(todo) == len(missing)


def _reference_images(s: EvaluationSettings, source: _Source, count: int):
    """The first `count` images of --data at the evaluated size, in the evaluation's batches."""
    data = image_sources.data_config(s.data, source.image_size, s.batch_size, count)
    return image_sources.data_batches(data, count, f"--data {s.data}")


# ----------------------------------------------------------------------------------------------
# Which metrics.


def resolve_metrics(s: EvaluationSettings, kind: str, num_samples: int, *, paired: bool = False) -> tuple[str, ...]:
    """The metrics to compute: those asked for (each checked to apply), else every one that applies.

    `paired`: a diffusion model's samples are its outputs for the images of --data (super-resolution,
    inpainting), so psnr, ssim and lpips against those images apply besides the generated metrics.
    """
    has_lpips = bool(s.lpips_vgg16_weights)
    lpips_reason = None if has_lpips else ("needs LPIPS weights: --lpips-vgg16-weights vgg16-397923af.pth "
                                           "--lpips-linear-weights vgg.pth (lpips v0.1)")
    if kind == "autoencoder":
        reasons = {"lpips": lpips_reason}
        wrong = {name: "applies to generated samples; an autoencoder is scored on reconstructions (psnr, ssim, "
                       "lpips, r_fid)" for name in GENERATED_METRICS}
    else:
        reference_images = bool(s.data) or bool(s.reference_stats and image_sources.npz_has_images(s.reference_stats))
        reasons = {"fid": None if s.data or s.reference_stats else "needs a reference: --reference-stats FILE.npz or "
                                                                   "--data SPEC",
                   "is": None if num_samples >= IS_SPLITS else f"needs at least {IS_SPLITS} samples ({IS_SPLITS} "
                                                                 f"splits), got {num_samples}",
                   "precision_recall": None if reference_images else "needs reference images: --data SPEC (or an "
                                                                     "ADM reference batch with arr_0)"}
        if num_samples <= NEIGHBOURHOOD:
            reasons["precision_recall"] = f"needs more than {NEIGHBOURHOOD} samples, got {num_samples}"
        if paired:
            reasons["lpips"] = lpips_reason
            wrong = {"r_fid": "is the FID of an autoencoder's reconstructions; a model's outputs for --data are "
                              "scored with fid"}
        else:
            wrong = {name: "compares reconstructions with their originals: it applies to autoencoder checkpoints "
                           "and to super-resolution / inpainting models" for name in RECONSTRUCTION_METRICS}
    applicable = [name for name in METRICS if name not in wrong and reasons.get(name) is None]
    if s.metrics is None:
        if not applicable:
            raise ValueError(f"no metric can be computed: {'; '.join(f'{n} {r}' for n, r in reasons.items() if r)}")
        return tuple(applicable)
    for name in s.metrics:
        if name in wrong:
            raise ValueError(f"--metrics {name}: {name} {wrong[name]}")
        if reasons.get(name):
            raise ValueError(f"--metrics {name}: {name} {reasons[name]}")
    return tuple(dict.fromkeys(s.metrics))


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


def feature_network(s: EvaluationSettings, image_size: int, cache: pathlib.Path, progress: bool) -> FeatureNetwork:
    """The FID / IS feature network of `s.features`."""
    if s.features == "inception":
        from ldm_jax.convert.inception_weights import load_inception_params

        params = load_inception_params(s.inception_weights)
        return FeatureNetwork({"network": "inception", "weights": _path(s.inception_weights),
                               "preprocessing": "torch_fidelity"},
                              features.inception_feature_fn(params, s.batch_size), "pool3", "logits_unbiased")
    params = _builtin_feature_params(s.feature_net_steps, image_size, cache, progress)
    key = {"network": "builtin", "steps": s.feature_net_steps, "image_size": image_size}
    fn = feature_net.feature_fn(params, num_classes=SyntheticShapes(1).num_classes, batch_size=s.batch_size)
    return FeatureNetwork(key, fn, "features", "logits")


def _with_vgg(network: FeatureNetwork, vgg16_weights: str, batch_size: int) -> FeatureNetwork:
    """`network` whose outputs also hold VGG-16's "vgg_fc2_relu" (precision/recall as torch-fidelity)."""
    module = VGG16Fc2()
    vgg = features.sharded_feature_fn(lambda variables, images: module.apply(variables, images),
                                      {"params": load_vgg16_params(vgg16_weights)}, batch_size)

    def fn(images):
        return {**network.fn(images), "vgg_fc2_relu": vgg(images)["fc2_relu"]}

    return dataclasses.replace(network, key={**network.key, "vgg16": _path(vgg16_weights)}, fn=fn)


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
class _Reference:
    statistics: fid.Statistics | None = None     # for fid / r_fid
    features: np.ndarray | None = None           # for precision_recall
    count: int | None = None                     # images summarised here (None: statistics from a file)
    file: str | None = None                      # the statistics file used or written


def _reference(s: EvaluationSettings, source: _Source, network: FeatureNetwork, metrics, pr_output: str,
               cache: pathlib.Path, progress: bool) -> _Reference:
    """The reference statistics and precision/recall features: from --reference-stats, or --data (cached)."""
    need_statistics = bool({"fid", "r_fid"} & set(metrics))
    reference = _Reference()
    if need_statistics and s.reference_stats:
        with np.load(s.reference_stats) as archive:
            stored = {"mu", "sigma"} <= set(archive.files)
        if stored:
            reference = _Reference(features.load_statistics(s.reference_stats), file=_path(s.reference_stats))
    moments = [network.moments] if need_statistics and reference.statistics is None else []
    keep = [pr_output] if "precision_recall" in metrics else []
    if not (moments or keep):
        return reference
    if s.data:
        count = source.num_samples if source.kind == "autoencoder" else (s.num_reference or source.num_samples)
        spec = {"data": _path(s.data), "image_size": source.image_size}
    else:   # an ADM reference batch: its own images
        (count, *_), _ = features.npz_array_shape(s.reference_stats)
        count = min(count, s.num_reference or count)
        spec = {"data": _path(s.reference_stats)}

    def images():
        if s.data:
            return _reference_images(s, source, count)
        return image_sources.rechunk(features.read_npz_images(s.reference_stats, s.batch_size), count, s.batch_size,
                                     s.reference_stats)

    key = {**spec, "count": count, "network": network.key, "moments": moments, "keep": keep}
    path = cache / f"reference_{_key_hash(key)}.npz"
    if path.exists():
        summary = _load_summary(path, moments)
    else:
        batches = tqdm(images(), total=-(-count // s.batch_size), desc="reference", disable=not progress, leave=False)
        summary = features.summarize(network.fn, batches, moments=moments, keep=keep)
        _save_summary(path, summary)
    reference.features, reference.count = summary.kept.get(pr_output), summary.count
    if moments:
        reference.statistics, reference.file = summary.statistics[network.moments], str(path)
    return reference


# ----------------------------------------------------------------------------------------------
# Scoring.


def _per_image_metrics(s: EvaluationSettings, source: _Source, store: sample_store.SampleStore, metrics,
                       progress: bool) -> dict[str, float]:
    """Mean and std of PSNR / SSIM / LPIPS over the (original, output) pairs."""
    if not {"psnr", "ssim", "lpips"} & set(metrics):
        return {}
    fns = {"psnr": jax.jit(image_metrics.psnr), "ssim": jax.jit(image_metrics.ssim)}
    if "lpips" in metrics:
        from ldm_jax.convert.lpips_weights import load_lpips_params

        lpips_params = load_lpips_params(s.lpips_vgg16_weights, s.lpips_linear_weights)
        lpips_fn = jax.jit(image_metrics.lpips_distances)
        fns["lpips"] = lambda a, b: lpips_fn(lpips_params, a, b)
    fns = {name: fn for name, fn in fns.items() if name in metrics}
    values = {name: [] for name in fns}
    pairs = zip(_reference_images(s, source, source.num_samples), store.batches())
    for originals, reconstructions in tqdm(pairs, total=store.num_batches, desc="psnr/ssim", disable=not progress,
                                           leave=False):
        # Padded to one batch size: one compilation; the padding's values are cut off.
        a, b = features.pad_batch(originals, s.batch_size), features.pad_batch(reconstructions, s.batch_size)
        for name, fn in fns.items():
            values[name].append(np.asarray(fn(a, b))[:len(originals)])
    out = {}
    for name, parts in values.items():
        joined = np.concatenate(parts).astype(np.float64)
        out.update({name: float(joined.mean()), f"{name}_std": float(joined.std())})
    return out


def _check_widths(reference: fid.Statistics, samples: fid.Statistics, network: FeatureNetwork) -> None:
    if reference.mu.shape != samples.mu.shape:
        raise ValueError(f"the reference statistics have width {reference.mu.shape[0]}, the {network.key['network']} "
                         f"features {samples.mu.shape[0]}: --reference-stats must come from the same feature network")


def _score(s: EvaluationSettings, source: _Source, batches, metrics, cache: pathlib.Path, progress: bool
           ) -> tuple[dict[str, float], _Reference]:
    """The feature metrics of the evaluated images (fid / r_fid, is, precision_recall), and the reference."""
    if not {"fid", "is", "precision_recall", "r_fid"} & set(metrics):
        return {}, _Reference()
    network = feature_network(s, source.image_size, cache, progress)
    if "precision_recall" in metrics and s.vgg16_weights:
        network, pr_output = _with_vgg(network, s.vgg16_weights, s.batch_size), "vgg_fc2_relu"
    else:
        pr_output = network.moments
    reference = _reference(s, source, network, metrics, pr_output, cache, progress)
    moments = [network.moments] if {"fid", "r_fid"} & set(metrics) else []
    keep = ([network.logits] if "is" in metrics else []) + ([pr_output] if "precision_recall" in metrics else [])
    summary = features.summarize(network.fn, tqdm(batches, total=-(-source.num_samples // s.batch_size),
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


# ----------------------------------------------------------------------------------------------
# The run.


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
    for time-sliced jobs. Raises ValueError for bad settings, SettingsMismatchError when `out_dir`
    holds samples drawn with other settings.
    """
    settings.check()
    if max_batches is not None and max_batches < 1:
        raise ValueError(f"max_batches must be >= 1 (or None for all), got {max_batches}")
    started = time.perf_counter()
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    source = _open_source(settings)
    metrics = resolve_metrics(settings, source.kind, source.num_samples, paired=source.paired)
    sample_store.check_settings(out_dir, source.record)
    store = None
    if source.kind != "samples":
        store = sample_store.SampleStore.in_dir(out_dir, source.num_samples, settings.batch_size)
        done_before = store.num_batches - len(store.missing())
        if not _fill(store, source, settings, progress, max_batches):
            missing = len(store.missing())
            return {"settings": source.record, "complete": False, "num_batches": store.num_batches,
                    "batches_done": store.num_batches - missing, "wall_time_s": time.perf_counter() - started}
    cache = pathlib.Path(settings.cache_dir).expanduser() if settings.cache_dir else out_dir / CACHE_FOLDER
    batches = store.batches() if store else image_sources.sample_batches(
        settings.samples, source.num_samples, source.image_size, settings.batch_size)
    values, reference = _score(settings, source, batches, metrics, cache, progress)
    if source.paired:
        values.update(_per_image_metrics(settings, source, store, metrics, progress))
    resolved = {**dataclasses.asdict(settings), "num_samples": source.num_samples, "image_size": source.image_size,
                "num_reference": reference.count, "metrics": list(metrics)}
    results = {"settings": resolved, "model": {"kind": source.kind, "conditioning": source.conditioning},
               "metrics": {name: values[name] for name in sorted(values)}, "num_samples": source.num_samples,
               "num_reference": reference.count, "reference_file": reference.file, "versions": versions(),
               "wall_time_s": time.perf_counter() - started, "device": device_description(), "complete": True,
               "batches_resumed": done_before if store else 0}
    text = json.dumps(results, indent=2)
    features.atomic_write(out_dir / RESULTS_FILE, lambda file: file.write(text.encode()))
    return results
