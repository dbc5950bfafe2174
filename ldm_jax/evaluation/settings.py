"""`EvaluationSettings`: everything an evaluation runs with, checked when made.

A problem names the settings at fault by field (`num_samples must be >= 1, got 0`); `SettingsError`
keeps them as templates, so a caller that knows the settings by other names (the CLI: by flags)
can spell them its own way with `describe(name)`.
"""
import dataclasses
import os
from typing import Any, Callable

from ldm_jax import hub
from ldm_jax.diffusion.sampling import SAMPLERS
from ldm_jax.evaluation import image_sources

METRICS = ("fid", "is", "precision_recall", "psnr", "ssim", "lpips", "r_fid", "clip_score")
GENERATED_METRICS = ("fid", "is", "precision_recall", "clip_score")
RECONSTRUCTION_METRICS = ("psnr", "ssim", "lpips", "r_fid")
FEATURES = ("inception", "builtin")


@dataclasses.dataclass(frozen=True)
class Problem:
    """One thing wrong with the settings: `text` names settings as {field}, e.g. "{num_samples} must be
    >= 1, got {got}", and other values as {key} of `values` (inserted as given, braces and all)."""
    text: str
    values: dict[str, Any] = dataclasses.field(default_factory=dict)

    def describe(self, name: Callable[[str], str] = str) -> str:
        names = {field.name: name(field.name) for field in dataclasses.fields(EvaluationSettings)}
        return self.text.format(**names, **self.values)


class SettingsError(ValueError):
    """Settings that cannot be evaluated; `problems` lists what is wrong."""

    def __init__(self, *problems: Problem):
        self.problems = problems
        super().__init__(self.describe())

    def describe(self, name: Callable[[str], str] = str) -> str:
        """The problems, each setting spelled `name(field)` (default: the field name)."""
        lines = [problem.describe(name) for problem in self.problems]
        return lines[0] if len(lines) == 1 else "invalid evaluation settings:\n  " + "\n  ".join(lines)


@dataclasses.dataclass(frozen=True)
class EvaluationSettings:
    """Everything an evaluation is run with (None: see the defaults).

    Raises SettingsError, listing every problem, when a value is wrong; whether the files exist is
    checked when the evaluation starts (`check_files`), so settings can name files of another machine.
    """
    checkpoint: str | None = None         # a diffusion model or an autoencoder (.ckpt / .safetensors / hf://)
    config: str | None = None             # its YAML or configs/*.py (default: the YAML beside it)
    ema: bool = False
    samples: str | None = None            # or: a folder of images / an ADM .npz generated elsewhere
    num_samples: int | None = None        # default: 50,000 (all of `samples`)
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
    clip_weights: str | None = None       # clip_score: a transformers CLIPModel or open_clip checkpoint file
    clip_tokenizer: str | None = None     # its vocabulary files (default: the folder of clip_weights)
    cache_dir: str | None = None          # the feature net and reference statistics (default: DIR/cache)

    def __post_init__(self):
        # A list (a config, JSON) or a tuple (the CLI) of numbers: the same settings either way.
        coverage = self.mask_coverage
        if isinstance(coverage, (list, tuple)) and all(isinstance(v, (int, float)) for v in coverage):
            object.__setattr__(self, "mask_coverage", tuple(float(v) for v in coverage))
        problems = _source_problems(self) + _number_problems(self) + _feature_problems(self)
        if problems:
            raise SettingsError(*problems)

    def check_files(self) -> None:
        """Raises SettingsError naming every file setting whose file does not exist."""
        problems = [Problem("{" + name + "} {path!r} does not exist", {"path": getattr(self, name)})
                    for name in ("samples", "prompts", "reference_stats", "inception_weights", "vgg16_weights",
                                 "lpips_vgg16_weights", "lpips_linear_weights", "tokenizer", "clip_weights",
                                 "clip_tokenizer")
                    if getattr(self, name) and not os.path.exists(os.path.expanduser(getattr(self, name)))]
        if self.checkpoint and not self.checkpoint.startswith(hub.SCHEME) and not os.path.isfile(self.checkpoint):
            problems.append(Problem("{checkpoint} {path!r} does not exist", {"path": self.checkpoint}))
        if problems:
            raise SettingsError(*problems)


