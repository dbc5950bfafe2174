"""`ldm-jax data build` and `ldm-jax data cache-latents`: prepare datasets for training."""
import argparse
import os
import sys
import time

from ldm_jax.data.folder import LABEL_MODES

BUILD_EXAMPLES = """examples:
  ldm-jax data build --from folder --out ~/tensorflow_datasets --name pets ~/photos/pets
  ldm-jax data build --from tar --out /data/tfds --name laion_subset --num-shards 64 \\
      --min-size 256 '/data/laion/{00000..00099}.tar'

then read it with ldm_jax.data.arrayrecord.tfds_source("pets", data_dir="~/tensorflow_datasets")"""

CACHE_EXAMPLES = """examples:
  ldm-jax data cache-latents --checkpoint kl-f8.ckpt --config configs/kl_f8.py \\
      --dataset folder --data-dir /data/lsun/churches --image-size 256 --out /data/churches-latents
  ldm-jax data cache-latents --checkpoint sd-v1-4.ckpt --config configs/sd_v1.py --dataset tar \\
      --shards '/data/laion/{00000..00099}.tar' --image-size 512 --embed-captions \\
      --tokenizer clip-vit-large-patch14/ --embedding-dtype float16 --out /data/laion-latents

then train from the cache instead of the images (the encoder never runs; --config.data.image_size must
be the one the cache was written at, and random_crop / flip off):
  ldm-jax train --config configs/lsun_churches_ldm_kl8.py --workdir /ckpt/churches \\
      --config.data.name=latent_cache --config.data.data_dir=/data/churches-latents --config.data.flip=false"""


def add(commands) -> None:
    data = commands.add_parser(
        "data", help="prepare datasets: convert to ArrayRecord, cache first-stage latents",
        description="Dataset tools. `build` converts an image folder or webdataset tar shards into a TFDS "
                    "ArrayRecord dataset; `cache-latents` encodes a dataset once with a first-stage model.",
        epilog="examples:\n  ldm-jax data build --from folder --out ~/tensorflow_datasets --name pets ~/photos/pets\n"
               "  ldm-jax data cache-latents --checkpoint kl-f8.ckpt --config configs/kl_f8.py --dataset folder \\\n"
               "      --data-dir /data/images --image-size 256 --out /data/latents",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    data_commands = data.add_subparsers(dest="data_command", required=True)
    _add_build(data_commands)
    _add_cache_latents(data_commands)


# -- data build ----------------------------------------------------------------------------------


def _add_build(commands) -> None:
    parser = commands.add_parser(
        "build", help="convert an image folder or tar shards into a TFDS ArrayRecord dataset",
        description="Convert an image folder (class sub-folders become labels, <stem>.txt / .json captions) or "
                    "webdataset tar shards into a TFDS ArrayRecord dataset; images that do not decode are skipped "
                    "and listed.",
        epilog=BUILD_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--from", dest="source_format", choices=("folder", "tar"), required=True,
                        help="what SRC is: one image folder, or tar shards (paths, brace patterns, globs)")
    parser.add_argument("--out", required=True, help="TFDS data_dir to write into (the dataset goes to OUT/NAME/1.0.0)")
    parser.add_argument("--name", default=None,
                        help="dataset name, snake_case (default: from the source folder's name)")
    parser.add_argument("--split", default="train", help="split to write (default: train)")
    parser.add_argument("--num-shards", type=int, default=None,
                        help="number of ArrayRecord shards (default: by size, as tfds chooses)")
    parser.add_argument("--labels", choices=LABEL_MODES, default="auto",
                        help="folder: class sub-folders as labels (default: auto, when every image is in one)")
    parser.add_argument("--min-size", type=int, default=None,
                        help="tar: drop samples whose json width/height has a side below this")
    parser.add_argument("--max-aspect-ratio", type=float, default=None,
                        help="tar: drop samples whose json width/height ratio (long / short side) is above this")
    parser.add_argument("--caption-required", action="store_true", help="tar: drop samples without a caption")
    parser.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1),
                        help="processes that decode images to check them (default: %(default)s; 1 = in-process)")
    parser.add_argument("--overwrite", action="store_true", help="replace the split if it already exists")
    parser.add_argument("sources", nargs="+", metavar="SRC", help="the image folder, or the tar shards")
    parser.set_defaults(run=_build)


