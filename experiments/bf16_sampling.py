"""bfloat16 sampling against float32 on a trained built-in LDM: the dataset checker's adherence and the
feature-net FID of each, beside float32's own run-to-run spread (the same model, other seeds).

    python experiments/bf16_curves.py --workdir /tmp/bf16_curves     # trains the model sampled here
    python experiments/bf16_sampling.py --checkpoint /tmp/bf16_curves/float32/model.safetensors

Every class of the built-in shapes is drawn `--per-class` times with guidance `--guidance` (DDIM,
`--steps`); the checker (`data.shapes_checker`) scores whether each sample shows its class, and the
demo's feature net (trained here on the training split) gives the FID against held-out images.
"""
import argparse
import pathlib
import sys

import jax.numpy as jnp
import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from ldm_jax.config_files import load_config  # noqa: E402
from ldm_jax.data.config import pipeline_from_config  # noqa: E402
from ldm_jax.data import shapes_checker  # noqa: E402
from ldm_jax.evaluation import feature_net, fid  # noqa: E402
from ldm_jax.inference.pipeline import LatentDiffusionPipeline  # noqa: E402

NUM_CLASSES = load_config(str(REPO / "configs" / "builtin_shapes.py:ldm")).model.cond_stage.params.n_classes - 1
BATCH = 64


def _batches(split: str, shuffle: bool):
    data = load_config(str(REPO / "configs" / "builtin_shapes.py:ldm")).data
    data.update(task="image", batch_size=BATCH, shuffle=shuffle, seed=0, split=split)
    return pipeline_from_config(data)


def _draw(pipe, labels, guidance: float, steps: int, seed: int) -> np.ndarray:
    images = []
    for index, start in enumerate(range(0, len(labels), BATCH)):
        chunk = labels[start:start + BATCH]
        padded = chunk + [chunk[-1]] * (BATCH - len(chunk))  # one compilation
        drawn = pipe(class_label=padded, num_steps=steps, guidance_scale=guidance, seed=seed * 1000 + index,
                     batch_size=BATCH, progress=False)
        images.extend(np.asarray(image) for image in drawn[:len(chunk)])
    return np.stack(images)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", type=pathlib.Path, required=True)
    parser.add_argument("--per-class", type=int, default=32)
    parser.add_argument("--guidance", type=float, default=3.0)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--feature-net-steps", type=int, default=400)
    parser.add_argument("--heldout", type=int, default=1024)
    args = parser.parse_args(argv)

    params, _ = feature_net.train_feature_net(_batches("train", True), num_classes=NUM_CLASSES,
                                              steps=args.feature_net_steps, seed=0)
    features = feature_net.feature_fn(params, num_classes=NUM_CLASSES, batch_size=BATCH)
    heldout, pipeline = [], _batches("validation", False)
    while sum(len(x) for x in heldout) < args.heldout:
        heldout.append(np.asarray(next(pipeline)["image"], np.float32))
    pipeline.close()
    heldout_stats = fid.statistics_of(feature_net.compute_features(features, np.concatenate(heldout)[:args.heldout],
                                                                   BATCH)["features"])

    labels = [label for label in range(NUM_CLASSES) for _ in range(args.per_class)]
    runs = (("float32", None, 0), ("float32, seed 1", None, 1), ("float32, seed 2", None, 2), ("bfloat16", jnp.bfloat16, 0),
            ("bfloat16, seed 1", jnp.bfloat16, 1))
    pipes = {dtype: LatentDiffusionPipeline.from_checkpoint(args.checkpoint, dtype=dtype) for dtype in (None, jnp.bfloat16)}
    print(f"{len(labels)} samples ({args.per_class} per class, {NUM_CLASSES} classes), guidance {args.guidance}, "
          f"DDIM {args.steps}; FID of the feature net against {args.heldout} held-out images")
    print(f"{'run':18s} {'adherence':>9s} {'FID':>8s}")
    for name, dtype, seed in runs:
        images = _draw(pipes[dtype], labels, args.guidance, args.steps, seed)
        adherence = shapes_checker.accuracy(images, labels)
        stats = fid.statistics_of(feature_net.compute_features(features, images, BATCH)["features"])
        print(f"{name:18s} {adherence:9.3f} {fid.fid_from_statistics(stats, heldout_stats):8.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
