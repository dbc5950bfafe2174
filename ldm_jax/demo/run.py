"""`run_demo(config, out)`: the paper's pipeline end to end, then measured (what `make demo` runs).

0. decide the prompts and check a user's folder before any work (`demo.data_plan`);
1. train the autoencoder, the LDM on its latents and the pixel-space baseline (`train_and_evaluate`,
   each in `out/<stage>/`, resumable: a rerun continues where a stopped one ended);
2. reconstruct held-out images (PSNR / SSIM);
3. train the feature net (`evaluation.feature_net`) on the training split (labelled data);
4. sample every class prompt `samples_per_class` times at the demo's guidance, at guidance 1 and
   unconditionally (LDM) and at the demo's guidance (pixel model), plus the caption prompts;
5. score the samples with the dataset's checker (built-in data only) and with the feature net
   (adherence, and FID against held-out images); write grids, `metrics.jsonl`, `report.json` and
   `report.md`.
Everything is seeded by `config.seed`: one machine gives the same metrics on every run (the wall
times in `report.json["timing"]` vary).
"""
import copy
import json
import pathlib
import re
import time

import numpy as np
from tqdm.auto import tqdm

from ldm_jax import images as image_io
from ldm_jax.data import shapes_checker, synthetic
from ldm_jax.data.config import default_data_config, pipeline_from_config, source_from_config
from ldm_jax.data.transforms import from_model_range
from ldm_jax.demo import report as report_lib
from ldm_jax.demo.data_plan import plan_data
from ldm_jax.evaluation import feature_net, fid, image_metrics
from ldm_jax.models import components, tokenizers
from ldm_jax.training.loop import train_and_evaluate

STAGES = ("autoencoder", "ldm", "pixel")


def _log(message: str) -> None:
    tqdm.write(message)


def _stage_config(config, name: str, tokenizer, vocab_path, first_stage_path):
    """The experiment config of one stage: its section plus the shared seed, data and text settings."""
    stage = copy.deepcopy(config[name])
    stage.seed = config.seed
    stage.data.update(config.data.to_dict())
    if "unet" in stage.model:
        stage.data.tokenizer = str(vocab_path)
        stage.model.cond_stage.params.vocab_size = tokenizer.vocab_size
        stage.train.uncond_tokens = [int(t) for t in tokenizer("")[0]]
        if stage.model.first_stage.kind != "identity":
            stage.pretrained.first_stage = str(first_stage_path)
    return stage


def _data_config(config):
    """The demo's shared data settings over the data defaults."""
    data = default_data_config()
    data.update(config.data.to_dict())
    return data


def _dataset(config):
    """The demo dataset's grain source (for its classes and captions)."""
    return source_from_config(_data_config(config))


def _vocabulary(config, source) -> list[str]:
    """The built-in caption words, or every word of the dataset's captions and class names."""
    if config.data.name == "builtin":
        return list(synthetic.caption_words())
    words = set()
    for text in [*getattr(source, "classes", []), *(source[i].get("caption") or "" for i in range(len(source)))]:
        words.update(re.findall(r"[a-z0-9]+", text.lower()))
    return sorted(words)


def _tokenizer(config, source, out: pathlib.Path, max_length: int):
    """The caption tokenizer and its vocab.txt: the user's (config.tokenizer), else a word-level one."""
    if config.tokenizer:
        return tokenizers.bert_tokenizer(config.tokenizer, max_length), config.tokenizer
    path = tokenizers.write_word_vocab(_vocabulary(config, source), out / "vocab.txt")
    return tokenizers.bert_tokenizer(path, max_length), path


