"""`ldm-jax train` from a latent cache written by `ldm-jax data cache-latents`: the encoder never runs,
a resumed run computes what an uninterrupted one does, and a cache that does not fit the model is
refused by field name."""
import json

import pytest

from ldm_jax import cli, zoo
from ldm_jax.config_files import load_config
from ldm_jax.convert import compvis
from ldm_jax.models import components
from tests.conftest import REPO, random_params

CONFIG = f"{REPO / 'configs' / 'builtin_shapes.py'}:ldm_tiny"  # class-conditional, KL-f4, 16^2 -> 4x4x3
NUM_RECORDS = 24  # three batches of 8 an epoch: four steps cross an epoch


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """(first-stage checkpoint, latent cache of the first NUM_RECORDS built-in records) of the tiny LDM's
    first stage with random weights."""
    folder = tmp_path_factory.mktemp("latent_cache")
    component = load_config(CONFIG).model.first_stage.to_dict()
    variables = {"params": random_params(components.abstract_params(component), seed=3)}
    checkpoint = folder / "first_stage.safetensors"
    compvis.save_checkpoint(checkpoint, zoo.autoencoder(component, zoo.released("", "", "tiny")),
                            {"first_stage": variables})
    assert cli.main(["data", "cache-latents", "--checkpoint", str(checkpoint), "--out", str(folder / "cache"),
                     "--num-records", str(NUM_RECORDS), "--image-size", "16", "--batch-size", "8"]) == 0
    return checkpoint, folder / "cache"


def train(workdir, checkpoint, *overrides, num_steps=4):
    return cli.main(["train", "--config", CONFIG, "--workdir", str(workdir), "--no-progress",
                     f"--config.pretrained.first_stage={checkpoint}", f"--config.train.num_steps={num_steps}",
                     "--config.train.log_every_steps=1", "--config.train.image_every_steps=0",
                     "--config.checkpoint.every_steps=2", "--config.checkpoint.async_save=false", *overrides])


def from_cache(folder):
    return ["--config.data.name=latent_cache", f"--config.data.data_dir={folder}"]


def losses(workdir) -> dict[int, float]:
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    return {record["step"]: record["loss"] for record in map(json.loads, lines)}


@pytest.mark.slow  # three short runs of the tiny LDM, compiled once (the persistent cache serves the others)
def test_training_from_the_cache_resumes_exactly(tmp_path, cache):
    checkpoint, folder = cache
    assert train(tmp_path / "whole", checkpoint, *from_cache(folder), "--config.train.image_every_steps=4") == 0
    assert train(tmp_path / "resumed", checkpoint, *from_cache(folder), num_steps=2) == 0
    assert train(tmp_path / "resumed", checkpoint, *from_cache(folder)) == 0
    whole, resumed = losses(tmp_path / "whole"), losses(tmp_path / "resumed")
    assert sorted(resumed) == [1, 2, 3, 4]
    assert resumed == whole  # bitwise: the same batches, the same posterior samples
    # Sample grids decode with the pretrained first stage; a cache has no input images to show.
    assert {p.name for p in (tmp_path / "whole" / "images").iterdir()} == {
        "reconstructions_00000004.png", "samples_00000004.png"}
    # That these are the losses of training on the images themselves (the encoder run in the step):
    # tests/training/test_ldm_stage.py and, through the pipeline, tests/test_bench_latent_cache.py.


def test_a_cache_of_another_size_is_refused_before_training(tmp_path, cache, capsys):
    checkpoint, folder = cache
    assert train(tmp_path / "run", checkpoint, *from_cache(folder), "--config.data.image_size=32") == 1
    error = capsys.readouterr().err
    assert "config.data.image_size: the cache holds 4x4 latents, but 32^2 images" in error
    assert "set config.data.image_size=16" in error
    assert not (tmp_path / "run" / "checkpoints").exists()
