"""What an evaluation scores: a model loaded from its checkpoint, or images generated elsewhere.

`open_source(settings)` says how the images come (drawn, computed from the images of `data`, or
read), how many and how large; `fill` draws the missing batches into a `sample_store.SampleStore`.
"""
import dataclasses
from typing import Any, Callable

import numpy as np
from tqdm.auto import tqdm

from ldm_jax import hub
from ldm_jax.data import masks
from ldm_jax.evaluation import image_sources, sample_store
from ldm_jax.evaluation.settings import EvaluationSettings, Problem, SettingsError, recorded_path

DEFAULT_NUM_SAMPLES = 50_000


@dataclasses.dataclass
class Source:
    """The loaded model source: its kind, sample count and size, and the settings that decide its samples."""
    kind: str                     # "diffusion", "autoencoder" or "samples"
    num_samples: int
    image_size: int
    record: dict[str, Any]        # checked against DIR/settings.json
    conditioning: str | None = None
    draw: Callable[[int, int], np.ndarray] | None = None          # diffusion: (batch index, length) -> uint8
    # Autoencoder, super-resolution, inpainting: (batch index, uint8 originals of `data`) -> uint8 outputs,
    # each compared with its original (psnr, ssim, lpips).
    from_data: Callable[[int, np.ndarray], np.ndarray] | None = None
    # Sample j's prompt is prompts[j % len(prompts)] (text models; --samples with --prompts): clip_score.
    prompts: list[str] | None = None

    @property
    def paired(self) -> bool:
        return self.from_data is not None


def open_source(settings: EvaluationSettings) -> Source:
    """The source of `settings`: its samples folder / .npz, or its checkpoint, loaded."""
    if settings.samples:
        count, side = image_sources.samples_info(settings.samples)
        num_samples = count if settings.num_samples is None else settings.num_samples
        if num_samples > count:
            raise SettingsError(Problem("{samples} {path} holds {count} images; {num_samples} asks for {asked}",
                                        {"path": settings.samples, "count": count, "asked": num_samples}))
        image_size = settings.image_size or side
        return Source("samples", num_samples, image_size,
                      {"source": "samples", "samples": recorded_path(settings.samples), "num_samples": num_samples,
                       "image_size": image_size},
                      prompts=image_sources.read_prompts(settings.prompts) if settings.prompts else None)
    from ldm_jax.convert import compvis
    from ldm_jax.inference.pipeline import LatentDiffusionPipeline

    checkpoint, config_path = hub.resolve_checkpoint(settings.checkpoint, settings.config)
    config, variables = compvis.load_checkpoint(checkpoint, config_path=config_path, use_ema=settings.ema)
    num_samples = DEFAULT_NUM_SAMPLES if settings.num_samples is None else settings.num_samples
    common = {"checkpoint": recorded_path(settings.checkpoint), "config": recorded_path(settings.config),
              "ema": settings.ema, "num_samples": num_samples, "batch_size": settings.batch_size}
    if "unet" not in config.model:
        return _autoencoder_source(settings, config, variables, common)
    pipe = LatentDiffusionPipeline(config, variables)
    traits = pipe.traits
    conditioning = image_sources.conditioning(traits)
    if settings.mask_coverage is not None and conditioning != "inpainting":
        raise SettingsError(Problem("{mask_coverage} applies to inpainting models; this one is {kind}",
                                    {"kind": conditioning.replace("_", "-")}))
    image_size = settings.image_size or traits.latent_size * traits.factor
    if conditioning in image_sources.DATA_TASKS:
        return _data_task_source(settings, pipe, conditioning, image_size, common)
    prompts, captions_from = None, None
    if conditioning == "text":
        if settings.prompts:
            prompts = image_sources.read_prompts(settings.prompts)
        elif settings.data:
            captions_from = recorded_path(settings.data)
            prompts = image_sources.data_captions(
                image_sources.data_config(settings.data, image_size, settings.batch_size, num_samples), num_samples)
        else:
            raise SettingsError(Problem("a text-to-image model needs prompts: {prompts} (a file, one per line) or "
                                        "{data} with captions"))
    record = {"source": "diffusion", **common, "sampler": settings.sampler, "steps": settings.steps,
              "eta": settings.eta, "guidance_scale": settings.guidance_scale, "seed": settings.seed,
              "image_size": image_size, "prompts": recorded_path(settings.prompts) if conditioning == "text" else None,
              "captions_from": captions_from,
              "tokenizer": recorded_path(settings.tokenizer) if conditioning == "text" else None}
    draw = image_sources.diffusion_sampler(pipe, steps=settings.steps, sampler=settings.sampler, eta=settings.eta,
                                           guidance_scale=settings.guidance_scale, seed=settings.seed,
                                           image_size=image_size, batch_size=settings.batch_size, prompts=prompts,
                                           tokenizer=settings.tokenizer)
    return Source("diffusion", num_samples, image_size, record, conditioning=conditioning, draw=draw, prompts=prompts)


