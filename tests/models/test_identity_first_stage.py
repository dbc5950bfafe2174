"""The identity first stage: a pixel-space diffusion model (the paper's pixel-DM baseline) that trains
with the LDM stage, exports as a CompVis checkpoint, loads back and samples with the pipeline.

One tiny class-conditional model (UNet 32 channels on 16x16x3 images, a ClassEmbedder) serves every
test; its state is built and stepped once per module.
"""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy
import yaml

from ldm_jax import zoo
from ldm_jax.ldm import ModelTraits
from ldm_jax.convert import compvis, reference_config
from ldm_jax.models import autoencoder, components
from ldm_jax import LatentDiffusionPipeline
from ldm_jax.training import loop
from ldm_jax.training.ldm_stage import LatentDiffusionStage, default_ldm_train_config

BATCH, IMAGE, CONTEXT, CLASSES = 2, 16, 32, 5


def pixel_config():
    """A class-conditional pixel-space "LDM": identity first stage, UNet on the 16x16x3 images."""
    unet = zoo.unet(image_size=IMAGE, in_channels=3, out_channels=3, model_channels=32, attention_resolutions=[2],
                    num_res_blocks=1, channel_mult=[1, 2], num_head_channels=16, use_spatial_transformer=True,
                    transformer_depth=1, context_dim=CONTEXT)
    model = zoo.latent_diffusion(zoo.identity_first_stage(), unet, zoo.released("", "", "pixel-space baseline"),
                                 cond_stage=zoo.class_embedder(CONTEXT, CLASSES + 1, key="class_label"),
                                 image_size=IMAGE, channels=3, conditioning_key="crossattn", scale_by_std=True)
    config = default_ldm_train_config()
    config.model = model.model
    config.optimizer.learning_rate = 1e-3
    config.train.log_sample_steps = 2
    return config


def make_batch(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {"image": rng.uniform(-1, 1, (BATCH, IMAGE, IMAGE, 3)).astype(np.float32),
            "label": np.array([1, 3], np.int32)}


@functools.lru_cache(maxsize=None)
def trained():
    """(stage, state before, state after one step, metrics, batch), computed once."""
    stage = LatentDiffusionStage.from_config(pixel_config())
    batch = make_batch()
    state = nn.meta.unbox(jax.jit(stage.init_state)(jax.random.key(0), batch))
    new_state, metrics = jax.jit(stage.train_step)(state, batch, jax.random.key(1))
    return stage, state, new_state, metrics, batch


# -- the module ----------------------------------------------------------------------------------------------

def test_encode_and_decode_are_the_identity_without_parameters():
    module = components.build(zoo.identity_first_stage())
    assert isinstance(module, autoencoder.IdentityFirstStage)
    x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 6, 10, 3)), jnp.float32)
    variables = module.init(jax.random.key(0), *components.example_inputs("identity", module))
    assert variables == {}
    for method in ("encode", "decode", None):
        out = module.apply({"params": {}}, x, method=method) if method else module.apply({}, x)
        np.testing.assert_array_equal(np.asarray(out), np.asarray(x))
    assert components.count_params(zoo.identity_first_stage()) == 0


def test_builder_takes_the_reference_params_and_names_unknown_ones():
    assert isinstance(autoencoder.identity_first_stage_from_reference({"vq_interface": False}, dtype=jnp.bfloat16),
                      autoencoder.IdentityFirstStage)
    with pytest.raises(ValueError, match=r"identity: unknown IdentityFirstStage param\(s\) \['embed_dim'\]"):
        components.build({"kind": "identity", "params": {"embed_dim": 3}})
    with pytest.raises(TypeError, match=r"unknown IdentityFirstStage option\(s\) \['channels'\]"):
        autoencoder.identity_first_stage_from_reference({}, channels=3)


def test_reference_yaml_target_round_trips():
    config = pixel_config()
    document = reference_config.to_reference_document(config)
    first_stage = document["model"]["params"]["first_stage_config"]
    assert first_stage == {"target": "ldm.models.autoencoder.IdentityFirstStage", "params": {}}
    read = reference_config.config_from_reference(yaml.safe_load(yaml.safe_dump(document)))
    assert read.model.first_stage.to_dict() == {"kind": "identity", "params": {}}
    alone = reference_config.config_from_reference(
        {"model": {"target": "ldm.models.autoencoder.IdentityFirstStage", "params": {"vq_interface": False}}})
    assert alone.model.first_stage.kind == "identity"


