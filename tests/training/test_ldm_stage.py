"""Stage 2 (latent diffusion) training: every conditioning mode, targets, scale_by_std, dropout, caches, EMA.

Tiny models (UNet 32 channels on 8x8 latents, a KL first stage with f = 2, one-layer text
encoders) with random weights (`tests.conftest.random_params`, no `init` to compile). Each distinct
program is compiled once per module with XLA's cheapest optimisation level: compiling is what
costs time on the CPU.
"""
import functools
import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from jax.sharding import PartitionSpec

from ldm_jax import zoo
from ldm_jax.convert import compvis
from ldm_jax.models import components
from ldm_jax.training.ema import ema_decay
from ldm_jax.training import ldm_stage
from ldm_jax.training.ldm_conditioning import unconditional_tokens
from ldm_jax.training.ldm_stage import LatentDiffusionStage, default_ldm_train_config
from tests.conftest import random_params

FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}
BATCH, IMAGE, LATENT, CONTEXT = 2, 16, 8, 32
POSTERIOR = 0  # ldm_stage's stream for the posterior sample


def compiled(fn, *args):
    return jax.jit(fn).lower(*args).compile(compiler_options=FAST_COMPILE)


# -- tiny components -------------------------------------------------------------------------------------

def kl_first_stage():
    return {"kind": "autoencoder_kl", "params": {"embed_dim": 4, "ddconfig": {
        "double_z": True, "z_channels": 4, "resolution": IMAGE, "in_channels": 3, "out_ch": 3, "ch": 32,
        "ch_mult": [1, 1], "num_res_blocks": 1, "attn_resolutions": [], "dropout": 0.0}}}


def tiny_unet(in_channels=4, context_dim=None, **extra):
    params = dict(image_size=LATENT, in_channels=in_channels, out_channels=4, model_channels=32,
                  attention_resolutions=[1] if context_dim else [], num_res_blocks=1, channel_mult=[1],
                  num_head_channels=16)
    if context_dim:
        params.update(use_spatial_transformer=True, context_dim=context_dim, transformer_depth=1)
    return zoo.unet(**{**params, **extra})


def tiny_clip():
    return {"kind": "clip_text", "params": {
        "model_type": "clip_text_model", "hidden_size": CONTEXT, "intermediate_size": 64, "num_hidden_layers": 1,
        "num_attention_heads": 2, "max_position_embeddings": 8, "vocab_size": 100, "hidden_act": "quick_gelu",
        "layer_norm_eps": 1e-5}}


def _ldm(unet, cond_stage=None, **settings):
    return zoo.latent_diffusion(kl_first_stage(), unet, {}, cond_stage=cond_stage, image_size=LATENT, **settings)


MODES = {
    "unconditional": lambda: _ldm(tiny_unet(), scale_by_std=True),
    "class": lambda: _ldm(tiny_unet(context_dim=CONTEXT), zoo.class_embedder(CONTEXT, 11),
                          conditioning_key="crossattn", cond_stage_trainable=True),
    "bert_text": lambda: _ldm(tiny_unet(context_dim=CONTEXT), zoo.bert_embedder(CONTEXT, 1, vocab_size=200,
                                                                                max_seq_len=8),
                              conditioning_key="crossattn", cond_stage_trainable=True),
    "clip_text": lambda: _ldm(tiny_unet(context_dim=CONTEXT), tiny_clip(), conditioning_key="crossattn",
                              scale_factor=0.18215),
    "super_resolution": lambda: _ldm(tiny_unet(in_channels=7), conditioning_key="concat",
                                     cond_stage_source="identity"),
    "ldm_inpainting": lambda: _ldm(tiny_unet(in_channels=9), conditioning_key="concat",
                                   cond_stage_source="first_stage"),
    "sd_inpainting": lambda: _ldm(tiny_unet(in_channels=9, context_dim=CONTEXT), tiny_clip(),
                                  conditioning_key="hybrid", scale_factor=0.18215),
    "semantic": lambda: _ldm(tiny_unet(in_channels=7), zoo.spatial_rescaler(1, 5, 3),
                             conditioning_key="concat", cond_stage_trainable=True, loss_type="l1"),
    "adm": lambda: _ldm(tiny_unet(num_classes=10), conditioning_key="adm"),
}
# What each mode trains besides the UNet, and what stays frozen.
TRAINED = {"class": {"cond_stage"}, "bert_text": {"cond_stage"}, "semantic": {"cond_stage"}}
FROZEN = {"clip_text": {"first_stage", "cond_stage"}, "sd_inpainting": {"first_stage", "cond_stage"}}


