"""The LDM UNet against the reference fixtures, plus other sizes and the JAX-only options."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import yaml

from ldm_jax.convert.state_dict import load_params
from ldm_jax.models.abstract import abstract_module_params
from ldm_jax.models.unet import (UNetModel, attention_heads, example_inputs, timestep_embedding,
                                 unet_from_reference)
from tests.conftest import assert_matches_reference, nchw_to_nhwc
from tests.conftest import case_weights, random_params

FIXTURE_CASES = ("unet_crossattn", "unet_class", "unet_sd2")


def _load_case(folder, case):
    params = yaml.safe_load((folder / f"{case}.yaml").read_text())["model"]["params"]
    unet = unet_from_reference(params)
    state_dict = case_weights(folder, case)
    weights = load_params(abstract_module_params(unet, *example_inputs(unet)), state_dict)
    return unet, weights, dict(np.load(folder / f"{case}.npz"))


def _last_layer_name(intermediates, prefix):
    """The last layer of a reference TimestepEmbedSequential `prefix` (its output is the block's)."""
    names = [n for n in intermediates if n.startswith(prefix + ":") and n.count(":") == prefix.count(":") + 1]
    return max(names, key=lambda n: int(n.rsplit(":", 1)[1]))


@functools.lru_cache(maxsize=None)
def _jitted_apply(unet: UNetModel, capture: bool = False):
    return jax.jit(lambda params, *args: unet.apply({"params": params}, *args, capture_intermediates=capture))


@pytest.mark.parametrize("case", FIXTURE_CASES)
def test_matches_reference(compvis_fixtures, case):
    unet, weights, data = _load_case(compvis_fixtures, case)
    out, state = _jitted_apply(unet, True)(weights, nchw_to_nhwc(data["x"]), data["timesteps"],
                                           data.get("context"), data.get("y"))
    intermediates = state["intermediates"]
    assert_matches_reference(intermediates["time_embed:2"]["__call__"][0], data["dbg_time_embed_out"],
                             "dbg_time_embed_out")
    for key in sorted(k for k in data if k.startswith(("dbg_input_blocks_", "dbg_output_blocks_"))):
        kind, index = key[len("dbg_"):].rsplit("_", 1)
        layer = _last_layer_name(intermediates, f"{kind}:{index}")
        assert_matches_reference(intermediates[layer]["__call__"][0], nchw_to_nhwc(data[key]), key)
    assert_matches_reference(intermediates["middle_block:2"]["__call__"][0],
                             nchw_to_nhwc(data["dbg_middle_block"]), "dbg_middle_block")
    assert_matches_reference(out, nchw_to_nhwc(data["out"]), "out")


def test_timestep_embedding_is_cos_then_sin():
    t = jnp.array([0, 7, 999])
    emb = np.asarray(timestep_embedding(t, 9))
    freqs = np.exp(-np.log(10000.0) * np.arange(4) / 4)
    args = np.array([0, 7, 999])[:, None] * freqs
    expected = np.concatenate([np.cos(args), np.sin(args), np.zeros((3, 1))], axis=-1)
    assert emb.dtype == np.float32 and emb.shape == (3, 9)
    np.testing.assert_allclose(emb, expected, atol=2e-4)


def _tiny(**overrides) -> UNetModel:
    config = dict(image_size=8, in_channels=4, out_channels=4, model_channels=32, num_res_blocks=1,
                  attention_resolutions=(2,), channel_mult=(1, 2), num_heads=2, use_spatial_transformer=True,
                  context_dim=16, legacy=False)
    return UNetModel(**{**config, **overrides})


def _random_params(unet, seed=0):
    return random_params(abstract_module_params(unet, *example_inputs(unet)), seed)


def _random_inputs(unet, size=8, batch=2, seed=1):
    keys = jax.random.split(jax.random.key(seed), 3)
    x = jax.random.normal(keys[0], (batch, size, size, unet.in_channels))
    t = jnp.array([3, 871][:batch])
    context = None
    if unet.context_dim is not None:
        context = jax.random.normal(keys[1], (batch, 5, unet.context_dim))
    y = None if unet.num_classes is None else jnp.arange(batch) % unet.num_classes
    return x, t, context, y


def _count(unet) -> int:
    return sum(int(np.prod(p.shape)) for p in jax.tree.leaves(abstract_module_params(unet, *example_inputs(unet))))


def test_other_sizes_build_and_run():
    """3 levels, 2 res blocks, num_head_channels, learned sigma and concat conditioning in one model."""
    unet = _tiny(in_channels=9, out_channels=8, num_res_blocks=2, channel_mult=(1, 2, 2),
                 attention_resolutions=(2, 4), num_heads=-1, num_head_channels=16, transformer_depth=2)
    params = _random_params(unet)
    assert "input_blocks:8:1" in params and "output_blocks:8:0" in params and "input_blocks:9:0" not in params
    block = params["input_blocks:4:1"]
    assert set(block) == {"norm", "proj_in", "transformer_blocks:0", "transformer_blocks:1", "proj_out"}
    assert block["proj_in"]["kernel"].shape == (1, 1, 64, 64)  # 4 heads of 16 channels at mult 2
    assert params["output_blocks:2:2"]["conv"]["kernel"].shape == (3, 3, 64, 64)  # the upsample conv
    x, t, context, _ = _random_inputs(unet, size=16)
    apply = _jitted_apply(unet)
    out = apply(params, x, t, context)
    assert out.shape == (2, 16, 16, 8) and bool(jnp.all(jnp.isfinite(out)))
    # The context and the timestep both reach the output.
    assert float(jnp.abs(out - apply(params, x, t, context + 1.0)).max()) > 1e-3
    assert float(jnp.abs(out - apply(params, x, t[::-1], context)).max()) > 1e-3


@pytest.mark.parametrize("args, expected", [
    ((64, 8, -1, False, True), (8, 8)),      # SD v1: dim_head = ch // num_heads
    ((64, -1, 16, False, True), (4, 16)),    # SD 2: num_heads = ch // num_head_channels
    ((64, 8, 16, False, True), (4, 16)),     # num_head_channels wins over num_heads
    ((64, 4, -1, True, True), (4, 16)),      # legacy transformer
    ((64, 4, -1, True, False), (4, -1)),     # legacy AttentionBlock keeps num_heads
    ((64, -1, 32, True, False), (2, 32)),
])
def test_attention_heads_follow_reference_rules(args, expected):
    assert attention_heads(*args) == expected


def test_plain_attention_orders_differ_with_the_same_weights():
    legacy = _tiny(use_spatial_transformer=False, context_dim=None, num_heads=2, num_classes=3,
                   use_scale_shift_norm=True, resblock_updown=True)
    new_order = legacy.clone(use_new_attention_order=True)
    params = _random_params(legacy)
    x, t, _, y = _random_inputs(legacy)
    a = _jitted_apply(legacy)(params, x, t, None, y)
    b = _jitted_apply(new_order)(params, x, t, None, y)
    assert a.shape == b.shape == (2, 8, 8, 4)
    assert float(jnp.abs(a - b).max()) > 1e-3


def test_remat_and_query_chunks_give_the_same_output():
    unet = _tiny(channel_mult=(1, 1), attention_resolutions=(1, 2))
    params = _random_params(unet)
    x, t, context, _ = _random_inputs(unet)
    reference = np.asarray(_jitted_apply(unet)(params, x, t, context))
    # 24 does not divide 64 positions: the largest divisor below it (16) is used.
    for variant in (unet.clone(remat=True), unet.clone(query_chunk_size=24)):
        np.testing.assert_allclose(_jitted_apply(variant)(params, x, t, context), reference, atol=1e-5)


def test_remat_keeps_the_gradients_and_nothing_inside_a_block_for_the_backward_pass():
    from jax._src.ad_checkpoint import saved_residuals  # what `jax.ad_checkpoint.print_saved_residuals` lists

    unet = _tiny(channel_mult=(1, 1), attention_resolutions=(1, 2))
    params = _random_params(unet)
    x, t, context, _ = _random_inputs(unet)

    def loss(module):
        return lambda params: jnp.sum(module.apply({"params": params}, x, t, context) ** 2)

    grads = jax.jit(jax.grad(loss(unet)))(params)
    remat_grads = jax.jit(jax.grad(loss(unet.clone(remat=True))))(params)
    for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(remat_grads)):
        np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-4)
    # The spatial transformers are rematerialised whole, norm and projections too: all the backward pass
    # keeps of one is its output (the next block's input), no float32 GroupNorm intermediates.
    kept = [where for _, where in saved_residuals(loss(unet.clone(remat=True)), params)]
    transformer_lines = {where.split(" from ")[-1] for where in kept if "spatial_transformer.py" in where}
    assert len(transformer_lines) == 1, transformer_lines