def _autoencoder_source(settings: EvaluationSettings, config, variables, common: dict) -> Source:
    """A first stage alone: its reconstructions of the images of `data`."""
    if not settings.data:
        raise SettingsError(Problem("an autoencoder checkpoint is evaluated on the images it reconstructs: "
                                    "give {data}"))
    if settings.num_reference is not None:
        raise SettingsError(Problem("{num_reference} does not apply to an autoencoder: R-FID compares the "
                                    "reconstructions with their {num_samples} originals"))
    if settings.mask_coverage is not None:
        raise SettingsError(Problem("{mask_coverage} applies to inpainting models, not to an autoencoder"))
    image_size = settings.image_size or int(config.model.first_stage.params.ddconfig.resolution)
    reconstruct = image_sources.reconstructor(config, variables["first_stage"], settings.batch_size)
    return Source("autoencoder", common["num_samples"], image_size,
                  {"source": "autoencoder", **common, "image_size": image_size, "data": recorded_path(settings.data)},
                  from_data=lambda index, originals: reconstruct(originals))


def _data_task_source(settings: EvaluationSettings, pipe, conditioning: str, image_size: int, common: dict) -> Source:
    """A super-resolution or inpainting model: its outputs for the images of `data` (see `evaluate`'s docstring)."""
    task = conditioning.replace("_", "-")
    if not settings.data:
        raise SettingsError(Problem("a {task} model is evaluated on its outputs for the images of {data} (the "
                                    "{images}): give {data}",
                                    {"task": task,
                                     "images": "targets" if conditioning == "super_resolution" else "originals"}))
    if settings.guidance_scale != 1.0:
        raise SettingsError(Problem("{guidance_scale} {got}: a {task} model samples without classifier-free "
                                    "guidance; leave it at 1", {"got": settings.guidance_scale, "task": task}))
    if settings.num_samples is None:   # all of `data`, as many as the default sample count at most
        length = image_sources.data_length(settings.data, image_size)
        common = {**common, "num_samples": DEFAULT_NUM_SAMPLES if length is None else min(length, DEFAULT_NUM_SAMPLES)}
    sampling = {"steps": settings.steps, "sampler": settings.sampler, "eta": settings.eta, "seed": settings.seed,
                "image_size": image_size, "batch_size": settings.batch_size}
    record = {"source": "diffusion", "task": conditioning, **common, **sampling, "data": recorded_path(settings.data)}
    if conditioning == "super_resolution":
        from_data = image_sources.super_resolver(pipe, **sampling)
        record["sr_factor"] = pipe.traits.factor
    else:
        coverage = settings.mask_coverage or masks.DEFAULT_COVERAGE
        from_data = image_sources.inpainter(pipe, coverage=coverage, **sampling)
        record.update(mask_coverage=list(coverage), mask_seed=image_sources.MASK_SEED)
    return Source("diffusion", common["num_samples"], image_size, record, conditioning=conditioning,
                  from_data=from_data)


def fill(store: sample_store.SampleStore, source: Source, settings: EvaluationSettings, progress: bool,
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
        originals = reference_images(settings, source, source.num_samples)
        for index, batch in enumerate(originals):
            if index in todo:
                store.write(index, source.from_data(index, batch))
                bar.update()
            if index == last:
                break
        originals.close()   # stops the data pipeline's threads
    bar.close()
    return len(todo) == len(missing)


def reference_images(settings: EvaluationSettings, source: Source, count: int):
    """The first `count` images of `data` at the evaluated size, in the evaluation's batches."""
    data = image_sources.data_config(settings.data, source.image_size, settings.batch_size, count)
    return image_sources.data_batches(data, count, f"data {settings.data}")
