"""Latent caches: a tiny random autoencoder's encodings written, read back and compared with direct encoding."""
import json

import numpy as np
import pytest

from ldm_jax import cli, zoo
from ldm_jax.data import latent_cache
from ldm_jax.data.latent_cache import (FirstStageEncoder, LatentCacheSource, deserialize_example,
                                       serialize_example, write_latent_cache)
from ldm_jax.data.pipeline import make_pipeline
from ldm_jax.data.records import BadRecord
from ldm_jax.data.synthetic import SyntheticShapes
from ldm_jax.data.transforms import ImageTransform
from ldm_jax.models import components
from tests.conftest import REPO, random_params

DDCONFIG = {"double_z": True, "z_channels": 2, "resolution": 16, "in_channels": 3, "out_ch": 3, "ch": 32,
            "ch_mult": [1, 2], "num_res_blocks": 1, "attn_resolutions": [], "dropout": 0.0}
KL = {"kind": "autoencoder_kl", "params": {"embed_dim": 2, "ddconfig": DDCONFIG}}
VQ = {"kind": "vq", "params": {"embed_dim": 2, "n_embed": 16, "ddconfig": dict(DDCONFIG, double_z=False)}}


def tiny_first_stage(component, seed=0):
    module = components.build(component)
    return module, {"params": random_params(components.abstract_params(component), seed)}


def image_batches(num_records=10, batch_size=4):
    return make_pipeline(SyntheticShapes(num_records, image_size=16), ImageTransform(16), batch_size=batch_size,
                         seed=0, shuffle=False, num_epochs=1, drop_remainder=False, process_index=0,
                         process_count=1)


def test_serialisation_round_trips_arrays_and_scalars():
    example = {"key": "a/1", "label": 3, "caption": "ünïcode", "none": None,
               "mean": np.arange(12, dtype=np.float32).reshape(2, 3, 2), "indices": np.array([[1, 2]], np.int32)}
    back = deserialize_example(serialize_example(example))
    assert back.keys() == example.keys()
    for name, value in example.items():
        np.testing.assert_array_equal(back[name], value)
        assert np.asarray(back[name]).dtype == np.asarray(value).dtype
    with pytest.raises(TypeError, match="'boxes'"):
        serialize_example({"boxes": [{"bbox": (0, 0, 1, 1)}]})
    with pytest.raises(BadRecord, match="not a latent-cache record"):
        deserialize_example(b"PK\x03\x04 something else", where="shard#3")


def test_kl_cache_matches_direct_encoding_in_order(tmp_path):
    module, variables = tiny_first_stage(KL)
    encoder = FirstStageEncoder(module, variables)
    with image_batches() as batches:
        description = write_latent_cache(batches, encoder, tmp_path / "cache", records_per_shard=4,
                                         metadata={"note": "test"})
    assert description["num_records"] == 10 and [s["records"] for s in description["shards"]] == [4, 4, 2]
    assert description["shapes"] == {"mean": [8, 8, 2], "std": [8, 8, 2]}

    source = LatentCacheSource(tmp_path / "cache")
    assert len(source) == 10 and source.description["metadata"] == {"note": "test"}
    items = [source[i] for i in range(10)]
    assert [item["key"] for item in items] == [f"shapes-0/{i:08d}" for i in range(10)]
    transform, records = ImageTransform(16), SyntheticShapes(10, image_size=16)
    images = np.stack([transform(records[i])["image"] for i in range(10)])
    posterior = module.apply(variables, images, method="encode")
    np.testing.assert_allclose(np.stack([item["mean"] for item in items]), posterior.mean, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.stack([item["std"] for item in items]), posterior.std, rtol=1e-5, atol=1e-5)
    assert [item["label"] for item in items] == [records[i]["label"] for i in range(10)]
    assert items[3]["caption"] == records[3]["caption"]

    # The cache is itself a source for the pipeline: batches of mean / std for the LDM training step.
    with make_pipeline(source, None, batch_size=5, seed=1, process_index=0, process_count=1) as latents:
        batch = next(latents)
    assert batch["mean"].shape == (5, 8, 8, 2) and batch["std"].dtype == np.float32

    with pytest.raises(FileExistsError, match="already holds a latent cache"):
        write_latent_cache([], encoder, tmp_path / "cache")


