"""One reported row of a paper table as a ConfigDict: what the paper printed and how to measure ours.

The `tableN.py` files beside this one build their rows with `row(...)`; they load this file with
`runpy.run_path` (a config file is loaded by path, not imported as a package). A row holds:

  table, row       "table3", "ldm4_guided": the results of its `ldm-jax evaluate` run go to
                   <results>/<table>_<row>/results.json (and <table>_<row>-<run> for each extra run)
  label            the method as the paper prints it ("LDM-4-G (ours)")
  paper            column -> value exactly as printed ("247.67 ± 5.59"); "" where the paper has none
  ours             column -> the results.json metrics shown there, "metric" or "run:metric" (several
                   are joined with " / ", as the paper's "2.8† / 4.8‡"); a column without any stays "n/a"
  model            config (configs/<name>.py[:variant]), checkpoint / yaml / url (its `released` section),
                   toy ("autoencoder" or "ldm": a model `paper_tables.py --run-toy` trains; else "")
  evaluation       the `ldm_jax.evaluation.evaluate.EvaluationSettings` fields of the run (sampler, steps,
                   eta, guidance_scale, num_samples, data / reference_stats, features, metrics, ...)
  samples          images to score instead of sampling the model (`--samples`): generated elsewhere, or
                   an earlier run's samples/ folder scored again against another reference
  runs             extra runs: name -> evaluation fields (or `samples`) that differ, e.g. another reference set
  reference        what the reference data (and the other placeholder paths) must hold
  notes            where the paper is silent, or where a setting is ours
"""
import dataclasses
import pathlib

import ml_collections

from ldm_jax import config_files
from ldm_jax.diffusion.sampling import SAMPLERS
from ldm_jax.evaluation import evaluate

REPO = pathlib.Path(__file__).resolve().parents[2]
TOY_CONFIG = "experiments/paper_tables/toy.py"
TOY_MODELS = ("autoencoder", "ldm")
# EvaluationSettings fields a row sets; the model source (checkpoint / config / samples) lives in `model`.
_SOURCE_FIELDS = ("checkpoint", "config", "samples")
EVALUATION_FIELDS = tuple(f.name for f in dataclasses.fields(evaluate.EvaluationSettings)
                          if f.name not in _SOURCE_FIELDS)

# Paths the real rows use for the files the user supplies (see each row's `reference`).
INCEPTION_WEIGHTS = "/models/pt_inception-2015-12-05-6726825d.pth"
VGG16_WEIGHTS = "/models/vgg16-397923af.pth"
LPIPS_LINEAR_WEIGHTS = "/models/lpips_vgg_v0.1.pth"
BERT_VOCABULARY = "/models/bert-base-uncased"
# What each of those files is (the table script lists those a command uses).
USER_FILES = {
    INCEPTION_WEIGHTS: "pytorch-fid's FID Inception-v3 weights (pt_inception-2015-12-05-6726825d.pth)",
    VGG16_WEIGHTS: "torchvision's VGG-16 ImageNet weights (vgg16-397923af.pth)",
    LPIPS_LINEAR_WEIGHTS: "the lpips package's v0.1 linear layers for VGG (lpips/weights/v0.1/vgg.pth)",
    BERT_VOCABULARY: "the folder of bert-base-uncased's vocab.txt (the text model's tokenizer)",
}


def released_model(config_spec: str) -> dict:
    """The `model` section of a row measured on a released checkpoint: the config and its `released` info."""
    config = config_files.load_config(REPO / config_spec)   # "path.py:variant" keeps its variant
    released = config.released
    if not released.checkpoint:
        raise ValueError(f"{config_spec} names no released checkpoint (released.checkpoint is empty)")
    return {"config": config_spec, "checkpoint": released.checkpoint, "yaml": released.yaml,
            "url": released.get("url", ""), "toy": ""}


def config_only_model(config_spec: str) -> dict:
    """The `model` section of a row with a config but no released checkpoint (the user trains it)."""
    return {"config": config_spec, "checkpoint": "", "yaml": "", "url": "", "toy": ""}


def no_model() -> dict:
    """The `model` section of a row with neither a released checkpoint nor a config: paper numbers only."""
    return {"config": "", "checkpoint": "", "yaml": "", "url": "", "toy": ""}


def toy_model(name: str) -> dict:
    """The `model` section of a toy row: a model `paper_tables.py --run-toy` trains on the built-in shapes."""
    if name not in TOY_MODELS:
        raise ValueError(f"unknown toy model {name!r}; expected one of {TOY_MODELS}")
    return {"config": TOY_CONFIG, "checkpoint": "", "yaml": "", "url": "", "toy": name}


def evaluation(**settings) -> dict:
    """EvaluationSettings fields a row sets (without the model source); evaluate's defaults hold for the rest."""
    unknown = sorted(set(settings) - set(EVALUATION_FIELDS))
    if unknown:
        raise ValueError(f"unknown evaluation settings {unknown}; expected some of {list(EVALUATION_FIELDS)}")
    if settings.get("metrics") is not None:
        settings["metrics"] = list(settings["metrics"])
    return settings


