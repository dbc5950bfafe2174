"""The public conversion API against the full reference checkpoint (fixture `full_ckpt`)."""
import shutil

import jax
import numpy as np
import pytest
from safetensors.numpy import load_file

from ldm_jax.convert import compvis
from ldm_jax.convert.checkpoint_files import CheckpointFileError
from ldm_jax.convert.state_dict import CheckpointMismatchError
from ldm_jax.models import components
from tests.conftest import assert_matches_reference, case_weights, nchw_to_nhwc


@pytest.fixture(scope="module")
def reference(compvis_fixtures):
    return np.load(compvis_fixtures / "full_ckpt.npz")


@pytest.fixture(scope="module")
def loaded(compvis_fixtures):
    return compvis.load_checkpoint(compvis_fixtures / "full_ckpt.safetensors", compvis_fixtures / "full_ckpt.yaml")


def _eps(config, variables, reference):
    unet = components.build(config.model.unet.to_dict())
    out = jax.jit(unet.apply)(variables["unet"], nchw_to_nhwc(reference["chk_x"]), reference["chk_t"],
                              reference["chk_context"])
    return np.moveaxis(np.asarray(out), -1, 1)


def test_config_is_read_from_the_reference_yaml(loaded):
    config, variables = loaded
    assert set(variables) == {"first_stage", "unet", "cond_stage"}
    assert config.model.first_stage.kind == "autoencoder_kl"
    assert config.model.unet.params.context_dim == 64
    assert config.model.cond_stage.kind == "clip_text" and config.model.cond_stage.params.hidden_size == 64
    assert config.model.diffusion.scale_factor == pytest.approx(0.18215)
    assert config.model.diffusion.conditioning_key == "crossattn"


def test_unet_main_weights_match_reference(loaded, reference):
    config, variables = loaded
    assert_matches_reference(_eps(config, variables, reference), reference["chk_eps_main"], "chk_eps_main")


def test_unet_ema_weights_match_reference(compvis_fixtures, reference):
    config, variables = compvis.load_checkpoint(compvis_fixtures / "full_ckpt.safetensors",
                                                compvis_fixtures / "full_ckpt.yaml", use_ema=True)
    eps = _eps(config, variables, reference)
    assert_matches_reference(eps, reference["chk_eps_ema"], "chk_eps_ema")
    assert np.abs(eps - reference["chk_eps_main"]).max() > 0.1  # really the other set of weights


def test_first_stage_and_text_encoder_match_reference(loaded, reference):
    config, variables = loaded
    autoencoder = components.build(config.model.first_stage.to_dict())
    z = nchw_to_nhwc(reference["chk_z"]) / config.model.diffusion.scale_factor
    decoded = autoencoder.apply(variables["first_stage"], z, method="decode")
    assert_matches_reference(np.moveaxis(np.asarray(decoded), -1, 1), reference["chk_decode_first_stage"],
                             "chk_decode_first_stage")
    text_encoder = components.build(config.model.cond_stage.to_dict())
    hidden = text_encoder.apply(variables["cond_stage"], reference["chk_clip_input_ids"])
    assert_matches_reference(hidden, reference["chk_clip_last_hidden_state"], "chk_clip_last_hidden_state")


def test_safetensors_and_ckpt_load_the_same_weights(compvis_fixtures):
    # The pickled format is checked on the small first-stage checkpoint (a Lightning .ckpt of VQModel).
    _, from_ckpt = compvis.load_checkpoint(compvis_fixtures / "ae_vq.ckpt", compvis_fixtures / "ae_vq.yaml")
    _, from_safetensors = compvis.load_checkpoint(compvis_fixtures / "ae_vq.safetensors",
                                                  compvis_fixtures / "ae_vq.yaml")
    jax.tree.map(np.testing.assert_array_equal, from_ckpt, from_safetensors)