def make_batch(mode: str, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    image = rng.uniform(-1, 1, (BATCH, IMAGE, IMAGE, 3)).astype(np.float32)
    batch = {"image": image}
    if mode in ("class", "adm"):
        batch["label"] = np.array([1, 7], np.int32)
    if mode in ("bert_text", "clip_text", "sd_inpainting"):
        batch["caption_tokens"] = rng.integers(1, 90, (BATCH, 8)).astype(np.int32)
    if mode == "super_resolution":
        batch["low_res"] = image[:, ::2, ::2]
    if mode in ("ldm_inpainting", "sd_inpainting"):
        mask = np.zeros((BATCH, IMAGE, IMAGE, 1), np.float32)
        mask[:, 4:12, 2:10] = 1.0
        batch["mask"] = mask
        batch["masked_image"] = np.where(mask > 0.5, -1.0 if mode == "ldm_inpainting" else 0.0, image)
    if mode == "semantic":
        batch["segmentation_onehot"] = np.eye(5, dtype=np.float32)[rng.integers(0, 5, (BATCH, IMAGE, IMAGE))]
    return batch


def experiment(model_config, **train):
    config = default_ldm_train_config()
    config.model = model_config.model
    config.optimizer.learning_rate = 1e-3
    config.optimizer.weight_decay = 0.0  # so only parameters with a gradient move
    config.ema.use_ema = True
    config.ema.decay = 0.9
    config.train.log_sample_steps = 2
    config.train.update(train)
    return config


@functools.lru_cache(maxsize=None)
def _abstract_params(component_json: str):
    return components.abstract_params(json.loads(component_json))


def random_variables(config, seed: int = 0) -> dict:
    """Random weights for every section (abstract shapes cached: modes share components)."""
    return {section: {"params": random_params(_abstract_params(json.dumps(config.model[section].to_dict(),
                                                                            sort_keys=True)), seed + i)}
            for i, section in enumerate(("first_stage", "unet", "cond_stage")) if section in config.model}


@functools.lru_cache(maxsize=None)
def setup(mode: str):
    """(stage, state, batch, compiled train_step) of a mode, built and compiled once per module."""
    config = experiment(MODES[mode](), cond_drop_prob=0.5 if mode != "unconditional" else 0.0)
    stage = LatentDiffusionStage.from_config(config)
    state = stage.state_from_variables(random_variables(config))
    batch = make_batch(mode)
    return stage, state, batch, compiled(stage.train_step, state, batch, jax.random.key(0))


def _leaves(tree):
    return jax.tree_util.tree_leaves_with_path(tree)


# -- one step per conditioning mode -------------------------------------------------------------------

@pytest.mark.slow  # one train-step compile per mode: about 5 s each on 2 cores (0.5 s from the compilation cache)
@pytest.mark.parametrize("mode", sorted(set(MODES) - {"adm"}))
def test_one_step_changes_exactly_the_trainable_params(mode):
    stage, state, batch, step = setup(mode)
    new_state, metrics = step(state, batch, jax.random.key(0))
    assert np.isfinite(float(metrics["loss"])) and float(metrics["loss"]) > 0
    assert set(new_state.params) == {"unet"} | TRAINED.get(mode, set())
    assert set(new_state.frozen) == FROZEN.get(mode, {"first_stage"})
    for path, before in _leaves(state.params):
        after = _get(new_state.params, path)
        assert np.any(np.asarray(after) != np.asarray(before)), f"{jax.tree_util.keystr(path)} did not change"
    for path, before in _leaves(state.frozen):
        np.testing.assert_array_equal(np.asarray(_get(new_state.frozen, path)), np.asarray(before),
                                      err_msg=f"frozen {jax.tree_util.keystr(path)} changed")
    assert int(new_state.step) == 1
    for name in ("loss_simple", "loss_vlb", "grad_norm", "learning_rate", "scale_factor"):
        assert np.isfinite(float(metrics[name])), name
    assert float(metrics["learning_rate"]) == pytest.approx(1e-3)


def test_adm_feeds_labels_as_y_and_drops_to_the_last_class():
    config = experiment(MODES["adm"](), cond_drop_prob=0.5)
    stage = LatentDiffusionStage.from_config(config)
    state = jax.eval_shape(stage.init_state, jax.random.key(0))
    batch = make_batch("adm")
    cond = stage.conditioning(None, None, batch, (BATCH, LATENT, LATENT, 4), 1.0, jnp.asarray([True, False]),
                              jax.random.key(0))
    np.testing.assert_array_equal(np.asarray(cond["y"]), [9, 7])  # num_classes 10: class 9 is the null class
    new_state, metrics = jax.eval_shape(stage.train_step, state, batch, jax.random.key(0))
    assert set(new_state.params) == {"unet"} and metrics["loss"].shape == ()


def _get(tree, path):
    for key in path:
        tree = tree[key.key]
    return tree


# -- targets -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("parameterization", ["eps", "x0", "v"])
def test_loss_regresses_the_right_target(parameterization):
    config = experiment(_ldm(tiny_unet(), parameterization=parameterization), original_elbo_weight=0.5)
    stage = LatentDiffusionStage.from_config(config)
    state = stage.state_from_variables(random_variables(config))
    rng = np.random.default_rng(1)
    z0 = jnp.asarray(rng.standard_normal((BATCH, LATENT, LATENT, 4)), jnp.float32)
    noise = jnp.asarray(rng.standard_normal(z0.shape), jnp.float32)
    t = jnp.asarray([3, 870], jnp.int32)
    loss, metrics = jax.jit(lambda p: stage.loss(p, state.frozen, {}, z0, t, noise, 1.0, None, jax.random.key(0)))(
        state.params)

    acp = np.asarray(stage.schedule.alphas_cumprod, np.float64)[np.asarray(t)][:, None, None, None]
    x_t = np.sqrt(acp) * np.asarray(z0) + np.sqrt(1 - acp) * np.asarray(noise)
    target = {"eps": np.asarray(noise), "x0": np.asarray(z0),
              "v": np.sqrt(acp) * np.asarray(noise) - np.sqrt(1 - acp) * np.asarray(z0)}[parameterization]
    out = np.asarray(jax.jit(stage.ldm.apply_unet)({"params": state.params["unet"]}, jnp.asarray(x_t, jnp.float32), t, {}))
    per_sample = ((out - target) ** 2).mean(axis=(1, 2, 3))
    lvlb = np.asarray(stage.schedule.lvlb_weights)[np.asarray(t)]
    assert float(metrics["loss_simple"]) == pytest.approx(per_sample.mean(), rel=1e-4)
    assert float(metrics["loss_vlb"]) == pytest.approx((lvlb * per_sample).mean(), rel=1e-4)
    assert float(loss) == pytest.approx(per_sample.mean() + 0.5 * (lvlb * per_sample).mean(), rel=1e-4)


# -- scale_by_std, EMA, determinism (the unconditional model, scale_by_std on) --------------------------------

def _posterior_sample(stage, state, batch, rng):
    return jax.jit(stage.latents)(state.frozen, batch, jax.random.fold_in(rng, POSTERIOR))


def test_scale_by_std_is_set_on_the_first_step_and_kept():
    stage, state, batch, step = setup("unconditional")
    assert float(state.extras["scale_factor"]) == 1.0 and bool(state.extras["scale_pending"])
    rng = jax.random.key(3)
    z = np.asarray(_posterior_sample(stage, state, batch, rng), np.float64)
    state1, metrics = step(state, batch, rng)
    expected = 1.0 / z.std(ddof=1)
    assert float(state1.extras["scale_factor"]) == pytest.approx(expected, rel=1e-5)
    assert float(metrics["scale_factor"]) == pytest.approx(expected, rel=1e-5)
    assert not bool(state1.extras["scale_pending"])
    other = make_batch("unconditional", seed=5)
    state2, metrics = step(state1, other, jax.random.key(4))
    assert float(state2.extras["scale_factor"]) == float(state1.extras["scale_factor"])
    assert float(metrics["scale_factor"]) == float(state1.extras["scale_factor"])


def test_ema_follows_lit_ema_with_the_warmup_decay():
    stage, state, batch, step = setup("unconditional")
    state1, _ = step(state, batch, jax.random.key(0))
    state2, _ = step(state1, batch, jax.random.key(1))
    assert int(state2.extras["ema_num_updates"]) == 2
    d1, d2 = float(ema_decay(0.9, 1)), float(ema_decay(0.9, 2))
    assert d1 == pytest.approx(2 / 11) and d2 == pytest.approx(3 / 12)
    for path, p0 in _leaves(state.params):
        p1, p2 = (np.asarray(_get(s.params, path), np.float64) for s in (state1, state2))
        ema1 = np.asarray(p0, np.float64) - (1 - d1) * (np.asarray(p0, np.float64) - p1)
        ema2 = ema1 - (1 - d2) * (ema1 - p2)
        np.testing.assert_allclose(np.asarray(_get(state2.ema_params, path)), ema2, rtol=1e-5, atol=1e-6)


def test_steps_are_deterministic_for_a_given_rng():
    stage, state, batch, step = setup("unconditional")
    a, metrics_a = step(state, batch, jax.random.key(7))
    b, metrics_b = step(state, batch, jax.random.key(7))
    c, metrics_c = step(state, batch, jax.random.key(8))
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert float(metrics_a["loss"]) == float(metrics_b["loss"])
    assert float(metrics_a["loss"]) != float(metrics_c["loss"])


# -- conditioning dropout ------------------------------------------------------------------------------

@pytest.mark.parametrize("mode, unconditional", [
    ("class", lambda batch: {**batch, "label": np.full(BATCH, 10, np.int32)}),  # the null class n_classes - 1
    ("super_resolution", lambda batch: {**batch, "low_res": np.zeros_like(batch["low_res"])}),
])
def test_dropping_with_probability_one_trains_on_the_unconditional_input(mode, unconditional):
    stage, state, batch, _ = setup(mode)
    always = LatentDiffusionStage.from_config(experiment(MODES[mode](), cond_drop_prob=1.0))
    rng = jax.random.key(5)
    z0 = 0.5 * _posterior_sample(stage, state, batch, rng)
    t, noise, drop = always.draw(rng, z0)
    assert drop is not None and bool(jnp.all(drop))

    loss = compiled(lambda p, b, d: always.loss(p, state.frozen, b, z0, t, noise, 1.0, d, rng)[0],
                    state.params, batch, drop)
    dropped = float(loss(state.params, batch, drop))
    on_unconditional = float(loss(state.params, unconditional(batch), jnp.zeros_like(drop)))
    conditional = float(loss(state.params, batch, jnp.zeros_like(drop)))
    assert dropped == pytest.approx(on_unconditional, rel=1e-6)
    assert dropped != pytest.approx(conditional, rel=1e-6)


def test_cached_text_embeddings_drop_to_the_empty_prompt():
    stage, state, batch, _ = setup("clip_text")
    encode = jax.jit(lambda tokens: stage.cond_stage.apply(state.frozen["cond_stage"], tokens))
    cached = {"image": batch["image"], "context": np.asarray(encode(batch["caption_tokens"]))}
    null = np.broadcast_to(unconditional_tokens("clip_text", {"vocab_size": 100}, 8), (BATCH, 8))

    def context(batch, drop):
        return stage.conditioning(state.params, state.frozen, batch, (BATCH, LATENT, LATENT, 4), 1.0, drop,
                                  jax.random.key(0))["context"]

    kept = context(cached, jnp.asarray([False, True]))
    np.testing.assert_array_equal(np.asarray(kept[0]), cached["context"][0])  # the cache is used as is
    np.testing.assert_allclose(np.asarray(kept[1]), np.asarray(encode(null))[1], rtol=1e-5, atol=1e-6)


def test_unconditional_tokens():
    clip = unconditional_tokens("clip_text", {"bos_token_id": 49406, "eos_token_id": 49407}, 6)
    np.testing.assert_array_equal(clip, [49406, 49407, 49407, 49407, 49407, 49407])
    np.testing.assert_array_equal(unconditional_tokens("open_clip_text", {}, 4), [49406, 49407, 0, 0])
    np.testing.assert_array_equal(unconditional_tokens("bert_embedder", {}, 4), [101, 102, 0, 0])
    layout = unconditional_tokens("bert_embedder", {"use_tokenizer": False, "vocab_size": 8192}, 92)
    assert list(layout[:90]) == [8191] * 90 and list(layout[90:]) == [0, 8099]
    with pytest.raises(ValueError, match="train.uncond_tokens"):
        unconditional_tokens("bert_embedder", {"vocab_size": 50}, 4)


# -- cached latents ------------------------------------------------------------------------------------

def test_cached_latents_give_the_same_loss_as_encoding_on_the_fly():
    stage, state, batch, _ = setup("unconditional")
    posterior = jax.jit(stage.ldm.first_stage.posterior)(
        state.frozen["first_stage"], batch["image"])
    cached = {"mean": np.asarray(posterior.mean), "std": np.asarray(posterior.std)}  # as latent_cache writes them
    rng = jax.random.key(11)
    t = jnp.asarray([10, 500], jnp.int32)
    noise = jax.random.normal(jax.random.key(12), (BATCH, LATENT, LATENT, 4))

    def loss(batch):
        z0 = 0.7 * stage.latents(state.frozen, batch, jax.random.fold_in(rng, POSTERIOR))
        return stage.loss(state.params, state.frozen, batch, z0, t, noise, 0.7, None, rng)[0]

    on_the_fly = float(jax.jit(loss)(batch))
    from_cache = float(jax.jit(loss)(cached))
    assert from_cache == pytest.approx(on_the_fly, rel=1e-5)


# -- state, images, configuration --------------------------------------------------------------------------

def test_init_state_has_the_structure_of_loaded_variables():
    stage, state, batch, _ = setup("class")
    boxed = jax.eval_shape(stage.init_state, jax.random.key(0), batch)
    specs = nn.get_partition_spec(boxed)  # the logical axes the loop derives shardings from
    assert specs.params["unet"]["out:2"]["kernel"] == PartitionSpec(None, None, "embed", "mlp")
    assert specs.ema_params["unet"]["out:2"]["kernel"] == PartitionSpec(None, None, "embed", "mlp")
    abstract = nn.meta.unbox(boxed)
    assert jax.tree.structure(abstract) == jax.tree.structure(state)
    for a, b in zip(jax.tree.leaves(abstract), jax.tree.leaves(state)):
        assert a.shape == b.shape and a.dtype == b.dtype
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(abstract.params))


