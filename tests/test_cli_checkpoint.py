"""`ldm-jax convert` and `ldm-jax check` end to end on the reference checkpoints (tests/reference/compvis)."""
import shutil

import numpy as np
from safetensors.numpy import load_file

from ldm_jax import cli


def test_convert_then_check_a_stable_diffusion_style_checkpoint(compvis_fixtures, tmp_path, capsys):
    source = compvis_fixtures / "full_ckpt.safetensors"
    out = tmp_path / "converted.safetensors"
    assert cli.main(["convert", str(source), "--config", str(compvis_fixtures / "full_ckpt.yaml"), "--ema",
                     "--out", str(out)]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    assert out.with_suffix(".yaml").exists()  # the YAML goes beside it: `check` needs no --config
    original, converted = load_file(source), load_file(out)
    # --ema: the UNet of the written file is the EMA copy of the original (LitEma's key names).
    unet = [key for key in converted if key.startswith("model.diffusion_model.")]
    assert unet
    for key in unet:
        ema_key = "model_ema." + key[len("model."):].replace(".", "")
        np.testing.assert_array_equal(converted[key], original[ema_key], err_msg=key)
    first_stage = [key for key in converted if key.startswith("first_stage_model.")]
    assert first_stage and all(np.array_equal(converted[key], original[key]) for key in first_stage)

    assert cli.main(["check", str(out)]) == 0
    report = capsys.readouterr().out
    for component in ("first_stage", "unet"):
        assert component in report, report


def test_convert_reads_a_pickled_ckpt(compvis_fixtures, tmp_path, capsys):
    checkpoint = tmp_path / "ae.ckpt"  # `convert` finds ae.yaml beside it
    shutil.copy(compvis_fixtures / "ae_vq.ckpt", checkpoint)
    shutil.copy(compvis_fixtures / "ae_vq.yaml", tmp_path / "ae.yaml")
    out = tmp_path / "ae.safetensors"
    assert cli.main(["convert", str(checkpoint), "--out", str(out)]) == 0
    written, reference = load_file(out), load_file(compvis_fixtures / "ae_vq.safetensors")
    # The autoencoder's own keys, under the full model's prefix (as an LDM checkpoint holds it).
    assert sorted(written) == sorted(f"first_stage_model.{key}" for key in reference)
    for key, value in reference.items():
        np.testing.assert_array_equal(written[f"first_stage_model.{key}"], value, err_msg=key)


def test_convert_and_check_name_a_missing_file(tmp_path, capsys):
    for command in (["convert", str(tmp_path / "nope.ckpt"), "--out", str(tmp_path / "x.safetensors")],
                    ["check", str(tmp_path / "nope.safetensors")]):
        assert cli.main(command) == 1
        error = capsys.readouterr().err.strip()
        assert error.startswith(f"ldm-jax {command[0]}: error: ") and "nope" in error and "\n" not in error
