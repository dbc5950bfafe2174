"""FID against CLIP score over classifier-free guidance scales: the trade-off curve of the SD model card.

The Stable Diffusion v1 model card plots, for guidance scales 1.5, 2, 3, 4, 5, 6, 7 and 8, FID against
CLIP score (ViT-L/14) of 10,000 samples drawn with 50 PLMS steps for random MS-COCO 2017 validation
captions at 512x512. This script runs `ldm-jax evaluate --metrics fid,clip_score` once per scale into
WORK/cfg_<scale>/ (a stopped sweep continues where it ended: each evaluation keeps its samples) and
writes the curve as a markdown table and JSON.

    python experiments/guidance_sweep.py --checkpoint sd-v1-4.ckpt --config configs/sd_v1.py \
        --tokenizer /models/clip-vit-large-patch14 --prompts coco2017_val_10k_captions.txt \
        --data /data/coco2017_val_512 --inception-weights pt_inception-2015-12-05-6726825d.pth \
        --clip-weights /models/clip-vit-large-patch14/model.safetensors --work /results/sd_v1_4_sweep
    python experiments/guidance_sweep.py --dry-run --work /tmp/sweep    # tiny random models, a few samples

`--dry-run` runs the same path end to end on the CPU in a minute or two: a random txt2img_f8_bert:tiny
checkpoint (32x32) with a word vocabulary, prompts and the FID reference from the built-in shapes, the
built-in feature net, and a random two-block CLIP in open_clip's layout with a byte-level vocabulary.
Its numbers mean nothing; tests/test_guidance_sweep.py runs it.
"""
import argparse
import dataclasses
import gzip
import json
import pathlib
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

MODEL_CARD_SCALES = (1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0)
TINY_SCALES = (1.0, 4.0)


def _scales(text: str) -> tuple[float, ...]:
    return tuple(float(part) for part in text.split(",") if part.strip())


def sweep(settings, scales, work: pathlib.Path, progress: bool = True) -> list[dict]:
    """One evaluation per guidance scale (`settings` with guidance_scale replaced): their rows."""
    from ldm_jax.evaluation.evaluate import evaluate

    rows = []
    for scale in scales:
        results = evaluate(dataclasses.replace(settings, guidance_scale=scale), work / f"cfg_{scale:g}",
                           progress=progress)
        metrics = results["metrics"]
        rows.append({"guidance_scale": scale, "fid": metrics["fid"], "clip_score": metrics["clip_score"],
                     "clip_score_std": metrics["clip_score_std"], "num_samples": results["num_samples"],
                     "wall_time_s": results["wall_time_s"]})
    return rows


def markdown(rows: list[dict]) -> str:
    lines = ["| guidance scale | FID | CLIP score | samples |", "|---|---|---|---|"]
    lines += [f"| {row['guidance_scale']:g} | {row['fid']:.2f} | {row['clip_score']:.2f} ± "
              f"{row['clip_score_std']:.2f} | {row['num_samples']} |" for row in rows]
    return "\n".join(lines)


def _random(abstract: dict, seed: int) -> dict:
    """Random numpy weights shaped like `abstract` (no compiled init): unit-scale outputs, norms near 1."""
    import jax
    import numpy as np

    rng = np.random.default_rng(seed)

    def draw(path, spec):
        if path[-1].key == "scale":
            return (1 + 0.1 * rng.standard_normal(spec.shape)).astype(spec.dtype)
        if path[-1].key == "bias" or len(spec.shape) < 2:
            return (0.1 * rng.standard_normal(spec.shape)).astype(spec.dtype)
        return (rng.standard_normal(spec.shape) / np.sqrt(np.prod(spec.shape[:-1]))).astype(spec.dtype)

    return jax.tree_util.tree_map_with_path(draw, abstract)