def test_log_images_with_guidance():
    config = experiment(MODES["class"](), log_guidance_scale=2.0, log_num_images=1)
    stage = LatentDiffusionStage.from_config(config)
    state = stage.state_from_variables(random_variables(config))
    images = stage.log_images(state, {**make_batch("class"), "caption": np.array(["a", "b"])}, jax.random.key(0))
    assert set(images) == {"inputs", "reconstructions", "samples"}
    for name, image in images.items():
        assert image.shape == (1, IMAGE, IMAGE, 3), name
        assert np.all(np.abs(np.asarray(image)) <= 1.0) and np.all(np.isfinite(np.asarray(image)))


def test_bfloat16_compute_keeps_float32_master_weights_and_remat():
    config = experiment(MODES["class"]())
    config.precision.compute_dtype = "bfloat16"
    config.precision.remat = True
    stage = LatentDiffusionStage.from_config(config)
    assert stage.unet.dtype == jnp.bfloat16 and stage.unet.remat and stage.ldm.first_stage.module.dtype == jnp.bfloat16
    state = jax.eval_shape(stage.init_state, jax.random.key(0))
    new_state, metrics = jax.eval_shape(stage.train_step, state, make_batch("class"), jax.random.key(0))
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(new_state.params))
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(new_state.ema_params))
    assert metrics["loss"].shape == () and metrics["loss"].dtype == jnp.float32


