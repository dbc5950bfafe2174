"""Whole tasks against the original code on small random-weight models (tests/reference/tasks/,
written by tests/reference/generate_task_fixtures.py): guided DDIM of an SD 2 v-prediction model,
class-conditional guided DDIM against the null class (EMA weights), and the original code loading a
checkpoint our export wrote (main + EMA weights).

Bound: max|ours - ref| <= 1e-4 x max(1, max|ref|) per array, the module fixtures' tolerance.
"""
import json

import jax
import numpy as np
import pytest
from safetensors.numpy import load_file

from ldm_jax import LatentDiffusionPipeline
from ldm_jax.convert import compvis
from ldm_jax.diffusion.sampling import LatentSampler
from tests.conftest import assert_matches_reference
from tests.reference import fixture, fixture_path


def nhwc(a):
    return np.moveaxis(np.asarray(a), -3, -1)  # (..., C, H, W) -> (..., H, W, C)


def check_ddim(pipe, ref, **conditioning):
    latents, inter = pipe.sample_latents(nhwc(ref["x_T"]), sampler="ddim", steps=10, eta=0.0,
                                         guidance_scale=float(ref["guidance_scale"]), return_intermediates=True,
                                         progress=False, **conditioning)
    for name, ours in (("samples", latents), ("x_inter", inter["x_inter"]), ("pred_x0", inter["pred_x0"])):
        assert_matches_reference(ours, nhwc(ref[name]), name)


def test_sd2_v_prediction_guided_ddim():
    ref = fixture("tasks/sd2_v_ddim.npz")
    pipe = LatentDiffusionPipeline.from_checkpoint(fixture_path("tasks/sd2_v_ddim.safetensors"),
                                                   fixture_path("tasks/sd2_v_ddim.yaml"))
    assert isinstance(pipe.sampler, LatentSampler) and pipe.sampler.parameterization == "v"
    check_ddim(pipe, ref, context=ref["cond"], uncond_context=ref["uncond"])


def test_class_conditional_guided_ddim_against_the_null_class_with_ema_weights():
    ref = fixture("tasks/cin_ddim.npz")
    pipe = LatentDiffusionPipeline.from_checkpoint(fixture_path("tasks/export.safetensors"), use_ema=True)
    np.testing.assert_array_equal(pipe.unconditional_class_labels(2), [10, 10])  # the scripts' class 1000
    assert_matches_reference(pipe.encode_class(ref["class_labels"]), ref["cond"], "cond")
    assert_matches_reference(pipe.encode_class(pipe.unconditional_class_labels(2)), ref["uncond"], "uncond")
    check_ddim(pipe, ref, class_labels=ref["class_labels"])


@pytest.mark.parametrize("use_ema", [False, True])
def test_reference_loads_our_export_and_gives_our_eps(use_ema):
    ref = fixture("tasks/export.npz")
    path = fixture_path("tasks/export.safetensors")
    config, variables = compvis.load_checkpoint(path, use_ema=use_ema)
    pipe = LatentDiffusionPipeline(config, variables)
    context = pipe.encode_class(ref["class_labels"])
    eps = jax.jit(pipe.ldm.apply_unet)(variables["unet"], nhwc(ref["x"]), ref["t"], {"context": context})
    assert_matches_reference(eps, nhwc(ref["eps_ema" if use_ema else "eps_main"]), "eps")


def safetensors_parts(path):
    """(header, data bytes) of a .safetensors file: the header as a dict, since safetensors writes the
    `__metadata__` entries in hash order (its bytes vary from run to run)."""
    raw = path.read_bytes()
    size = int.from_bytes(raw[:8], "little")
    return json.loads(raw[8:8 + size]), raw[8 + size:]


def test_export_is_reproduced_byte_for_byte(tmp_path):
    """The committed export (which the original code loaded strictly) is what our code writes today."""
    path = fixture_path("tasks/export.safetensors")
    ref = fixture("tasks/export.npz")
    config, variables = compvis.load_checkpoint(path)
    _, ema = compvis.load_checkpoint(path, use_ema=True)
    again = tmp_path / "export.safetensors"
    compvis.save_checkpoint(again, config, variables, ema=ema["unet"], ema_num_updates=int(ref["num_updates"]))
    assert safetensors_parts(again) == safetensors_parts(path)
    assert again.with_suffix(".yaml").read_text() == path.with_suffix(".yaml").read_text()
    written = load_file(again)
    assert written["model_ema.num_updates"].dtype == np.int32 and written["model_ema.num_updates"] == 4321
    np.testing.assert_array_equal(written["model_ema.decay"], ref["decay"])
    ema_keys = {k for k in written if k.startswith("model_ema.")} - {"model_ema.decay", "model_ema.num_updates"}
    assert {k.replace("model_ema.", "model.").replace(".", "") for k in ema_keys} == {
        k.replace(".", "") for k in written if k.startswith("model.diffusion_model.")}


@pytest.fixture(scope="module")
def inpainting_pipe(tmp_path_factory):
    """The 9-channel SD 2 inpainting model, assembled as the generator did: sd2_v_ddim's weights with the
    inpainting input conv, and the module fixtures' autoencoder."""
    from ldm_jax.convert.checkpoint_files import write_safetensors

    state = load_file(fixture_path("tasks/sd2_v_ddim.safetensors"))
    state.update(load_file(fixture_path("tasks/sd2_inpaint_conv_in.safetensors")))
    state.update({k: v for k, v in load_file(fixture_path("compvis/full_ckpt.safetensors")).items()
                  if k.startswith("first_stage_model.")})
    path = tmp_path_factory.mktemp("inpaint") / "sd2_inpaint.safetensors"
    write_safetensors(state, path)
    return LatentDiffusionPipeline.from_checkpoint(path, fixture_path("tasks/sd2_inpaint.yaml"))


def test_sd_inpainting_concat_and_guided_ddim(inpainting_pipe):
    from ldm_jax.inference.inputs import sd_inpainting_concat

    pipe, ref = inpainting_pipe, fixture("tasks/sd2_inpaint_ddim.npz")
    assert pipe.traits.is_sd_inpainting and pipe.traits.concat_channels == 5
    concat = np.asarray(sd_inpainting_concat(pipe, nhwc(ref["image"]), nhwc(ref["mask"])))
    np.testing.assert_array_equal(concat[..., :1], nhwc(ref["c_concat"][:, :1]))  # the mask, nearest
    # Ours encodes the posterior mode; the reference scripts draw a posterior sample (recorded in c_concat).
    assert_matches_reference(concat[..., 1:], nhwc(ref["masked_latents_mode"]), "masked_latents_mode")
    check_ddim(pipe, ref, context=ref["cond"], uncond_context=ref["uncond"], concat=nhwc(ref["c_concat"]))
    latents = pipe.sample_latents(nhwc(ref["x_T"]), context=ref["cond"], uncond_context=ref["uncond"],
                                  concat=nhwc(ref["c_concat"]), sampler="ddim", steps=10, eta=0.0,
                                  guidance_scale=float(ref["guidance_scale"]), progress=False)
    np.testing.assert_allclose(pipe.decode(latents), nhwc(ref["decoded"]), atol=1e-3, rtol=0)
