"""The demo's report: `report.json` (every number and setting), `report.md` (the same, readable) and
one `metrics.jsonl` gathering the training logs of every stage and the evaluation's numbers.

`metrics` holds what the seed determines (equal on every run on one machine); `timing` the wall
times, which vary.
"""
import json
import pathlib
import platform
from importlib import metadata

ADHERENCE_TARGET = 0.8  # of samples the checker accepts; with the feature net: x its held-out accuracy
_ADHERENCE_ROWS = (("ldm", "LDM, class prompts, demo guidance"), ("ldm_guidance_1", "LDM, class prompts, guidance 1.0"),
                   ("ldm_unconditional", "LDM, unconditional (scored against the same classes)"),
                   ("ldm_captions", "LDM, caption prompts (shape, colour and background), demo guidance"),
                   ("pixel", "pixel-space DM, class prompts, demo guidance"))


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def software_versions() -> dict[str, str]:
    """The versions a result depends on: Python, ldm-jax, JAX and the libraries around it."""
    import jax
    versions = {name: _version(name) for name in ("ldm-jax", "jax", "jaxlib", "flax", "optax", "numpy")}
    return {"python": platform.python_version(), **versions, "backend": jax.default_backend(),
            "devices": f"{jax.device_count()} x {jax.devices()[0].device_kind}"}


def build_report(config, *, data_description: str, prompts: list[str], stages: dict, reconstruction: dict, adherence: dict,
                 quality: dict, timing: dict) -> dict:
    """The report dict: settings, metrics (seed-determined), timing (wall clock) and versions.

    `adherence`: the built-in dataset checker's rows; `quality`: the feature net's held-out accuracy,
    its adherence rows and the FIDs on its features (labelled data only).
    """
    sampling = config.sampling.to_dict()
    checks = {}
    if "ldm" in adherence:
        guided = adherence["ldm"]["accuracy"]
        checks["adherence_at_demo_guidance_>=_0.8"] = guided >= ADHERENCE_TARGET
        checks["guided_beats_guidance_1"] = guided > adherence["ldm_guidance_1"]["accuracy"]
        checks["guided_beats_unconditional"] = guided > adherence["ldm_unconditional"]["accuracy"]
    if "fid" in quality:
        accuracy = quality["feature_net"]["heldout_accuracy"]
        checks["feature_net_adherence_at_demo_guidance_>=_0.8_x_its_heldout_accuracy"] = (
            quality["adherence"]["ldm"]["accuracy"] >= ADHERENCE_TARGET * accuracy)
        scores = quality["fid"]
        checks["ldm_fid_below_pixel_fid"] = scores["ldm"] < scores["pixel"]
        checks["real_images_fid_floor_below_both"] = scores["real_train"] < min(scores["ldm"], scores["pixel"])
    stage_metrics = {name: {k: v for k, v in stage.items() if k != "wall_s"} for name, stage in stages.items()}
    return {
        "settings": {"seed": int(config.seed), "data_description": data_description, "data": config.data.to_dict(),
                     "prompts": prompts, "sampling": sampling, "evaluation": config.evaluation.to_dict()},
        "metrics": {"stages": stage_metrics, "reconstruction": reconstruction, "prompt_adherence": adherence,
                    "sample_quality": quality},
        "checks": checks,
        "timing": {**{f"train_{name}_s": stage["wall_s"] for name, stage in stages.items()}, **timing},
        "versions": software_versions(),
    }