def test_vq_cache_holds_the_pre_quantisation_latent_and_its_codes(tmp_path):
    module, variables = tiny_first_stage(VQ, seed=1)
    with image_batches(num_records=4) as batches:
        write_latent_cache(batches, FirstStageEncoder(module, variables), tmp_path / "vq",
                           text_encoder=lambda captions: np.full((len(captions), 3, 5), len(captions[0])),
                           embedding_dtype="float16")
    source = LatentCacheSource(tmp_path / "vq")
    item = source[2]
    images = np.stack([ImageTransform(16)(SyntheticShapes(4, image_size=16)[i])["image"] for i in range(4)])
    latent = module.apply(variables, images, method="encode")
    _, indices = module.apply(variables, latent, method="quantize")
    np.testing.assert_allclose(item["latent"], latent[2], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(item["indices"], indices[2])
    assert item["context"].shape == (3, 5) and item["context"].dtype == np.float16
    assert item["context"][0, 0] == len(SyntheticShapes(4, image_size=16)[0]["caption"])


def test_an_incomplete_cache_is_refused(tmp_path):
    (tmp_path / "shard-p000-00000.array_record").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="no latent cache"):
        LatentCacheSource(tmp_path)
    (tmp_path / "cache-p000.json").write_text(json.dumps({
        "format": latent_cache.CACHE_FORMAT, "num_records": 3, "encoder": {"kind": "kl"},
        "shards": [{"file": "shard-p000-00001.array_record", "records": 3}]}))
    with pytest.raises(FileNotFoundError, match="lacks 1 shard"):
        LatentCacheSource(tmp_path)


def test_command_line_caches_the_builtin_dataset(tmp_path, capsys):
    from ldm_jax.convert import compvis

    config = zoo.autoencoder(KL, zoo.released("tiny.ckpt", "tiny.yaml", "autoencoding"))
    _, variables = tiny_first_stage(KL)
    compvis.save_checkpoint(tmp_path / "tiny.safetensors", config, {"first_stage": variables})
    command = ["data", "cache-latents"]
    assert cli.main([*command, "--checkpoint", str(tmp_path / "tiny.safetensors"), "--out", str(tmp_path / "out"),
                     "--num-records", "6", "--image-size", "16", "--batch-size", "4"]) == 0
    assert "wrote 6 records" in capsys.readouterr().out
    source = LatentCacheSource(tmp_path / "out")
    assert len(source) == 6 and source.description["metadata"]["data"]["image_size"] == 16
    assert source[5]["key"] == "shapes-0/00000005" and source[5]["mean"].shape == (8, 8, 2)

    assert cli.main([*command, "--checkpoint", "x", "--out", str(tmp_path / "o2"), "--dataset", "folder"]) == 2
    assert "data.data_dir" in capsys.readouterr().err


# -- the cache as a training source ----------------------------------------------------------------------

def cache_data_config(path, **fields):
    from ldm_jax.data.config import default_data_config

    data = default_data_config()
    data.update({"name": "latent_cache", "data_dir": str(path), "batch_size": 4, "seed": 3, "image_size": 16,
                 **fields})
    return data


def test_a_cache_is_a_dataset_of_the_data_config_with_disjoint_process_slices(tmp_path):
    from ldm_jax.data.config import pipeline_from_config

    module, variables = tiny_first_stage(VQ, seed=1)
    with image_batches(num_records=8) as batches:
        write_latent_cache(batches, FirstStageEncoder(module, variables), tmp_path / "vq")
    data = cache_data_config(tmp_path / "vq", num_epochs=1)
    keys = []
    for process in range(2):
        with pipeline_from_config(data, process_index=process, process_count=2) as pipeline:
            batches = list(pipeline)
        assert [len(batch["key"]) for batch in batches] == [2, 2]
        assert set(batches[0]) == {"key", "label", "caption", "latent"}  # the codebook indices stay behind
        assert batches[0]["latent"].shape == (2, 8, 8, 2)
        keys.append({key for batch in batches for key in batch["key"]})
    assert not keys[0] & keys[1] and len(keys[0] | keys[1]) == 8  # each record once, in one process's slice


def test_bad_cache_records_are_skipped_and_counted(tmp_path):
    from array_record.python.array_record_module import ArrayRecordWriter

    from ldm_jax.data.config import pipeline_from_config

    module, variables = tiny_first_stage(KL)
    with image_batches(num_records=6) as batches:
        description = write_latent_cache(batches, FirstStageEncoder(module, variables), tmp_path / "kl")
    # A second writing process's shard: a corrupt record and one with a wrongly shaped mean.
    writer = ArrayRecordWriter(str(tmp_path / "kl" / "shard-p001-00000.array_record"), "group_size:1")
    writer.write(b"garbage")
    writer.write(serialize_example({"key": "odd", "mean": np.zeros((4, 4, 2), np.float32),
                                    "std": np.zeros((8, 8, 2), np.float32), "label": 0, "caption": "x"}))
    writer.close()
    (tmp_path / "kl" / "cache-p001.json").write_text(json.dumps(
        {**description, "process_index": 1, "num_records": 2,
         "shards": [{"file": "shard-p001-00000.array_record", "records": 2}]}))
    data = cache_data_config(tmp_path / "kl", num_epochs=2, shuffle=False, batch_size=2, max_bad_fraction=0.5,
                             min_records_before_check=1)
    with pipeline_from_config(data, process_index=0, process_count=1) as pipeline:
        batches = list(pipeline)
        statistics = pipeline.statistics()  # as of the last batch: the first epoch's bad records
    assert sum(len(batch["key"]) for batch in batches) == 12 and statistics["bad_records"] == 2
    reasons = {item["key"]: item["reason"] for item in statistics["first_bad"]}
    assert "not a latent-cache record" in reasons["kl#6"] and "'mean' has shape (4, 4, 2)" in reasons["odd"]