def test_only_first_stage_keys_of_a_checkpoint_are_the_identitys():
    tensor = np.zeros((2,), np.float32)
    assert compvis.component_state_dict("identity", {"model.diffusion_model.out.weight": tensor}) == {}
    # An autoencoder's tensors are its own, so loading them into the identity fails as unexpected.
    held = compvis.component_state_dict("identity", {"first_stage_model.encoder.conv_in.bias": tensor})
    assert list(held) == ["encoder.conv_in.bias"]
    with pytest.raises(compvis.CheckpointMismatchError, match="1 unexpected: encoder.conv_in.bias"):
        compvis.convert_module("identity", {"first_stage_model.encoder.conv_in.bias": tensor}, {})


def test_model_traits_see_a_factor_of_one():
    traits = ModelTraits.from_config(pixel_config())
    assert traits.factor == 1 and traits.latent_size == IMAGE and traits.pixel_multiple == 2


# -- training, export, loading, sampling ---------------------------------------------------------------------

def test_a_train_step_diffuses_the_pixels_with_scale_by_std():
    stage, state, new_state, metrics, batch = trained()
    assert state.frozen["first_stage"] == {"params": {}}
    latents = jax.jit(stage.latents)(state.frozen, batch, jax.random.key(2))
    np.testing.assert_array_equal(np.asarray(latents), batch["image"])  # no sampling, no scaling
    assert np.isfinite(float(metrics["loss"])) and float(metrics["loss"]) > 0
    expected = 1.0 / batch["image"].astype(np.float64).std(ddof=1)  # scale_by_std on the pixels
    assert float(new_state.extras["scale_factor"]) == pytest.approx(expected, rel=1e-5)
    assert int(new_state.step) == 1 and set(new_state.params) == {"unet"} and new_state.ema_params is not None


def test_checkpoint_round_trips_and_samples_images_of_the_pixel_size(tmp_path):
    stage, _, state, _, _ = trained()
    path = loop.export_model(stage, state, stage.config, tmp_path)  # compvis.save_checkpoint, EMA weights
    stored = safetensors.numpy.load_file(str(path))
    assert not any(key.startswith("first_stage_model.") for key in stored)
    assert yaml.safe_load(path.with_suffix(".yaml").read_text())["model"]["params"]["first_stage_config"][
        "target"] == "ldm.models.autoencoder.IdentityFirstStage"

    config, variables = compvis.load_checkpoint(path)
    assert config.model.first_stage.to_dict() == {"kind": "identity", "params": {}}
    assert variables["first_stage"] == {"params": {}}
    assert float(config.model.diffusion.scale_factor) == pytest.approx(float(state.extras["scale_factor"]))
    for a, b in zip(jax.tree.leaves(variables["unet"]), jax.tree.leaves(state.ema_params["unet"])):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # The loaded sections replace a state's, as `pretrained.model` does.
    reloaded = stage.with_variables(state, variables, float(config.model.diffusion.scale_factor))
    assert reloaded.frozen["first_stage"] == {"params": {}}

    pipe = LatentDiffusionPipeline.from_checkpoint(path)
    images, latents = pipe(class_label=[0, 4], num_steps=4, guidance_scale=2.0, seed=1,
                                     progress=False, return_latents=True)
    assert latents.shape == (2, IMAGE, IMAGE, 3) and np.all(np.isfinite(np.asarray(latents)))
    assert len(images) == 2 and all(image.size == (IMAGE, IMAGE) for image in images)
    np.testing.assert_allclose(np.asarray(pipe.decode(latents)), np.asarray(latents) / pipe.ldm.scale_factor,
                               rtol=1e-6)
    pixels = np.asarray(make_batch()["image"])
    np.testing.assert_allclose(np.asarray(pipe.encode(pixels)), pipe.ldm.scale_factor * pixels, rtol=1e-6)