def _markdown(report: dict) -> str:
    metrics, timing, settings = report["metrics"], report["timing"], report["settings"]
    sampling = settings["sampling"]
    lines = ["# ldm-jax demo report", "",
             f"Data: {settings['data_description']}", "",
             f"Images at {settings['data']['image_size']}x{settings['data']['image_size']}; seed {settings['seed']}; "
             f"sampler {sampling['sampler']}, {sampling['steps']} steps, eta {sampling['eta']}. "
             f"Total wall time {timing['total_s'] / 60:.1f} min.", "",
             "## Training", "", "| stage | parameters | steps | batch | final loss | wall time |", "|---|---|---|---|---|---|"]
    for name, stage in metrics["stages"].items():
        lines.append(f"| {name} | {stage['params'] / 1e6:.2f} M | {stage['steps']} | {stage['batch_size']} | "
                     f"{stage['final_loss']:.4g} | {timing[f'train_{name}_s'] / 60:.1f} min |")
    rec = metrics["reconstruction"]
    lines += ["", "## Reconstruction (autoencoder, held-out images)", "",
              f"PSNR {rec['psnr']:.2f} ± {rec['psnr_std']:.2f} dB, SSIM {rec['ssim']:.3f} ± {rec['ssim_std']:.3f} "
              f"over {rec['num_images']} images (`reconstructions.png`: originals above, reconstructions below).", ""]
    adherence = metrics["prompt_adherence"]
    if adherence:
        lines += ["## Prompt adherence (the built-in dataset's checker)", ""] + _adherence_table(adherence)
    quality = metrics["sample_quality"]
    lines += ["## Prompt adherence and sample quality (the feature net)", ""]
    if "fid" in quality:
        net = quality["feature_net"]
        lines += [f"Feature net: a small CNN trained {net['steps']} steps on the training split; held-out "
                  f"accuracy {net['heldout_accuracy']:.1%}. Adherence: the share of samples it classifies as "
                  f"the class they were asked for. FID on its features: {quality['num_samples']} samples per "
                  f"model vs {quality['num_heldout']} held-out images.", ""] + _adherence_table(quality["adherence"])
        lines += ["| images | FID |", "|---|---|",
                  f"| LDM (demo guidance) | {quality['fid']['ldm']:.2f} |",
                  f"| pixel-space DM, same wall time (demo guidance) | {quality['fid']['pixel']:.2f} |",
                  f"| real training images (the floor at this sample size) | {quality['fid']['real_train']:.2f} |", ""]
    else:
        lines += ["Not measured: without class folders there are no labels to train the feature net on.", ""]
    if report["checks"]:
        lines += ["## Targets", ""] + [f"- {'PASS' if ok else 'FAIL'}: {name}" for name, ok in report["checks"].items()]
        lines.append("")
    lines += ["## Files", "",
              "`reconstructions.png`, `samples_ldm.png` / `samples_pixel.png` (one row per class prompt), "
              "`samples/<model>/<prompt>.png`, `metrics.jsonl` (every stage's training log, then the evaluation), "
              "`report.json`; the trained models: `autoencoder/first_stage.safetensors`, `ldm/model.safetensors`, "
              "`pixel/model.safetensors` (with `vocab.txt`: `ldm-jax sample --checkpoint ldm/model.safetensors "
              f"--tokenizer vocab.txt --prompt \"{settings['prompts'][0]}\"`).", "",
              "Versions: " + ", ".join(f"{k} {v}" for k, v in report["versions"].items()), ""]
    return "\n".join(lines)


def _adherence_table(rows: dict) -> list[str]:
    lines = ["| samples | guidance | n | correct |", "|---|---|---|---|"]
    for key, label in _ADHERENCE_ROWS:
        if key in rows:
            row = rows[key]
            lines.append(f"| {label} | {row['guidance_scale']:g} | {row['num_samples']} | {row['accuracy']:.1%} |")
    return lines + [""]


def write(report: dict, out: pathlib.Path, stages) -> None:
    """report.json, report.md and metrics.jsonl (the stages' logs, then one evaluation line) in `out`."""
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    (out / "report.md").write_text(_markdown(report), encoding="utf-8")
    with open(out / "metrics.jsonl", "w", encoding="utf-8") as merged:
        for stage in stages:
            log = out / stage / "metrics.jsonl"
            if log.exists():
                for line in log.read_text(encoding="utf-8").splitlines():
                    merged.write(json.dumps({"stage": stage, **json.loads(line)}) + "\n")
        evaluation = {k: v for k, v in report["metrics"].items() if k != "stages"}
        merged.write(json.dumps({"stage": "evaluation", **evaluation}) + "\n")