def test_data_config_errors_of_a_latent_cache(tmp_path):
    from ldm_jax.data.config import DataConfigError, validate_data_config

    with pytest.raises(DataConfigError) as error:
        validate_data_config(cache_data_config(tmp_path, flip=True, task="inpainting"))
    message = str(error.value)
    assert "config.data.data_dir: no latent cache in" in message
    assert "config.data.flip: must be False: a latent cache holds the latents of fixed crops" in message
    assert "config.data.task: a latent cache holds no images" in message
    with pytest.raises(DataConfigError, match="config.data.data_dir: the latent_cache dataset needs data_dir"):
        validate_data_config(cache_data_config(""))


def test_a_cache_that_does_not_fit_the_model_is_refused_by_name(tmp_path):
    from ldm_jax.config_files import load_config
    from ldm_jax.training.experiment import ExperimentConfigError, validate_experiment_config, with_training_defaults

    module, variables = tiny_first_stage(KL)  # 8x8x2 latents of 16x16 images (f = 2)
    with image_batches(num_records=2) as batches:
        write_latent_cache(batches, FirstStageEncoder(module, variables), tmp_path / "kl",
                           metadata={"scale_factor": 0.5})
    config = with_training_defaults(load_config(str(REPO / "configs" / "builtin_shapes.py:ldm_tiny")))
    config.data.update(name="latent_cache", data_dir=str(tmp_path / "kl"), flip=False)
    config.model.diffusion.scale_by_std = False  # the tiny LDM: f = 4, 3 latent channels, scale 1
    with pytest.raises(ExperimentConfigError) as error:
        validate_experiment_config(config)
    message = str(error.value)
    assert "config.model.unet.params.out_channels: the cached latents have 2 channels, the UNet diffuses 3" in message
    assert ("config.data.image_size: the cache holds 8x8 latents, but 16^2 images through this first stage (f=4) "
            "give 4x4: set config.data.image_size=32") in message
    assert "config.model.diffusion.scale_factor: 1.0, but the cache was written from an LDM checkpoint" in message
    config.pretrained.model = "ldm.safetensors"  # a pretrained LDM brings its own scale factor
    with pytest.raises(ExperimentConfigError) as error:
        validate_experiment_config(config)
    assert "scale_factor" not in str(error.value)

    config.model.first_stage.kind = "vq"
    with pytest.raises(ExperimentConfigError, match="the latent cache holds KL posteriors .mean, std., but this "
                                                    "model's 'vq' first stage takes VQ latents"):
        validate_experiment_config(config)
    config.model = zoo.autoencoder(VQ, zoo.released("", "", "vq")).model
    with pytest.raises(ExperimentConfigError, match="a latent cache feeds latent diffusion training"):
        validate_experiment_config(config)


def test_cached_text_embeddings_with_conditioning_dropout_need_the_text_encoders_weights(tmp_path):
    from ldm_jax.config_files import load_config
    from ldm_jax.training.experiment import ExperimentConfigError, validate_experiment_config, with_training_defaults

    module, variables = tiny_first_stage(KL)
    with image_batches(num_records=2) as batches:
        write_latent_cache(batches, FirstStageEncoder(module, variables), tmp_path / "kl")
    description_path = tmp_path / "kl" / "cache-p000.json"
    description = json.loads(description_path.read_text())
    description["shapes"]["context"] = [5, 16]  # as `--embed-captions` records them
    description_path.write_text(json.dumps(description))
    config = with_training_defaults(load_config(str(REPO / "configs" / "builtin_shapes.py:ldm_tiny")))
    config.data.update(name="latent_cache", data_dir=str(tmp_path / "kl"), flip=False)
    assert config.train.cond_drop_prob > 0
    with pytest.raises(ExperimentConfigError, match=r"config\.pretrained\.cond_stage: the cache holds text "
                                                    r"embeddings and train\.cond_drop_prob > 0"):
        validate_experiment_config(config)
    config.pretrained.cond_stage = "text_encoder.safetensors"
    with pytest.raises(ExperimentConfigError) as error:  # the cache's other mismatches remain
        validate_experiment_config(config)
    assert "pretrained.cond_stage" not in str(error.value)
