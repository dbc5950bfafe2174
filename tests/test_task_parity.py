"""Whole tasks against the original code on small random-weight models (tests/reference/tasks/,
written by tests/reference/generate_task_fixtures.py): guided DDIM of an SD 2 v-prediction model,
class-conditional guided DDIM against the null class (EMA weights), the original code loading a
checkpoint our export wrote (main + EMA weights), SD 2 inpainting, and latent-diffusion's concat models
(super-resolution, semantic synthesis, inpainting; tests/reference/generate_concat_task_fixtures.py).

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
from tests.conftest import assert_matches_reference, case_weights
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


def assembled_pipe(folder, yaml, *parts):
    """A checkpoint assembled as the generators did: state dicts merged in order (later keys win), with
    the reference YAML `tasks/<yaml>`."""
    from ldm_jax.convert.checkpoint_files import write_safetensors

    state = {}
    for part in parts:
        state.update(part)
    path = folder / "model.safetensors"
    write_safetensors(state, path)
    return LatentDiffusionPipeline.from_checkpoint(path, fixture_path(f"tasks/{yaml}"))


def first_stage(case):
    """A module fixture's autoencoder weights as `first_stage_model.*` (the task fixtures reuse them)."""
    return {f"first_stage_model.{k}": v for k, v in case_weights(fixture_path("compvis"), case).items()}


@pytest.fixture(scope="module")
def inpainting_pipe(tmp_path_factory):
    """The 9-channel SD 2 inpainting model: sd2_v_ddim's weights with the inpainting input conv, and the
    module fixtures' KL autoencoder."""
    return assembled_pipe(tmp_path_factory.mktemp("inpaint"), "sd2_inpaint.yaml",
                          load_file(fixture_path("tasks/sd2_v_ddim.safetensors")),
                          load_file(fixture_path("tasks/sd2_inpaint_conv_in.safetensors")), first_stage("ae_kl"))


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


# -- latent-diffusion's concat models: super-resolution, semantic synthesis, inpainting -----------------
# (tests/reference/generate_concat_task_fixtures.py: one small UNet shared by the three, float16 on disk,
# the module fixtures' VQ-f4 autoencoder; DDIM 5 steps, unguided.)

def concat_pipe(tmp_path, yaml, *extra):
    """The shared UNet, `extra` weight files of `tasks/` over it, and the module fixtures' VQ-f4 autoencoder."""
    return assembled_pipe(tmp_path, yaml, load_file(fixture_path("tasks/ldm_concat_unet.safetensors")),
                          *(load_file(fixture_path(f"tasks/{name}")) for name in extra), first_stage("ae_vq"))


def check_concat_ddim(pipe, ref, concat):
    """Our DDIM (the reference's eta and, for eta > 0, its noises) from x_T, every step when logged."""
    eta = float(ref["eta"])
    latents, inter = pipe.sample_latents(nhwc(ref["x_T"]), concat=concat, sampler="ddim", steps=5, eta=eta,
                                         noise=nhwc(ref["noises"]) if eta > 0 else None, return_intermediates=True,
                                         progress=False)
    assert_matches_reference(latents, nhwc(ref["samples"]), "samples")
    for name in ("x_inter", "pred_x0"):
        if name in ref:
            assert_matches_reference(inter[name], nhwc(ref[name]), name)
    decoded = pipe.decode(latents)
    np.testing.assert_allclose(decoded, nhwc(ref["decoded"]), atol=1e-3, rtol=0)
    return latents, decoded


@pytest.mark.parametrize("case", ["ldm_sr_ddim", "ldm_sr_large_ddim"])
def test_ldm_super_resolution_concat_ddim_eta1(tmp_path, case):
    """bsr_sr as notebook_helpers samples it (eta 1); the larger case runs the UNet trained on 8x8 latents
    convolutionally on 16x16 (the notebook's path for outputs below 128 px, without split_input_params)."""
    from ldm_jax.inference import tasks

    pipe, ref = concat_pipe(tmp_path, "ldm_sr.yaml"), fixture(f"tasks/{case}.npz")
    # The YAML gives only `concat_mode: true` (no conditioning_key): the reference's default is concat.
    assert pipe.traits.conditioning_key == "concat" and pipe.traits.is_super_resolution
    low_res = nhwc(ref["low_res"])
    inputs = tasks.prepare(pipe, low_res=low_res, batch_size=len(low_res))
    assert inputs.latent_shape == nhwc(ref["x_T"]).shape
    np.testing.assert_array_equal(inputs.concat, nhwc(ref["cond"]))  # the low-res image as is (identity)
    latents, _ = check_concat_ddim(pipe, ref, inputs.concat)
    if "decoded_noquant" in ref:  # force_not_quantize=True
        first_stage = pipe.ldm.first_stage.module
        noquant = first_stage.apply(pipe.variables["first_stage"], latents / pipe.traits.scale_factor, True,
                                    method=first_stage.decode)
        np.testing.assert_allclose(noquant, nhwc(ref["decoded_noquant"]), atol=1e-3, rtol=0)


def test_ldm_semantic_synthesis_spatial_rescaler_and_ddim(tmp_path):
    from ldm_jax import images as image_io
    from ldm_jax.inference import inputs as task_inputs
    from ldm_jax.inference import tasks

    pipe = concat_pipe(tmp_path, "ldm_semantic.yaml", "ldm_semantic_cond_stage.safetensors")
    ref = fixture("tasks/ldm_semantic_ddim.npz")
    assert pipe.traits.conditioning_key == "concat" and pipe.traits.is_semantic
    onehot = np.concatenate([image_io.segmentation_to_onehot(labels, 5) for labels in ref["labels"]])
    concat = task_inputs.semantic_concat(pipe, onehot, 8, 8)
    assert_matches_reference(concat, nhwc(ref["cond"]), "cond")
    first = tasks.prepare(pipe, segmentation=ref["labels"][0])  # the user-facing path, one map
    assert first.latent_shape == (1, 8, 8, 3)
    assert_matches_reference(first.concat, nhwc(ref["cond"][:1]), "prepare concat")
    check_concat_ddim(pipe, ref, nhwc(ref["cond"]))


def test_ldm_inpainting_concat_ddim_and_paste_back(tmp_path):
    from ldm_jax.inference import tasks
    from ldm_jax.inference.inputs import ldm_inpainting_concat

    pipe = concat_pipe(tmp_path, "ldm_inpaint.yaml", "ldm_inpaint_conv_in.safetensors")
    ref = fixture("tasks/ldm_inpaint_ddim.npz")
    assert pipe.traits.conditioning_key == "concat" and pipe.traits.is_ldm_inpainting
    image = nhwc(ref["image01"]) * 2 - 1
    mask = (nhwc(ref["mask01"]) >= 0.5).astype(np.float32)
    concat = ldm_inpainting_concat(pipe, image, mask)
    assert_matches_reference(concat, nhwc(ref["c_concat"]), "c_concat")
    first = tasks.prepare(pipe, image=image[:1], mask=nhwc(ref["mask01"])[0])  # a grey-level mask image
    assert_matches_reference(first.concat, nhwc(ref["c_concat"][:1]), "prepare concat")
    np.testing.assert_array_equal(first.pixel_mask, mask[:1])
    _, decoded = check_concat_ddim(pipe, ref, nhwc(ref["c_concat"]))
    # LatentDiffusionPipeline.__call__'s paste-back of the known pixels, in [-1, 1]
    inpainted = (1.0 - mask) * image + mask * np.clip(decoded, -1, 1)
    np.testing.assert_allclose((inpainted + 1) / 2, nhwc(ref["inpainted"]), atol=1e-3, rtol=0)