def tiny_setup(work: pathlib.Path) -> dict:
    """Random tiny models and their vocabularies in WORK/tiny/: the EvaluationSettings fields of a dry run."""
    import numpy as np

    from ldm_jax.config_files import load_config
    from ldm_jax.convert import checkpoint_files, compvis, state_dict
    from ldm_jax.data.synthetic import caption_words
    from ldm_jax.models import clip_vision, components, open_clip_text, tokenizers
    from ldm_jax.models.abstract import abstract_module_params

    folder = work / "tiny"
    folder.mkdir(parents=True, exist_ok=True)
    config = load_config(str(REPO / "configs" / "txt2img_f8_bert.py:tiny"))
    sections = ("first_stage", "unet", "cond_stage")
    variables = {section: {"params": _random(components.abstract_params(config.model[section]), seed)}
                 for seed, section in enumerate(sections)}
    compvis.save_checkpoint(folder / "model.safetensors", config, variables)
    vocab = tokenizers.write_word_vocab(caption_words(), folder / "vocab.txt")

    clip = folder / "clip"
    clip.mkdir(exist_ok=True)
    # OpenAI's merges file with no merges: CLIP's 256 bytes, the same ending a word, BOS, EOS (513).
    with gzip.open(clip / tokenizers.OPENAI_BPE, "wt", encoding="utf-8") as file:
        file.write("#version: 0.2\n")
    vision = clip_vision.CLIPVisionTransformer(image_size=32, patch_size=8, width=32, layers=2, heads=2, embed_dim=16,
                                               quick_gelu=False)
    text = open_clip_text.OpenCLIPTextModel(width=32, layers=2, heads=2, context_length=32, vocab_size=514,
                                            embed_dim=16)
    tensors = {"logit_scale": np.zeros((), np.float32)}
    for prefix, module, inputs, seed in (("visual.", vision, clip_vision.example_inputs(vision), 3),
                                         ("", text, open_clip_text.example_inputs(text), 4)):
        params = _random(abstract_module_params(module, *inputs), seed)
        tensors.update({prefix + key: value for key, value in state_dict.to_state_dict(params).items()})
    checkpoint_files.write_safetensors(tensors, clip / "open_clip_model.safetensors")
    (clip / "open_clip_config.json").write_text(json.dumps({"model_cfg": {
        "embed_dim": 16, "vision_cfg": {"width": 32, "head_width": 16}, "text_cfg": {"heads": 2}}}))
    return dict(checkpoint=str(folder / "model.safetensors"), tokenizer=str(vocab), data="builtin",
                features="builtin", feature_net_steps=5, clip_weights=str(clip / "open_clip_model.safetensors"))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=pathlib.Path, required=True, help="WORK/cfg_<scale>/ per evaluation")
    parser.add_argument("--dry-run", action="store_true", help="tiny random models, 8 samples at 2 scales, on the CPU")
    parser.add_argument("--checkpoint")
    parser.add_argument("--config")
    parser.add_argument("--tokenizer", help="the text model's vocabulary files")
    parser.add_argument("--prompts", help="one prompt per line (default: the captions of --data)")
    parser.add_argument("--data", help="the FID reference images (and captions)")
    parser.add_argument("--reference-stats", help="or FID statistics / an ADM reference batch (.npz)")
    parser.add_argument("--inception-weights")
    parser.add_argument("--clip-weights", help="transformers' or open_clip's CLIP checkpoint (ViT-L/14 for SD v1)")
    parser.add_argument("--clip-tokenizer", help="default: the folder of --clip-weights")
    parser.add_argument("--scales", type=_scales, help="comma-separated (default: the model card's "
                                                       "1.5,2,3,4,5,6,7,8; dry run: 1,4)")
    parser.add_argument("--num-samples", type=int, help="default 10000 (the model card's); dry run 8")
    parser.add_argument("--sampler", default="plms")
    parser.add_argument("--steps", type=int, help="default 50; dry run 2")
    parser.add_argument("--batch-size", type=int, help="default 16; dry run 4")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=pathlib.Path, help="also write the rows here as JSON")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)

    import jax

    from ldm_jax.evaluation.evaluate import EvaluationSettings

    # Each scale's evaluation loads its own pipeline: the persistent cache compiles the sampler once.
    if not jax.config.jax_compilation_cache_dir:
        jax.config.update("jax_compilation_cache_dir", str(args.work / "jax_cache"))
    fields = {name: getattr(args, name) for name in ("checkpoint", "config", "tokenizer", "prompts", "data",
                                                     "reference_stats", "inception_weights", "clip_weights",
                                                     "clip_tokenizer") if getattr(args, name)}
    if args.dry_run:
        fields.update(tiny_setup(args.work))
        defaults = dict(scales=TINY_SCALES, num_samples=8, steps=2, batch_size=4)
    else:
        defaults = dict(scales=MODEL_CARD_SCALES, num_samples=10_000, steps=50, batch_size=16)
    settings = EvaluationSettings(**fields, num_samples=args.num_samples or defaults["num_samples"],
                                  steps=args.steps or defaults["steps"], sampler=args.sampler, seed=args.seed,
                                  batch_size=args.batch_size or defaults["batch_size"], metrics=("fid", "clip_score"),
                                  cache_dir=str(args.work / "cache"))
    rows = sweep(settings, args.scales or defaults["scales"], args.work, progress=not args.no_progress)
    print(markdown(rows))
    if args.out:
        args.out.write_text(json.dumps({"settings": dataclasses.asdict(settings), "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