def inception_evaluation(**settings) -> dict:
    """`evaluation` with the paper's FID network (pytorch-fid's Inception weights) and batches of 50."""
    return evaluation(**{"features": "inception", "inception_weights": INCEPTION_WEIGHTS, "batch_size": 50,
                         **settings})


def toy_evaluation(*, sampled: bool, **settings) -> dict:
    """`evaluation` of a toy row: the built-in feature net and validation shapes at the default toy sizes
    (`paper_tables.py --toy-size` replaces them); `sampled` False (an autoencoder): no sampler steps."""
    sizes = config_files.load_config(REPO / TOY_CONFIG).evaluation.to_dict()
    if not sampled:
        del sizes["steps"]
    return evaluation(**{"features": "builtin", "data": "builtin", **sizes, **settings})


TOY_NOTE = ("Toy row: trained and measured on a CPU by `paper_tables.py --run-toy` (experiments/paper_tables/toy.py); "
            "FID-type metrics on the features of the built-in shapes classifier (--features builtin), against "
            "the built-in validation shapes. Not comparable with the paper's numbers.")


def row(table: str, name: str, label: str, *, paper: dict, ours: dict, model: dict, evaluation: dict | None = None,
        samples: str = "", runs: dict | None = None, reference: str = "", notes: str = "") -> ml_collections.ConfigDict:
    """A checked row ConfigDict (see the module docstring)."""
    config = ml_collections.ConfigDict({
        "table": table, "row": name, "label": label, "paper": dict(paper),
        "ours": {column: list(keys) for column, keys in ours.items()}, "model": dict(model),
        "evaluation": evaluation or {}, "samples": samples, "runs": {k: dict(v) for k, v in (runs or {}).items()},
        "reference": reference, "notes": notes})
    problems = row_problems(config)
    if problems:
        raise ValueError(f"{table}:{name}: " + "; ".join(problems))
    return config


def runnable(config: ml_collections.ConfigDict) -> bool:
    """Whether the row can be measured: a toy model, a released checkpoint, or a config (trained by the user)."""
    return bool(config.model.toy or config.model.checkpoint or config.model.config)


def row_problems(config: ml_collections.ConfigDict) -> list[str]:
    """What is wrong with a row: unknown columns, a missing model config, invalid sampler settings."""
    problems = []
    unknown = sorted(set(config.ours) - set(config.paper))
    if unknown:
        problems.append(f"ours names columns the paper row lacks: {unknown} (paper: {sorted(config.paper)})")
    runs = {""} | set(config.runs)
    for column, keys in config.ours.items():
        for key in keys:
            run, _, metric = key.rpartition(":")
            if run not in runs:
                problems.append(f"ours.{column}: {key!r} names no run; runs: {sorted(config.runs)}")
            if metric.removesuffix("_std") not in evaluate.METRICS + ("is", "precision", "recall"):
                problems.append(f"ours.{column}: {metric!r} is not a results.json metric")
    spec = config.model.config
    if spec and not (REPO / spec.split(":")[0]).is_file():
        problems.append(f"model.config {spec!r}: no such file under {REPO}")
    if runnable(config) and not config.evaluation:
        problems.append("a runnable row needs its evaluation settings")
    problems += _evaluation_problems("evaluation", config.evaluation, EVALUATION_FIELDS)
    for name, run in config.runs.items():
        problems += _evaluation_problems(f"runs.{name}", run, EVALUATION_FIELDS + ("samples",))
    return problems


def _evaluation_problems(where: str, settings, fields) -> list[str]:
    problems = [f"{where}.{name}: unknown evaluation setting" for name in settings if name not in fields]
    if "sampler" in settings and settings.sampler not in SAMPLERS:
        problems.append(f"{where}.sampler {settings.sampler!r}: expected one of {sorted(SAMPLERS)}")
    for name in ("steps", "num_samples", "batch_size", "num_reference", "feature_net_steps"):
        value = settings.get(name)
        if value is not None and (not isinstance(value, int) or value < 1):
            problems.append(f"{where}.{name} must be a positive int, got {value!r}")
    if settings.get("eta") is not None and not 0.0 <= settings.eta <= 1.0:
        problems.append(f"{where}.eta must be in [0, 1], got {settings.eta}")
    if settings.get("guidance_scale") is not None and settings.guidance_scale < 1.0:
        problems.append(f"{where}.guidance_scale must be >= 1 (1: no guidance), got {settings.guidance_scale}")
    if settings.get("features") is not None and settings.features not in evaluate.FEATURES:
        problems.append(f"{where}.features {settings.features!r}: expected one of {evaluate.FEATURES}")
    for metric in settings.get("metrics") or ():
        if metric not in evaluate.METRICS:
            problems.append(f"{where}.metrics: unknown metric {metric!r}; expected some of {evaluate.METRICS}")
    return problems


def select(rows: dict, name: str, table: str) -> ml_collections.ConfigDict:
    """`rows[name]()` (the builders of a table file), or a clear error listing the rows."""
    if name not in rows:
        raise ValueError(f"unknown row {name!r} of {table}; expected one of {list(rows)}")
    return rows[name]()