def test_label_variants_and_codebook_head():
    continuous = _tiny(use_spatial_transformer=False, context_dim=None, num_classes="continuous",
                       channel_mult=(1,), attention_resolutions=(), use_scale_shift_norm=True)
    # (Without scale-shift, GroupNorm(32) of 32 channels would erase the embedding, as in the reference.)
    sequential = continuous.clone(num_classes="sequential", adm_in_channels=6)
    codebook = continuous.clone(num_classes=None, n_embed=17)
    assert _random_params(continuous)["label_emb"]["kernel"].shape == (1, 128)
    assert set(_random_params(sequential)["label_emb:0:2"]) == {"kernel", "bias"}
    x, t, _, _ = _random_inputs(codebook)
    y = jnp.array([0.5, 2.0])
    params = _random_params(continuous)
    out = _jitted_apply(continuous)(params, x, t, None, y)
    assert float(jnp.abs(out - _jitted_apply(continuous)(params, x, t, None, y + 1)).max()) > 1e-3
    assert _jitted_apply(codebook)(_random_params(codebook), x, t).shape == (2, 8, 8, 17)


def test_bfloat16_under_jit():
    unet = _tiny(dtype=jnp.bfloat16, param_dtype=jnp.float32)
    params = _random_params(unet)
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(params))
    x, t, context, _ = _random_inputs(unet)
    out = _jitted_apply(unet)(params, x, t, context)
    assert out.shape == (2, 8, 8, 4) and out.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(out)))