def test_learning_rate_scales_with_the_batch_and_errors_name_the_problem():
    config = experiment(MODES["class"]())
    config.optimizer.learning_rate = None
    config.optimizer.base_learning_rate = 1e-6
    config.optimizer.accumulate_grad_batches = 2
    with pytest.raises(ValueError, match="train.global_batch_size"):
        LatentDiffusionStage.from_config(config)
    config.data = ml_collections.ConfigDict({"batch_size": 8})
    assert LatentDiffusionStage.from_config(config).learning_rate == pytest.approx(1.6e-5)

    stage, state, batch, _ = setup("class")
    with pytest.raises(KeyError, match="'label'"):
        jax.eval_shape(stage.train_step, state, {"image": batch["image"]}, jax.random.key(0))
    with pytest.raises(ValueError, match="scale_by_std"):
        LatentDiffusionStage.from_config(experiment(_ldm(tiny_unet(), scale_by_std=True, scale_factor=0.5)))
    with pytest.raises(ValueError, match="hybrid"):
        LatentDiffusionStage.from_config(experiment(_ldm(tiny_unet(in_channels=7, context_dim=CONTEXT), tiny_clip(),
                                                         conditioning_key="hybrid")))
    with pytest.raises(ValueError, match="train.cond_drop_prob"):
        LatentDiffusionStage.from_config(experiment(MODES["class"](), cond_drop_prob=1.5))