def _build(args) -> int:
    from ldm_jax.data.build import build_dataset, default_name
    from ldm_jax.data.webdataset import TarShardSource

    try:
        source = _open_source(args)
        name = args.name or default_name(args.sources[0], args.source_format)
        print(f"converting {source!r} into {os.path.join(args.out, name)} ({args.split})", flush=True)
        written = build_dataset(source, args.out, name, split=args.split, num_shards=args.num_shards,
                                workers=args.workers, overwrite=args.overwrite)
    except (OSError, ValueError, KeyError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    for key, reason in written.skipped:
        print(f"skipped {key}: {reason}")
    if isinstance(source, TarShardSource):
        if source.filtered:
            reasons = ", ".join(f"{count} {reason}" for reason, count in source.filtered_by_reason.items() if count)
            print(f"filtered while indexing: {source.filtered} ({reasons})")
        for shard, lost in source.lost_members.items():
            print(f"damaged shard {shard}: {lost} member(s) lost")
    print(f"wrote {written.num_records} records to {written.directory} in {written.num_shards} shard(s), split "
          f"{written.split!r}; skipped {len(written.skipped)} bad record(s)")
    print(f"read it with tfds_source({written.name!r}, split={written.split!r}, data_dir={os.fspath(args.out)!r})")
    return 0


def _open_source(args):
    from ldm_jax.data.folder import ImageFolderSource
    from ldm_jax.data.webdataset import TarShardSource

    if args.source_format == "folder":
        if len(args.sources) != 1:
            raise ValueError(f"--from folder takes exactly one folder, got {len(args.sources)}: {args.sources}")
        return ImageFolderSource(os.path.expanduser(args.sources[0]), labels=args.labels)
    return TarShardSource([os.path.expanduser(spec) for spec in args.sources], min_size=args.min_size,
                          max_aspect_ratio=args.max_aspect_ratio, caption_required=args.caption_required)


# -- data cache-latents --------------------------------------------------------------------------


def _add_cache_latents(commands) -> None:
    parser = commands.add_parser(
        "cache-latents", help="encode a dataset with a first-stage model into ArrayRecord shards",
        epilog=CACHE_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True,
                        help="a first-stage or LDM checkpoint (.ckpt / .safetensors) holding the autoencoder")
    parser.add_argument("--config", help="its reference YAML or one of configs/*.py (default: the YAML beside it)")
    parser.add_argument("--out", required=True, help="the folder to write the cache to (must not hold one)")
    parser.add_argument("--dataset", default="builtin", choices=("builtin", "folder", "tar", "tfds"),
                        help="the images to encode (as config.data.name; default: builtin)")
    parser.add_argument("--data-dir", default="", help="folder: the image root; tfds: the TFDS data_dir")
    parser.add_argument("--tfds-name", default="", help="tfds: the prepared dataset's name")
    parser.add_argument("--shards", default="", help="tar: shard paths, brace patterns or globs")
    parser.add_argument("--split", default="train")
    parser.add_argument("--num-records", type=int, default=10_000, help="builtin: how many records")
    parser.add_argument("--image-size", type=int, default=256,
                        help="images are resized (smaller side) and centre-cropped to this square")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--worker-count", type=int, default=0, help="worker processes that decode images")
    parser.add_argument("--max-bad-fraction", type=float, default=0.01,
                        help="stop when more records than this cannot be read")
    parser.add_argument("--records-per-shard", type=int, default=10_000)
    parser.add_argument("--embed-captions", action="store_true",
                        help="also store the checkpoint's text encoder's embedding of each caption (LDM checkpoints)")
    parser.add_argument("--tokenizer", help="with --embed-captions: the folder of the tokenizer's vocabulary files")
    parser.add_argument("--embedding-dtype", default="float32", choices=("float32", "float16"))
    parser.set_defaults(run=_cache_latents)


def _data_config(args):
    from ldm_jax.data.config import default_data_config, validate_data_config

    data = default_data_config()
    data.update(dict(name=args.dataset, data_dir=args.data_dir, tfds_name=args.tfds_name, shards=args.shards,
                     split=args.split, num_records=args.num_records, image_size=args.image_size,
                     batch_size=args.batch_size, worker_count=args.worker_count,
                     max_bad_fraction=args.max_bad_fraction, shuffle=False, num_epochs=1))
    validate_data_config(data, prefix="data")
    return data


def _text_encoder(config, variables, tokenizer_path):
    """captions -> embeddings with the checkpoint's text cond stage and the tokenizer at `tokenizer_path`."""
    import numpy as np

    from ldm_jax.inference import inputs
    from ldm_jax.inference.pipeline import LatentDiffusionPipeline

    if "diffusion" not in config.model or "cond_stage" not in config.model:
        raise ValueError("--embed-captions needs an LDM checkpoint with a text cond stage; this one holds "
                         f"{sorted(config.model)}")
    pipe = LatentDiffusionPipeline(config, variables)
    traits = pipe.traits
    if not traits.is_text:
        raise ValueError(f"--embed-captions needs a text cond stage, this model's is {traits.cond_kind!r}")
    tokenize = inputs.text_tokenizer(traits, tokenizer_path)
    return lambda captions: np.asarray(pipe.encode_text(tokenize(captions)))


def _cache_latents(args) -> int:
    """Encodes a dataset once with a checkpoint's first stage."""
    import jax

    from ldm_jax.convert import compvis
    from ldm_jax.data.config import DataConfigError, source_from_config, transform_from_config
    from ldm_jax.data.latent_cache import FirstStageEncoder, write_latent_cache
    from ldm_jax.data.pipeline import make_pipeline
    from ldm_jax.models import components

    try:
        data = _data_config(args)
    except DataConfigError as error:
        print(f"ldm-jax data cache-latents: {error}", file=sys.stderr)
        return 2
    if args.embed_captions and not args.tokenizer:
        print("ldm-jax data cache-latents: --embed-captions needs --tokenizer (the folder of the text encoder's "
              "vocabulary files)", file=sys.stderr)
        return 2
    start = time.perf_counter()
    config, variables = compvis.load_checkpoint(args.checkpoint, args.config)
    if "first_stage" not in variables:
        raise ValueError(f"{args.checkpoint}: no first stage in this checkpoint (it holds {sorted(variables)})")
    encoder = FirstStageEncoder(components.build(config.model.first_stage.to_dict()), variables["first_stage"])
    text_encoder = _text_encoder(config, variables, args.tokenizer) if args.embed_captions else None
    pipeline = make_pipeline(source_from_config(data), transform_from_config(data), batch_size=data.batch_size,
                             seed=0, shuffle=False, num_epochs=1, drop_remainder=False,
                             worker_count=data.worker_count, max_bad_fraction=data.max_bad_fraction)
    diffusion = config.model.get("diffusion")
    metadata = {"checkpoint": str(args.checkpoint), "first_stage": config.model.first_stage.to_dict(),
                "scale_factor": None if diffusion is None else float(diffusion.scale_factor),
                "data": data.to_dict()}
    with pipeline:
        description = write_latent_cache(
            pipeline, encoder, args.out, text_encoder=text_encoder, embedding_dtype=args.embedding_dtype,
            records_per_shard=args.records_per_shard, process_index=jax.process_index(), metadata=metadata,
            log=print)
    bad = (description["pipeline_statistics"] or {}).get("bad_records", 0)
    print(f"wrote {description['num_records']} records ({', '.join(description['shapes'])}; {bad} bad records "
          f"skipped) in {len(description['shards'])} shard(s) to {args.out} in {time.perf_counter() - start:.1f}s")
    return 0