def _train(stage_config, workdir: pathlib.Path, progress: bool) -> dict:
    """Trains (or resumes) one stage; its size, steps, last logged loss and wall time."""
    start = time.perf_counter()
    summary = train_and_evaluate(stage_config, workdir, progress=progress)
    model = stage_config.model
    trained = model.unet if "unet" in model else model.first_stage
    last_logged = json.loads((workdir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()[-1])
    return {"steps": int(summary["step"]), "batch_size": int(stage_config.train.global_batch_size),
            "params": components.count_params(trained.to_dict()), "final_loss": float(last_logged["loss"]),
            "wall_s": time.perf_counter() - start}


def _split_data(config, split: str, batch_size: int, shuffle: bool):
    """The data config of image batches (with labels when the data has them) of one split of the demo's
    dataset: the built-in one's own splits, or a folder's held-out share of each class ("validation")
    and the rest."""
    data = _data_config(config)
    data.task, data.batch_size, data.shuffle, data.seed = "image", batch_size, shuffle, int(config.seed)
    data.split = split
    if data.name == "builtin":
        data.num_records = max(int(config.evaluation.num_heldout), 4096)
    return data


def _examples(config, split: str, count: int, batch_size: int) -> dict[str, np.ndarray]:
    """`count` examples of the shuffled split (all of them when it holds fewer): images, and labels
    when the data has them. The pipeline's first epoch holds each record once."""
    data = _split_data(config, split, batch_size, shuffle=True)
    count = min(count, len(source_from_config(data)))
    pipeline = pipeline_from_config(data)
    images, labels = [], []
    while sum(len(x) for x in images) < count:
        batch = next(pipeline)
        images.append(np.asarray(batch["image"], np.float32))
        if "label" in batch:
            labels.append(np.asarray(batch["label"]))
    pipeline.close()
    taken = {"image": np.concatenate(images)[:count]}
    if labels:
        taken["label"] = np.concatenate(labels)[:count]
    return taken


def _draw(pipe, prompts: list[str], tokenizer, sampling, *, guidance: float, seed: int, desc: str,
          progress: bool) -> np.ndarray:
    """uint8 samples (N, H, W, 3), one per prompt, in chunks of sampling.batch_size (the last one padded:
    one compilation per model)."""
    size = int(sampling.batch_size)
    chunks = [prompts[start:start + size] for start in range(0, len(prompts), size)]
    out = []
    for index, chunk in enumerate(tqdm(chunks, desc=desc, disable=not progress, leave=False)):
        padded = chunk + [chunk[-1]] * (size - len(chunk))
        images = pipe(prompt=padded, tokenizer=tokenizer, batch_size=size, num_steps=int(sampling.steps),
                      sampler=sampling.sampler, eta=float(sampling.eta), guidance_scale=guidance,
                      seed=seed + index, progress=False)
        out.extend(np.asarray(image) for image in images[:len(chunk)])
    return np.stack(out)


def _save_grid(samples: np.ndarray, path: pathlib.Path, rows: int | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image_io.make_grid([image_io.array_to_images(s[None].astype(np.float32) / 127.5 - 1.0)[0] for s in samples],
                       rows=rows, padding=1).save(path)


def _file_name(prompt: str) -> str:
    return "_".join(prompt.split()) or "unconditional"


def _reconstruction(pipe, heldout: dict, batch_size: int, out: pathlib.Path) -> dict:
    images = heldout["image"]
    recon = np.concatenate([np.clip(np.asarray(pipe.decode(pipe.encode(images[s:s + batch_size]))), -1, 1)
                            for s in range(0, len(images), batch_size)])
    psnr = np.asarray(image_metrics.psnr(from_model_range(images), from_model_range(recon)))
    ssim = np.asarray(image_metrics.ssim(from_model_range(images), from_model_range(recon)))
    pairs = np.concatenate([from_model_range(images[:16]), from_model_range(recon[:16])])
    _save_grid(pairs, out / "reconstructions.png", rows=2)
    return {"num_images": len(images), "psnr": float(psnr.mean()), "psnr_std": float(psnr.std()),
            "ssim": float(ssim.mean()), "ssim_std": float(ssim.std())}


def run_demo(config, out, *, progress: bool = True) -> dict:
    """Runs the demo `config` (see `ldm_jax.demo.config`) into the folder `out`; returns the report."""
    from ldm_jax.inference.pipeline import LatentDiffusionPipeline

    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    timing = {}
    plan = plan_data(config, progress=progress)  # a folder is checked before anything is trained
    _log(f"data: {plan.description}")
    config = copy.deepcopy(config)
    config.data.update(plan.data_settings)
    (out / "config.json").write_text(config.to_json(indent=2), encoding="utf-8")
    source = _dataset(config)
    tokenizer, vocab_path = _tokenizer(config, source, out, int(config.ldm.data.max_length))

    stages = {}
    first_stage_path = out / "autoencoder" / "first_stage.safetensors"
    for number, name in enumerate(STAGES, 1):
        _log(f"[{number}/{len(STAGES) + 2}] training the {name} ({config[name].train.num_steps} steps)")
        stage_config = _stage_config(config, name, tokenizer, vocab_path, first_stage_path)
        stages[name] = _train(stage_config, out / name, progress)
        timing[f"train_{name}_s"] = stages[name]["wall_s"]

    _log(f"[4/{len(STAGES) + 2}] evaluating: reconstructions and the feature net")
    start = time.perf_counter()
    evaluation, sampling = config.evaluation, config.sampling
    batch_size = int(evaluation.batch_size)
    heldout = _examples(config, "validation", int(evaluation.num_heldout), batch_size)
    ldm = LatentDiffusionPipeline.from_checkpoint(out / "ldm" / "model.safetensors")
    pixel = LatentDiffusionPipeline.from_checkpoint(out / "pixel" / "model.safetensors")
    reconstruction = _reconstruction(ldm, heldout, batch_size, out)

    class_prompts = plan.class_prompts
    num_classes = len(class_prompts)
    labelled = "label" in heldout and num_classes > 1  # the prompts are the classes: a feature net can score them
    quality = {}
    if labelled:
        bar = tqdm(total=int(evaluation.feature_net_steps), desc="feature net", disable=not progress, leave=False)
        params, losses = feature_net.train_feature_net(
            pipeline_from_config(_split_data(config, "train", batch_size, shuffle=True)), num_classes=num_classes,
            steps=int(evaluation.feature_net_steps), seed=int(config.seed), progress=bar.update)
        bar.close()
        fn = feature_net.feature_fn(params, num_classes=num_classes, batch_size=batch_size)
        heldout_out = feature_net.compute_features(fn, heldout["image"], batch_size)
        quality["feature_net"] = {"steps": int(evaluation.feature_net_steps), "final_loss": losses[-1],
                                  "heldout_accuracy": float(np.mean(heldout_out["logits"].argmax(-1)
                                                                    == heldout["label"]))}
    timing["evaluate_reconstruction_s"] = time.perf_counter() - start

    _log(f"[5/{len(STAGES) + 2}] sampling and scoring")
    start = time.perf_counter()
    per_class = int(sampling.samples_per_class)
    prompts = [p for p in class_prompts for _ in range(per_class)]
    labels = np.repeat(np.arange(num_classes), per_class)
    guidance = float(sampling.guidance_scale)
    settings = {"ldm": (ldm, prompts, guidance), "ldm_guidance_1": (ldm, prompts, 1.0),
                "ldm_unconditional": (ldm, [""] * len(prompts), 1.0), "pixel": (pixel, prompts, guidance)}
    samples = {name: _draw(pipe, draw_prompts, tokenizer, sampling, guidance=scale, seed=int(config.seed),
                           desc=f"sampling {name}", progress=progress)
               for name, (pipe, draw_prompts, scale) in settings.items()}
    captions = [p for p in plan.caption_prompts for _ in range(int(sampling.samples_per_prompt))]
    caption_samples = (_draw(ldm, captions, tokenizer, sampling, guidance=guidance, seed=int(config.seed),
                             desc="sampling captions", progress=progress) if captions else None)

    shown = int(sampling.samples_per_prompt)
    for model in ("ldm", "pixel"):
        for index, prompt in enumerate(class_prompts):
            _save_grid(samples[model][index * per_class:index * per_class + shown],
                       out / "samples" / model / f"{_file_name(prompt)}.png", rows=1)
        overview = np.concatenate([samples[model][i * per_class:i * per_class + shown] for i in range(num_classes)])
        _save_grid(overview, out / f"samples_{model}.png", rows=num_classes)
    for index, prompt in enumerate(plan.caption_prompts):
        _save_grid(caption_samples[index * shown:(index + 1) * shown],
                   out / "samples" / "ldm" / f"{_file_name(prompt)}.png", rows=1)

    adherence = {}
    if config.data.name == "builtin":  # the generator's own checker reads shape, colour and background
        for name, images in samples.items():
            adherence[name] = {"guidance_scale": settings[name][2], "num_samples": len(images),
                               "accuracy": shapes_checker.accuracy(images, labels)}
        adherence["ldm_captions"] = {"guidance_scale": guidance, "num_samples": len(captions),
                                     "accuracy": float(np.mean([shapes_checker.matches_caption(image, caption)
                                                                for image, caption in zip(caption_samples, captions)]))}
    if labelled:
        train_real = _examples(config, "train", len(prompts), batch_size)
        quality.update(num_samples=len(prompts), num_heldout=len(heldout["image"]), adherence={}, fid={})
        heldout_stats = fid.statistics_of(heldout_out["features"])
        for name, images in {**samples, "real_train": train_real["image"]}.items():
            outputs = feature_net.compute_features(fn, images, batch_size)
            if name in settings:
                quality["adherence"][name] = {"guidance_scale": settings[name][2], "num_samples": len(images),
                                              "accuracy": float(np.mean(outputs["logits"].argmax(-1) == labels))}
            if name in ("ldm", "pixel", "real_train"):
                quality["fid"][name] = fid.fid_from_statistics(fid.statistics_of(outputs["features"]), heldout_stats)
    timing["sample_and_score_s"] = time.perf_counter() - start
    timing["total_s"] = time.perf_counter() - started

    report = report_lib.build_report(config, data_description=plan.description,
                                     prompts=plan.class_prompts + plan.caption_prompts, stages=stages,
                                     reconstruction=reconstruction, adherence=adherence, quality=quality,
                                     timing=timing)
    report_lib.write(report, out, STAGES)
    _log(f"done in {timing['total_s'] / 60:.1f} min: {out / 'report.md'}")
    return report