SD_V1 = dict(image_size=64, in_channels=4, out_channels=4, model_channels=320,
             attention_resolutions=[4, 2, 1],
             num_res_blocks=2, channel_mult=[1, 2, 4, 4], num_heads=8, use_spatial_transformer=True,
             transformer_depth=1, context_dim=768, use_checkpoint=True, legacy=False)


def test_released_stable_diffusion_parameter_counts():
    assert _count(unet_from_reference(SD_V1)) == 859_520_964
    sd2 = {**SD_V1, "num_heads": -1, "num_head_channels": 64, "context_dim": 1024,
           "use_linear_in_transformer": True, "use_fp16": True}
    assert _count(unet_from_reference(sd2)) == 865_910_724


def test_from_reference_rejects_bad_params():
    with pytest.raises(ValueError, match="unknown UNetModel params: not_a_param"):
        unet_from_reference({**SD_V1, "not_a_param": 1})
    with pytest.raises(ValueError, match="dims=3"):
        unet_from_reference({**SD_V1, "dims": 3})
    with pytest.raises(ValueError, match="context_dim"):
        unet_from_reference({**SD_V1, "context_dim": None})
    with pytest.raises(ValueError, match="missing UNetModel params: attention_resolutions"):
        unet_from_reference({k: v for k, v in SD_V1.items() if k != "attention_resolutions"})
    unet = unet_from_reference(SD_V1, dtype=jnp.bfloat16)
    assert unet.channel_mult == (1, 2, 4, 4) and unet.dtype == jnp.bfloat16 and unet.image_size == 64