def test_round_trip_is_exact_and_the_reference_keys_are_kept(loaded, compvis_fixtures, tmp_path):
    config, variables = loaded
    path = tmp_path / "model.safetensors"
    compvis.save_checkpoint(path, config, variables)
    written = load_file(path)
    original = load_file(compvis_fixtures / "full_ckpt.safetensors")
    not_written = {k for k in set(original) - set(written) if not k.startswith("model_ema.")}
    assert not_written == {"cond_stage_model.transformer.text_model.embeddings.position_ids"}
    for key, value in written.items():
        np.testing.assert_array_equal(value, original[key], err_msg=key)
    config_again, variables_again = compvis.load_checkpoint(path)  # finds model.yaml beside it
    assert config_again.model.to_dict() == config.model.to_dict()
    jax.tree.map(np.testing.assert_array_equal, variables_again, variables)


def test_ema_is_written_as_the_reference_lit_ema_stores_it(loaded, compvis_fixtures, tmp_path):
    """With `ema`, the export holds the reference's `model_ema.*` keys, dtypes and values exactly."""
    config, variables = loaded
    _, ema = compvis.load_checkpoint(compvis_fixtures / "full_ckpt.safetensors", compvis_fixtures / "full_ckpt.yaml",
                                     use_ema=True)
    original = load_file(compvis_fixtures / "full_ckpt.safetensors")
    path = tmp_path / "model.safetensors"
    compvis.save_checkpoint(path, config, variables, ema=ema["unet"],
                            ema_num_updates=int(original["model_ema.num_updates"]))
    written = load_file(path)
    assert set(original) - set(written) == {"cond_stage_model.transformer.text_model.embeddings.position_ids"}
    assert set(written) <= set(original)
    for key, value in written.items():
        assert value.dtype == original[key].dtype, key
        np.testing.assert_array_equal(value, original[key], err_msg=key)
    _, ema_again = compvis.load_checkpoint(path, use_ema=True)
    jax.tree.map(np.testing.assert_array_equal, ema_again["unet"], ema["unet"])


@pytest.mark.parametrize("prefix", ["cond_stage_model.transformer.text_model.", "cond_stage_model.transformer.",
                                    "text_model.", ""])
def test_clip_keys_with_or_without_prefix_and_text_model_level(compvis_fixtures, prefix):
    import json

    stored = case_weights(compvis_fixtures, "clip_text")
    bare = {k.removeprefix("cond_stage_model.transformer.text_model."): v for k, v in stored.items()}
    params = json.loads((compvis_fixtures / "clip_text_config.json").read_text())
    module, variables = compvis.convert_module("clip_text", {prefix + k: v for k, v in bare.items()}, params)
    reference = np.load(compvis_fixtures / "clip_text.npz")
    assert_matches_reference(module.apply(variables, reference["input_ids"]), reference["last_hidden_state"])


# --- bad input: each fails with a message naming what is wrong ---