def recorded_path(value: str | None) -> str | None:
    """A path setting as recorded: absolute (so a resumed run from another folder compares equal)."""
    if value is None or value == image_sources.BUILTIN or value.startswith(hub.SCHEME):
        return value
    return os.path.abspath(os.path.expanduser(value))


def _uses_feature_network(metrics, vgg16_weights) -> bool:
    """Whether these metrics (None: the defaults, which always hold one) need the FID feature network."""
    if metrics is None:
        return True
    needed = {"fid", "is", "r_fid"} | ({"precision_recall"} if not vgg16_weights else set())
    return bool(needed & set(metrics))


def _source_problems(settings: EvaluationSettings) -> list[Problem]:
    if settings.checkpoint and settings.samples:
        return [Problem("give one model source, not both: {checkpoint} (a model to sample) or {samples} (images)")]
    if not (settings.checkpoint or settings.samples):
        return [Problem("no model source: give {checkpoint} (a diffusion model or an autoencoder) or {samples} "
                        "(a folder or .npz of generated images)")]
    return []


def _number_problems(settings: EvaluationSettings) -> list[Problem]:
    optional = [name for name in ("num_samples", "num_reference", "image_size") if getattr(settings, name) is not None]
    problems = [Problem("{" + name + "} must be >= 1, got {got}", {"got": getattr(settings, name)})
                for name in (*optional, "steps", "batch_size", "feature_net_steps") if getattr(settings, name) < 1]
    if settings.eta < 0:
        problems.append(Problem("{eta} must be >= 0, got {got}", {"got": settings.eta}))
    if not 0 <= settings.seed < 2**32:
        problems.append(Problem("{seed} must be in [0, 2**32), got {got}", {"got": settings.seed}))
    coverage = settings.mask_coverage
    if coverage is not None and not (isinstance(coverage, tuple) and len(coverage) == 2
                                     and 0.0 < coverage[0] <= coverage[1] < 1.0):
        problems.append(Problem("{mask_coverage} must be LOW,HIGH with 0 < LOW <= HIGH < 1, got {got}",
                                {"got": coverage}))
    if settings.sampler not in SAMPLERS:
        problems.append(Problem("{sampler}: unknown sampler {got!r}; known: {known}",
                                {"got": settings.sampler, "known": ", ".join(sorted(SAMPLERS))}))
    return problems


def _feature_problems(settings: EvaluationSettings) -> list[Problem]:
    problems = []
    if settings.features not in FEATURES:
        problems.append(Problem("{features}: unknown feature network {got!r}; known: {known}",
                                {"got": settings.features, "known": ", ".join(FEATURES)}))
    unknown = [name for name in (settings.metrics or ()) if name not in METRICS]
    if unknown:
        problems.append(Problem("{metrics}: unknown metric" + "s" * (len(unknown) > 1) + " {got}; known: {known}",
                                {"got": ", ".join(map(repr, unknown)), "known": ",".join(METRICS)}))
    if settings.metrics is not None and not settings.metrics:
        problems.append(Problem("{metrics} names no metric"))
    if (settings.features == "inception" and not settings.inception_weights
            and _uses_feature_network(settings.metrics, settings.vgg16_weights)):
        problems.append(Problem("{features} inception needs {inception_weights} pt_inception-2015-12-05-6726825d.pth "
                                "(pytorch-fid's FID Inception weights); or {features} builtin (a small classifier of "
                                "the built-in shapes, for toy models)"))
    if bool(settings.lpips_vgg16_weights) != bool(settings.lpips_linear_weights):
        problems.append(Problem("{lpips_vgg16_weights} and {lpips_linear_weights} go together: give both"))
    if settings.reference_stats and not image_sources.is_npz(settings.reference_stats):
        problems.append(Problem("{reference_stats} {got!r}: expected an .npz (mu, sigma)",
                                {"got": settings.reference_stats}))
    return problems