def test_dropout_only_when_not_deterministic():
    unet = _tiny(use_spatial_transformer=False, context_dim=None, channel_mult=(2,), attention_resolutions=(),
                 dropout=0.5, remat=True)
    params = _random_params(unet)
    x, t, _, _ = _random_inputs(unet)
    evaluation = _jitted_apply(unet.clone(dropout=0.0))(params, x, t)
    np.testing.assert_allclose(_jitted_apply(unet)(params, x, t), evaluation, atol=1e-6)
    train = jax.jit(lambda p, key: unet.apply({"params": p}, x, t, deterministic=False,
                                              rngs={"dropout": key}))
    assert float(jnp.abs(train(params, jax.random.key(0)) - evaluation).max()) > 1e-3


def test_input_checks_and_scalar_timestep():
    unet = _tiny()
    params = abstract_module_params(unet, *example_inputs(unet))
    _, _, context, _ = _random_inputs(unet)
    x = jnp.zeros((2, 8, 8, 4))
    assert jax.eval_shape(unet.apply, {"params": params}, x, jnp.array(5), context).shape == x.shape
    with pytest.raises(ValueError, match=r"x has shape \(2, 7, 7, 4\)"):
        jax.eval_shape(unet.apply, {"params": params}, jnp.zeros((2, 7, 7, 4)), jnp.array(5), context)
    with pytest.raises(ValueError, match="needs a context"):
        jax.eval_shape(unet.apply, {"params": params}, x, jnp.array(5))


@pytest.mark.parametrize("use_spatial_transformer", [True, False])
def test_num_groups_lets_narrow_unets_normalise_groups_of_channels(use_spatial_transformer):
    narrow = dict(model_channels=16, attention_resolutions=(1, 2), use_spatial_transformer=use_spatial_transformer,
                  context_dim=16 if use_spatial_transformer else None)
    x, t, context, _ = _random_inputs(_tiny(**narrow))
    with pytest.raises(ValueError, match="16 channels do not split into 32 groups"):
        _tiny(**narrow).init(jax.random.key(0), x, t, context)
    reference_params = dict(image_size=8, in_channels=4, out_channels=4, model_channels=16, num_res_blocks=1,
                            attention_resolutions=[1, 2], channel_mult=[1, 2], num_heads=2, legacy=False,
                            use_spatial_transformer=use_spatial_transformer, num_groups=4)
    if use_spatial_transformer:
        reference_params["context_dim"] = 16
    unet = unet_from_reference(reference_params)  # a config key, as in the demo's YAML
    params = _random_params(unet)
    # Group norm parameters stay per channel: the checkpoint layout does not change.
    assert params["out:0"]["scale"].shape == (16,)
    out = _jitted_apply(unet)(params, x, t, context)
    assert out.shape == x.shape and bool(jnp.all(jnp.isfinite(out)))
    assert float(jnp.abs(out - _jitted_apply(_tiny(**narrow, num_groups=16))(params, x, t, context)).max()) > 1e-4


def test_pooled_context_feeds_the_prompt_to_every_resblock():
    """pooled_context adds an MLP of the mean context to the timestep embedding (own params, saved as
    context_emb.0 / context_emb.2); the rest of the UNet is the reference one."""
    unet = _tiny(pooled_context=True)
    params = _random_params(unet)
    assert params["context_emb:0"]["kernel"].shape == (16, 128) and "context_emb:2" in params
    plain_params = {k: v for k, v in params.items() if not k.startswith("context_emb")}
    assert set(plain_params) == set(_random_params(_tiny()))
    x, t, context, _ = _random_inputs(unet)
    pooled = _jitted_apply(unet)(params, x, t, context)
    assert float(jnp.abs(pooled - _jitted_apply(_tiny())(plain_params, x, t, context)).max()) > 1e-3
    with pytest.raises(ValueError, match="pooled_context needs a context"):
        _tiny(use_spatial_transformer=False, context_dim=None, pooled_context=True).init(
            jax.random.key(0), x, t)