def test_truncated_files_fail_clearly(compvis_fixtures, tmp_path):
    for name, config in (("full_ckpt.safetensors", "full_ckpt.yaml"), ("ae_vq.ckpt", "ae_vq.yaml")):
        data = (compvis_fixtures / name).read_bytes()
        truncated = tmp_path / name
        truncated.write_bytes(data[: len(data) // 2])
        with pytest.raises(CheckpointFileError, match="truncated or corrupt"):
            compvis.load_checkpoint(truncated, compvis_fixtures / config)


def test_checkpoint_of_another_model_fails_clearly(compvis_fixtures):
    import yaml

    vq_weights = load_file(compvis_fixtures / "ae_vq.safetensors")
    kl_params = yaml.safe_load((compvis_fixtures / "ae_kl.yaml").read_text())["model"]["params"]
    with pytest.raises(CheckpointMismatchError, match="another model"):
        compvis.convert_module("autoencoder_kl", vq_weights, kl_params)
    unet_params = yaml.safe_load((compvis_fixtures / "unet_sd2.yaml").read_text())["model"]["params"]
    with pytest.raises(CheckpointMismatchError, match="wrong shape"):
        compvis.convert_module("unet", case_weights(compvis_fixtures, "unet_crossattn"), unet_params)


def test_missing_and_misshapen_keys_are_named(compvis_fixtures):
    import yaml

    weights = case_weights(compvis_fixtures, "unet_crossattn")
    params = yaml.safe_load((compvis_fixtures / "unet_crossattn.yaml").read_text())["model"]["params"]
    missing = dict(weights)
    del missing["middle_block.1.proj_in.weight"]
    with pytest.raises(CheckpointMismatchError, match=r"1 missing: middle_block\.1\.proj_in\.weight"):
        compvis.convert_module("unet", missing, params)
    misshapen = dict(weights, **{"out.2.weight": np.zeros((4, 32, 1, 1), np.float32)})
    with pytest.raises(CheckpointMismatchError,
                       match=r"out\.2\.weight: .* has shape \(4, 32, 1, 1\), the model expects \(4, 32, 3, 3\)"):
        compvis.convert_module("unet", misshapen, params)
    extra = dict(weights, **{"input_blocks.99.0.weight": np.zeros(3, np.float32)})
    with pytest.raises(CheckpointMismatchError, match=r"1 unexpected: input_blocks\.99\.0\.weight"):
        compvis.convert_module("unet", extra, params)


def test_ema_requested_from_a_checkpoint_without_ema(compvis_fixtures, tmp_path):
    weights = {k: v for k, v in load_file(compvis_fixtures / "full_ckpt.safetensors").items()
               if not k.startswith("model_ema.")}
    from ldm_jax.convert.checkpoint_files import write_safetensors

    write_safetensors(weights, tmp_path / "no_ema.safetensors")
    with pytest.raises(CheckpointMismatchError, match="no EMA weights"):
        compvis.load_checkpoint(tmp_path / "no_ema.safetensors", compvis_fixtures / "full_ckpt.yaml", use_ema=True)


def test_wrong_schedule_in_config_is_detected(compvis_fixtures, tmp_path):
    text = (compvis_fixtures / "full_ckpt.yaml").read_text().replace("linear_end: 0.012", "linear_end: 0.02")
    (tmp_path / "other.yaml").write_text(text)
    shutil.copy(compvis_fixtures / "clip_text_config.json", tmp_path)
    with pytest.raises(CheckpointMismatchError, match="betas"):
        compvis.load_checkpoint(compvis_fixtures / "full_ckpt.safetensors", tmp_path / "other.yaml")


def test_ckpt_without_torch_says_how_to_install(compvis_fixtures, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(ImportError, match=r"pip install 'ldm-jax\[torch\]'"):
        compvis.load_checkpoint(compvis_fixtures / "ae_vq.ckpt", compvis_fixtures / "ae_vq.yaml")


def test_missing_config_and_unknown_kind(compvis_fixtures, tmp_path):
    shutil.copy(compvis_fixtures / "full_ckpt.safetensors", tmp_path / "model.safetensors")
    with pytest.raises(FileNotFoundError, match="config_path="):
        compvis.load_checkpoint(tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match="unknown kind 'transformer'"):
        compvis.convert_module("transformer", {}, {})


def test_scale_factor_buffer_of_scale_by_std_checkpoints_is_read(compvis_fixtures, tmp_path):
    from ldm_jax.convert.checkpoint_files import write_safetensors

    weights = load_file(compvis_fixtures / "full_ckpt.safetensors")
    write_safetensors(dict(weights, scale_factor=np.asarray(0.5, np.float32)), tmp_path / "m.safetensors")
    text = (compvis_fixtures / "full_ckpt.yaml").read_text().replace("scale_factor: 0.18215", "scale_by_std: true")
    (tmp_path / "m.yaml").write_text(text)
    shutil.copy(compvis_fixtures / "clip_text_config.json", tmp_path)
    config, variables = compvis.load_checkpoint(tmp_path / "m.safetensors")
    assert config.model.diffusion.scale_factor == 0.5 and config.model.diffusion.scale_by_std
    compvis.save_checkpoint(tmp_path / "again.safetensors", config, variables)
    assert np.ravel(load_file(tmp_path / "again.safetensors")["scale_factor"]) == [0.5]