def test_pretrained_checkpoints_replace_the_random_weights(tmp_path):
    stage, state, _, _ = setup("clip_text")
    config = experiment(MODES["clip_text"]())
    trained = random_variables(config, seed=40)
    compvis.save_checkpoint(tmp_path / "model.safetensors", config, trained)
    config.pretrained.first_stage = str(tmp_path / "model.safetensors")
    variables, scale_factor = LatentDiffusionStage.from_config(config).load_pretrained()
    assert set(variables) == {"first_stage"} and scale_factor is None
    loaded = stage.with_variables(state, variables)
    for a, b in zip(jax.tree.leaves(loaded.frozen["first_stage"]), jax.tree.leaves(trained["first_stage"])):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    for a, b in zip(jax.tree.leaves(loaded.params), jax.tree.leaves(state.params)):  # the UNet is untouched
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

    config.pretrained.model = str(tmp_path / "model.safetensors")
    variables, scale_factor = LatentDiffusionStage.from_config(config).load_pretrained()
    assert set(variables) == {"first_stage", "unet", "cond_stage"} and scale_factor == pytest.approx(0.18215)
    loaded = stage.with_variables(state, variables, scale_factor)
    for a, b in zip(jax.tree.leaves(loaded.params["unet"]), jax.tree.leaves(trained["unet"]["params"])):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert not bool(loaded.extras["scale_pending"])

    # On a state with init_state's logical-axis boxes, loaded weights take the same boxes.
    boxed = ldm_stage._boxed_like(jax.eval_shape(stage.init_state, jax.random.key(0)), state)
    loaded = stage.with_variables(boxed, variables)
    assert isinstance(loaded.frozen["first_stage"]["params"]["quant_conv"]["kernel"], nn.LogicallyPartitioned)
    assert isinstance(loaded.params["unet"]["out:2"]["kernel"], nn.LogicallyPartitioned)
    np.testing.assert_array_equal(np.asarray(loaded.params["unet"]["out:2"]["kernel"].unbox()),
                                  np.asarray(trained["unet"]["params"]["out:2"]["kernel"]))


def test_pretrained_checkpoints_may_be_hub_references(tmp_path, monkeypatch):
    """pretrained.* = hf://org/repo/file resolves through the Hub cache (offline here, pre-filled)."""
    hf_constants = pytest.importorskip("huggingface_hub.constants")
    from tests.test_hub import _prefill

    config = experiment(MODES["clip_text"]())
    trained = random_variables(config, seed=41)
    compvis.save_checkpoint(tmp_path / "model.safetensors", config, trained)
    _prefill(tmp_path / "hub", "me/tiny-ldm", {"model.safetensors": tmp_path / "model.safetensors"})
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    config.pretrained.first_stage = "hf://me/tiny-ldm/model.safetensors"
    variables, _ = LatentDiffusionStage.from_config(config).load_pretrained()
    for a, b in zip(jax.tree.leaves(variables["first_stage"]), jax.tree.leaves(trained["first_stage"])):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
