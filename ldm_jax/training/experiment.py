"""An experiment config: the model (from the zoo) plus every training section, merged and checked.

    config = with_training_defaults(zoo_config)       # adds the sections a run needs, with defaults
    validate_experiment_config(config)                # every bad field at once, by dotted name
    stage = stage_from_config(config)                 # AutoencoderStage or LatentDiffusionStage

Sections (each field documented where its defaults are defined):
  seed                  the run's seed: initialisation and the per-step rng (folded with the step)
  train                 num_steps, global_batch_size, log / image intervals, NaN patience, and the
                        stage's own fields (`default_autoencoder_train_config` / `default_ldm_train_config`)
  optimizer, precision  `ldm_jax.training.optimizers`; ema, pretrained (stage 2)
  checkpoint            every_steps, keep, best_metric, async_save
  mesh                  `ldm_jax.parallel.mesh.default_mesh_config`
  data                  `ldm_jax.data.config.default_data_config`; data.batch_size follows
                        train.global_batch_size; a latent cache (data.name "latent_cache") is
                        checked against the model (`ldm_jax.data.latent_cache.model_errors`)
A config with `model.unet` trains stage 2 (the latent diffusion model, first stage frozen);
one with only `model.first_stage` trains stage 1 (the autoencoder).
"""
import ml_collections

from ldm_jax.config_checks import field_errors
from ldm_jax.data.config import default_data_config, validate_data_config
from ldm_jax.parallel.mesh import default_mesh_config


class ExperimentConfigError(ValueError):
    """Fields of an experiment config are invalid; the message names each by its dotted path."""


def is_latent_diffusion(config) -> bool:
    return "unet" in config.model


def _stage_defaults(config) -> ml_collections.ConfigDict:
    if is_latent_diffusion(config):
        from ldm_jax.training.ldm_stage import default_ldm_train_config
        return default_ldm_train_config()
    from ldm_jax.training.autoencoder_stage import default_autoencoder_train_config
    return default_autoencoder_train_config()


def default_training_config(config) -> ml_collections.ConfigDict:
    """Every training section of `config`'s stage with its defaults (the model sections excluded)."""
    defaults = _stage_defaults(config)
    defaults.seed = 0
    defaults.train.update({
        "num_steps": 1000,             # optimizer steps (micro-steps with optimizer.accumulate_grad_batches)
        "global_batch_size": 8,        # over all processes and devices
        "log_every_steps": 50,         # console line + metrics.jsonl
        "image_every_steps": 1000,     # PNG grids of inputs / reconstructions / samples (0: never)
        "max_nan_steps": 10,           # stop (with a checkpoint) after this many non-finite losses in a row
    })
    defaults.checkpoint = {
        "every_steps": 1000,           # also at the end, and on SIGTERM
        "keep": 3,                     # the last N
        "best_metric": "",             # keep the best by this logged metric too ("" = no)
        "best_mode": "min",
        "async_save": True,
    }
    defaults.mesh = default_mesh_config()
    defaults.data = default_data_config()
    return defaults


def with_training_defaults(config) -> ml_collections.ConfigDict:
    """`config` (a zoo config with `model`) with every missing training field set to its default.

    Fields already in `config` win. `data.batch_size` becomes a reference to
    `train.global_batch_size`, so overriding the latter on the command line moves both.
    """
    merged = default_training_config(config)
    user = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    _merge(merged, user)
    merged.data.batch_size = merged.train.get_ref("global_batch_size")
    return merged


def _merge(target: ml_collections.ConfigDict, values: dict) -> None:
    """Deep-update `target` with `values`; unknown keys are added (validation reports them)."""
    for key, value in values.items():
        if isinstance(value, dict) and key in target and isinstance(target[key], ml_collections.ConfigDict):
            _merge(target[key], value)
        else:
            with target.ignore_type():
                target[key] = value


# Top-level keys that are not training sections: the model and where its released weights live.
_MODEL_KEYS = ("model", "released")


def validate_experiment_config(config) -> None:
    """Raises ExperimentConfigError listing every unknown or ill-typed field, by dotted name."""
    values = config.to_dict()
    if "model" not in values or "first_stage" not in values["model"]:
        raise ExperimentConfigError("config.model.first_stage is missing: start from one of configs/*.py")
    defaults = default_training_config(config).to_dict()
    errors = field_errors({k: v for k, v in values.items() if k not in _MODEL_KEYS and k != "data"},
                          {k: v for k, v in defaults.items() if k != "data"}, "config")
    train = values.get("train", {})
    for name in ("num_steps", "global_batch_size"):
        if isinstance(train.get(name), int) and train[name] < 1:
            errors.append(f"config.train.{name}: must be >= 1, got {train[name]}")
    checkpoint = values.get("checkpoint", {})
    if checkpoint.get("best_mode") not in (None, "min", "max"):
        errors.append(f"config.checkpoint.best_mode: must be 'min' or 'max', got {checkpoint['best_mode']!r}")
    try:
        validate_data_config(values.get("data", {}))
    except ValueError as error:
        errors.append(str(error))
    else:
        if values.get("data", {}).get("name") == "latent_cache":
            errors += _latent_cache_errors(config)
    if errors:
        raise ExperimentConfigError(f"invalid experiment config ({len(errors)} problem{'s' * (len(errors) > 1)}):\n  "
                                    + "\n  ".join(errors))


def _latent_cache_errors(config) -> list[str]:
    """What keeps config.data's latent cache from training config.model."""
    if not is_latent_diffusion(config):
        return ["config.data.name: a latent cache feeds latent diffusion training (a config with model.unet); "
                "this config trains an autoencoder, which reads images"]
    from ldm_jax.data.latent_cache import model_errors, read_description

    pretrained = config.get("pretrained", {})
    description = read_description(config.data.data_dir)
    errors = model_errors(description, config.model, image_size=config.data.image_size,
                          check_scale_factor=not pretrained.get("model"))  # its scale factor replaces the config's
    # Dropped conditioning becomes the empty prompt's embedding, which the text encoder computes: random
    # weights would teach the UNet a meaningless unconditional input.
    if ("context" in description["shapes"] and config.get("train", {}).get("cond_drop_prob", 0) > 0
            and not (pretrained.get("model") or pretrained.get("cond_stage"))):
        errors.append("config.pretrained.cond_stage: the cache holds text embeddings and train.cond_drop_prob > 0 "
                      "replaces dropped ones by the empty prompt's embedding from the text encoder: load its "
                      "weights (pretrained.cond_stage or pretrained.model), or set train.cond_drop_prob=0")
    return errors


def stage_from_config(config):
    """The TrainStage the config's model trains."""
    if is_latent_diffusion(config):
        from ldm_jax.training.ldm_stage import LatentDiffusionStage
        return LatentDiffusionStage.from_config(config)
    from ldm_jax.training.autoencoder_stage import AutoencoderStage
    return AutoencoderStage.from_config(config)
